"""MPI-Sintel as downloaded from sintel.is.tue.mpg.de: ``MPI-Sintel-complete``
with ``MPI-Sintel-depth-training`` unpacked into the same folder::

    ROOT/training/final/<scene>/frame_0001.png     (or clean/)
    ROOT/training/depth/<scene>/frame_0001.dpt
    ROOT/training/camdata_left/<scene>/frame_0001.cam
    ROOT/training/flow/<scene>/frame_0001.flo       forward flow 0001 -> 0002 (optional)
    ROOT/training/occlusions/<scene>/frame_0001.png white = occluded in the next frame (optional)

Sintel ships no normals: they are computed from depth and intrinsics
(:func:`normals_from_depth`). The paper's Sintel numbers use DSINE's
plane-fitted normals from ``dsine_eval.zip`` instead (the ``dsine`` loader);
this loader's value is the ground-truth optical flow for the flicker metric.
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from ... import errors
from ...errors import NormalCrafterError
from ..clips import Clip, numbered
from .common import read_rgb, read_with
from .depth_normals import normals_from_depth

TAG = 202021.25  # the magic number opening .flo, .dpt and .cam files


def is_mpi_sintel(root: Path) -> bool:
    return (_training(root) / "final").is_dir() or (_training(root) / "clean").is_dir()


def _training(root: Path) -> Path:
    return root / "training" if (root / "training").is_dir() else root


def _check_tag(f: BinaryIO) -> None:
    tag = np.fromfile(f, dtype=np.float32, count=1)
    if tag.size != 1 or tag[0] != TAG:
        raise ValueError("wrong magic number (not a Sintel file)")


def read_dpt(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        _check_tag(f)
        w, h = (int(v) for v in np.fromfile(f, dtype=np.int32, count=2))
        data = np.fromfile(f, dtype=np.float32, count=w * h)
    if data.size != w * h:
        raise ValueError("file is truncated")
    return data.reshape(h, w)


def read_cam(path: Path) -> np.ndarray:
    """The 3x3 intrinsic matrix of a .cam file (the 3x4 extrinsics follow it)."""
    with open(path, "rb") as f:
        _check_tag(f)
        k = np.fromfile(f, dtype=np.float64, count=9)
    if k.size != 9:
        raise ValueError("file is truncated")
    return k.reshape(3, 3)


def read_flo(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        _check_tag(f)
        w, h = (int(v) for v in np.fromfile(f, dtype=np.int32, count=2))
        data = np.fromfile(f, dtype=np.float32, count=w * h * 2)
    if data.size != w * h * 2:
        raise ValueError("file is truncated")
    return data.reshape(h, w, 2)


def open_mpi_sintel(root: Path, pass_name: str = "final") -> list[Clip]:
    if pass_name not in ("final", "clean"):
        raise NormalCrafterError(errors.BAD_REQUEST, f"Sintel pass {pass_name!r}: choose final or clean")
    train = _training(root)
    rgb_root = train / pass_name
    if not (train / "depth").is_dir() or not (train / "camdata_left").is_dir():
        raise NormalCrafterError(errors.INPUT_INVALID,
                                 f"{train}: no depth/ and camdata_left/; unpack MPI-Sintel-depth-training "
                                 "into the same folder (Sintel has no normals; they are computed from depth)")
    scenes = sorted(p.name for p in rgb_root.iterdir() if p.is_dir())
    if not scenes:
        raise NormalCrafterError(errors.INPUT_INVALID, f"{rgb_root}: no scene folders")
    return [_scene(train, rgb_root, s) for s in scenes]


def _scene(train: Path, rgb_root: Path, scene: str) -> Clip:
    images, frames = numbered(sorted((rgb_root / scene).glob("frame_*.png")))
    stems = [p.stem for p in images]
    for sub, ext in (("depth", ".dpt"), ("camdata_left", ".cam")):
        missing = [s for s in stems if not (train / sub / scene / (s + ext)).is_file()]
        if missing:
            raise NormalCrafterError(errors.INPUT_INVALID,
                                     f"{train / sub / scene}: {missing[0]}{ext} is missing")

    def read_normal(i: int) -> np.ndarray:
        depth = read_with(train / "depth" / scene / (stems[i] + ".dpt"), read_dpt, "depth")
        k = read_with(train / "camdata_left" / scene / (stems[i] + ".cam"), read_cam, "camera")
        return normals_from_depth(depth, k)

    flows = [train / "flow" / scene / (s + ".flo") for s in stems[:-1]]
    read_flow = None
    if flows and all(p.is_file() for p in flows):
        def read_flow(i: int) -> np.ndarray:
            flow = read_with(flows[i], read_flo, "flow").copy()
            occ = train / "occlusions" / scene / (stems[i] + ".png")
            if occ.is_file():
                flow[read_rgb(occ)[..., 0] > 127] = np.nan
            return flow

    return Clip(name=scene, frames=frames, read_normal=read_normal, read_rgb=lambda i: read_rgb(images[i]),
                read_flow=read_flow, conventions={"RUB"}, source=str(rgb_root / scene))
