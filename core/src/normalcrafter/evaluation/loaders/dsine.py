"""The DSINE evaluation package (``dsine_eval.zip``, linked from
github.com/baegwangbin/DSINE), which the NormalCrafter paper's protocol uses::

    dsine_eval/sintel/<scene>/frame_0001_img.png  frame_0001_normal.exr  frame_0001_intrins.npy
    dsine_eval/scannet/<scene>/000450_img.png     000450_normal.png      000450_intrins.npy
    dsine_eval/nyuv2/test/000001_img.png          000001_normal.png      000001_intrins.npy
    dsine_eval/ibims/ibims/corridor_01_img.png    corridor_01_normal.exr corridor_01_intrins.npy

Normals: 8-bit PNG ``(n + 1) / 2`` with black = invalid (NYUv2 from GeoNet,
ScanNet from FrameNet), or float EXR R/G/B with length < 0.5 = invalid
(Sintel and iBims-1, fitted from depth by DSINE). DSINE's axes are
(X, Y, Z) = (left, up, back) from the camera ("LUB"): its depth-to-normal code
computes in OpenCV axes and then negates the vector, and its OASIS loader
flips X to get there. A wall facing the camera is (0, 0, 1) as in OpenGL,
but X points the other way.

Each scene folder is one clip. Sintel scenes are real sequences; ScanNet,
NYUv2 and iBims-1 folders hold unrelated single images, so they get no
flicker. Frame numbers are the last number of the sample name (iBims-1 names
repeat numbers, so its samples are numbered by sorted name instead).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import convention as conv
from ... import errors
from ...errors import NormalCrafterError
from ..clips import EVAL_CONVENTION, Clip, frame_number
from ..normal_files import read_normal_file
from .common import read_rgb

DSINE_CONVENTION = "LUB"
SPLIT_FOLDERS = {"nyuv2": ("test",), "ibims": ("ibims",)}


def open_dsine(name: str, root: Path) -> list[Clip]:
    base = root / name if (root / name).is_dir() and not _samples(root) else root
    folders = [base] if _samples(base) else sorted(p for p in base.iterdir() if p.is_dir() and _samples(p))
    if name in SPLIT_FOLDERS:
        folders = [f for f in folders if f.name in SPLIT_FOLDERS[name]] or folders
    if not folders:
        raise NormalCrafterError(errors.INPUT_INVALID,
                                 f"{root}: no DSINE-layout {name} samples (<scene>/<id>_img.png with "
                                 "<id>_normal.png or .exr) found")
    return [_clip(name, folder) for folder in folders]


def _samples(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*_img.*") if p.is_file())


def _clip(name: str, folder: Path) -> Clip:
    images = _samples(folder)
    ids = [p.name[: p.name.rindex("_img.")] for p in images]
    normals = []
    for img, sid in zip(images, ids):
        found = [folder / f"{sid}_normal{ext}" for ext in (".png", ".exr")]
        found = [p for p in found if p.is_file()]
        if not found:
            raise NormalCrafterError(errors.INPUT_INVALID, f"{img}: no {sid}_normal.png or .exr next to it")
        normals.append(found[0])
    numbers = [frame_number(Path(sid)) for sid in ids]
    if name == "ibims" or None in numbers or len(set(numbers)) != len(numbers):
        numbers = list(range(len(ids)))
    order = np.argsort(numbers, kind="stable")
    images = [images[i] for i in order]
    normals = [normals[i] for i in order]
    numbers = [int(numbers[i]) for i in order]

    def read_normal(i: int) -> np.ndarray:
        n, _ = read_normal_file(normals[i])
        return conv.convert(n, DSINE_CONVENTION, EVAL_CONVENTION)

    return Clip(name=folder.name, frames=numbers, read_normal=read_normal, read_rgb=lambda i: read_rgb(images[i]),
                conventions={DSINE_CONVENTION}, source=str(folder), is_sequence=(name == "sintel"))
