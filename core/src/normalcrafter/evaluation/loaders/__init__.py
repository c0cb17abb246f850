"""Benchmark loaders: each turns a dataset folder, laid out as its users
download it, into ground-truth :class:`~normalcrafter.evaluation.clips.Clip` objects.

See docs/evaluation.md for the layouts each loader accepts.
"""
from __future__ import annotations

from pathlib import Path

from ... import errors
from ...errors import NormalCrafterError
from ..clips import Clip

BENCHMARKS = ("sintel", "scannet", "nyuv2", "ibims", "blender")


def open_benchmark(name: str, root: str | Path, *, sintel_pass: str = "final", scannet_step: int = 1,
                   max_frames: int | None = None) -> list[Clip]:
    """Ground-truth clips of benchmark ``name`` stored at ``root``, whose
    layout (the DSINE package or the dataset's own) is detected.

    ``sintel_pass``: "final" or "clean" (MPI-Sintel layout); ``scannet_step``
    and ``max_frames``: every n-th frame, at most this many (ScanNet sequences).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{root}: no such folder")
    if name == "blender":
        from .blender import open_blender_clips

        return open_blender_clips(root)
    if name == "sintel":
        from .sintel import is_mpi_sintel, open_mpi_sintel

        if is_mpi_sintel(root):
            return open_mpi_sintel(root, pass_name=sintel_pass)
    if name == "scannet":
        from .scannet import is_sens_export, open_sens_export

        if is_sens_export(root):
            return open_sens_export(root, step=scannet_step, max_frames=max_frames)
    if name in ("sintel", "scannet", "nyuv2", "ibims"):
        from .dsine import open_dsine

        return open_dsine(name, root)
    raise NormalCrafterError(errors.BAD_REQUEST, f"unknown benchmark {name!r}: choose {', '.join(BENCHMARKS)}")
