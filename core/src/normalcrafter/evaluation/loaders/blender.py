"""Clips made by :mod:`normalcrafter.evaluation.blender_gt`: a folder with
``scene.json``, ``rgb/``, ``normal/`` and ``flow/``, or a folder of such folders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ... import errors
from ...errors import NormalCrafterError
from ..blender_gt import GENERATOR
from ..clips import Clip, numbered
from ..normal_files import open_normal_clips
from .common import read_rgb, read_with


def is_blender_clip(folder: Path) -> bool:
    spec = folder / "scene.json"
    if not spec.is_file():
        return False
    try:
        return json.loads(spec.read_text()).get("generator") == GENERATOR
    except (OSError, ValueError):
        return False


def open_blender_clips(root: Path) -> list[Clip]:
    if is_blender_clip(root):
        folders = [root]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and is_blender_clip(p))
    if not folders:
        raise NormalCrafterError(errors.INPUT_INVALID, f"{root}: not a Blender ground-truth clip (no scene.json "
                                 "written by normalcrafter.evaluation.blender_gt) nor a folder of them")
    return [_clip(f) for f in folders]


def _clip(folder: Path) -> Clip:
    clips, _ = open_normal_clips(folder / "normal")  # our EXRs state their convention
    clip = clips[0]
    clip.name = folder.name
    clip.source = str(folder)
    rgb, rgb_frames = numbered(sorted((folder / "rgb").glob("rgb.*.png")))
    flows = {int(p.name.split(".")[1]): p for p in (folder / "flow").glob("flow.*.npy")}
    if rgb_frames != clip.frames:
        raise NormalCrafterError(errors.INPUT_INVALID, f"{folder}: rgb/ and normal/ hold different frames")
    clip.read_rgb = lambda i: read_rgb(rgb[i])

    def read_flow(i: int) -> np.ndarray:
        path = flows.get(clip.frames[i])
        if path is None:
            raise NormalCrafterError(errors.INPUT_INVALID, f"{folder}: flow of frame {clip.frames[i]} is missing")
        return read_with(path, np.load, "flow").astype(np.float32)

    clip.read_flow = read_flow
    return clip
