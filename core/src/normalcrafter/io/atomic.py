"""Write-then-rename, so no reader ever sees a half-written file under its final name."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def temp_name(final: Path) -> Path:
    # Hidden, and no image extension at the end: sequence loaders never pick it up.
    return final.with_name(f".{final.name}.{os.getpid()}.part")


def commit(tmp: Path, final: Path) -> None:
    """Flush ``tmp`` to disk, then rename it onto ``final`` in one step."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def atomic_write(final: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` then move ``tmp`` onto ``final``; on any failure the
    temporary file is removed and ``final`` is untouched."""
    tmp = temp_name(final)
    try:
        write(tmp)
        commit(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def atomic_write_bytes(final: Path, data: bytes) -> Path:
    return atomic_write(final, lambda tmp: tmp.write_bytes(data))


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files left by a killed run (their writer is gone)."""
    n = 0
    for p in folder.glob(".*.part"):
        p.unlink(missing_ok=True)
        n += 1
    return n
