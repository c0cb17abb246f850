"""Small readers shared by the loaders."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from ... import errors
from ...errors import NormalCrafterError

T = TypeVar("T")


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB; resized (area filter) to ``size`` = (H, W) when given."""
    import cv2

    img = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR) if path.is_file() else None
    if img is None:
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{path}: not a readable image")
    if size is not None and img.shape[:2] != size:
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return img[:, :, ::-1].copy()


def read_with(path: Path, reader: Callable[[Path], T], what: str) -> T:
    """Call ``reader(path)``, turning low-level failures into one-line errors."""
    try:
        return reader(path)
    except (OSError, ValueError, EOFError) as exc:
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{path}: cannot read {what}: {exc}") from None
