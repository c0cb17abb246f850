"""Worker logging: stderr and a log file, never the protocol stream.

Warnings from the engine and its libraries are also forwarded to the client
as ``log`` events, so a host can show them without reading the file.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

KEEP_LOGS = 20  # older worker logs in the default folder are pruned at start
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_log_dir() -> Path:
    if os.environ.get("NORMALCRAFTER_LOG_DIR"):
        return Path(os.environ["NORMALCRAFTER_LOG_DIR"])
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "normalcrafter" / "logs"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Logs" / "normalcrafter"
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "normalcrafter" / "logs"


def _prune(folder: Path) -> None:
    logs = sorted(folder.glob("worker-*.log"), key=lambda p: p.stat().st_mtime)
    for old in logs[:-KEEP_LOGS]:
        old.unlink(missing_ok=True)


class EventHandler(logging.Handler):
    """Forwards records to the client; the worker's own records are left out
    because what they say is already in an event."""

    def __init__(self, forward: Callable[[logging.LogRecord], None]) -> None:
        super().__init__(logging.WARNING)
        self.forward = forward

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("normalcrafter.worker"):
            return
        try:
            self.forward(record)
        except Exception:
            self.handleError(record)


def setup_logging(log_file: str | None, forward: Callable[[logging.LogRecord], None]) -> Path | None:
    """Log to stderr, to ``log_file`` (default: a new file in the per-user log
    folder) and, for warnings, to ``forward``. Returns the log file's path, or
    None when no file could be opened (then stderr only)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    formatter = logging.Formatter(FORMAT)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    root.addHandler(stream)
    root.addHandler(EventHandler(forward))
    logging.captureWarnings(True)
    if log_file:
        path = Path(log_file).expanduser()
    else:
        path = default_log_dir() / f"worker-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not log_file:
            _prune(path.parent)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        logging.getLogger("normalcrafter.worker").warning("no log file (%s): logging to stderr only", exc)
        return None
    handler.setFormatter(formatter)
    root.addHandler(handler)
    return path.resolve()
