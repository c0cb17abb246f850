"""ScanNet scenes as exported from their ``.sens`` files by ScanNet's Python
SensReader (``reader.py --export_color_images --export_depth_images
--export_intrinsics``)::

    ROOT/<scene>/color/0.jpg ...           1296x968 colour frames
    ROOT/<scene>/depth/0.png ...           640x480 uint16 depth in millimetres, 0 = unknown
    ROOT/<scene>/intrinsic/intrinsic_depth.txt   4x4, its top-left 3x3 is K of the depth camera

(ROOT may also be one scene folder, or hold them under ``scans/``.) These are
the continuous sequences the video evaluation needs; normals are computed
from depth (:func:`normals_from_depth`), and the colour frames are resized to
the depth size (the two cameras are close but not identical, as every user of
this layout accepts). ScanNet's own 30 fps is dense: ``step`` keeps every
n-th frame and ``max_frames`` caps the count. The paper's single-image
ScanNet numbers use FrameNet's normals from ``dsine_eval.zip`` instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import errors
from ...errors import NormalCrafterError
from ..clips import Clip, numbered
from .common import read_rgb, read_with
from .depth_normals import normals_from_depth

DEPTH_SCALE = 1000.0  # millimetres per metre
MAX_DEPTH_M = 10.0


def _is_scene(folder: Path) -> bool:
    return (folder / "depth").is_dir() and (folder / "color").is_dir() and (folder / "intrinsic").is_dir()


def _scenes(root: Path) -> list[Path]:
    if _is_scene(root):
        return [root]
    base = root / "scans" if (root / "scans").is_dir() else root
    return sorted(p for p in base.iterdir() if p.is_dir() and _is_scene(p))


def is_sens_export(root: Path) -> bool:
    return bool(_scenes(root))


def open_sens_export(root: Path, step: int = 1, max_frames: int | None = None) -> list[Clip]:
    if step < 1 or (max_frames is not None and max_frames < 1):
        raise NormalCrafterError(errors.BAD_REQUEST, "ScanNet step and max_frames must be at least 1")
    return [_scene(s, step, max_frames) for s in _scenes(root)]


def _read_k(path: Path) -> np.ndarray:
    m = np.loadtxt(path)
    if m.shape not in ((4, 4), (3, 3)):
        raise ValueError(f"expected a 4x4 or 3x3 matrix, got {m.shape}")
    return m[:3, :3]


def _read_depth(path: Path) -> np.ndarray:
    import cv2

    d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if d is None or d.dtype != np.uint16 or d.ndim != 2:
        raise ValueError("expected a single-channel 16-bit PNG")
    return d.astype(np.float64) / DEPTH_SCALE


def _scene(folder: Path, step: int, max_frames: int | None) -> Clip:
    depth_files, frames = numbered(sorted((folder / "depth").glob("*.png")))
    if not depth_files:
        raise NormalCrafterError(errors.INPUT_INVALID, f"{folder / 'depth'}: no depth PNGs")
    keep = slice(0, None if max_frames is None else max_frames * step, step)
    depth_files, frames = depth_files[keep], frames[keep]
    colors = []
    for d in depth_files:
        c = folder / "color" / (d.stem + ".jpg")
        if not c.is_file():
            raise NormalCrafterError(errors.INPUT_INVALID, f"{c}: missing (every depth frame needs its colour frame)")
        colors.append(c)
    k = read_with(folder / "intrinsic" / "intrinsic_depth.txt", _read_k, "intrinsics")
    size = read_with(depth_files[0], _read_depth, "depth").shape

    def read_normal(i: int) -> np.ndarray:
        return normals_from_depth(read_with(depth_files[i], _read_depth, "depth"), k, MAX_DEPTH_M)

    return Clip(name=folder.name, frames=frames, read_normal=read_normal,
                read_rgb=lambda i: read_rgb(colors[i], size), conventions={"RUB"}, source=str(folder))
