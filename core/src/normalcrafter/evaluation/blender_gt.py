"""Ground-truth test clips rendered by Blender (Cycles, CPU).

Python API: :func:`render_clip` runs ``python -m normalcrafter.evaluation.blender_gt``
in a subprocess, so bpy's global state never touches the caller. The clip
folder it makes::

    CLIP/rgb/rgb.00000.png        8-bit sRGB frames (antialiased)
    CLIP/normal/normal.00000.exr  float32 N.X/N.Y/N.Z, camera space, OpenGL convention,
                                  zero where no surface was hit; header normalcrafter_convention
    CLIP/flow/flow.00000.npy      exact forward flow frame f -> f+1, (H, W, 2) float32, NaN where occluded
    CLIP/scene.json               the recipe's spec: objects, lights, intrinsics, camera poses

The folder is assembled under a temporary name and renamed when complete.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .. import errors
from ..errors import NormalCrafterError
from .scene_recipes import MOTIONS, RECIPES, make_spec

GENERATOR = "normalcrafter.evaluation.blender_gt"
CONVENTION = "opengl"
MAX_SIDE = 4096
MAX_FRAMES = 10000


def render_clip(out_dir: str | Path, recipe: str = "objects", *, width: int = 256, height: int = 160,
                frames: int = 12, seed: int = 0, samples: int = 8, motion: str | None = None,
                overwrite: bool = False, timeout_s: float | None = None) -> Path:
    """Render one clip into ``out_dir`` in a Blender subprocess; returns the folder."""
    out = Path(out_dir)
    _check_args(out, recipe, motion, width, height, frames, samples, overwrite)
    cmd = [sys.executable, "-m", GENERATOR, str(out), "--recipe", recipe, "--width", str(width),
           "--height", str(height), "--frames", str(frames), "--seed", str(seed), "--samples", str(samples)]
    if motion:
        cmd += ["--motion", motion]
    if overwrite:
        cmd.append("--overwrite")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise NormalCrafterError(errors.INTERNAL, f"Blender did not finish {out} within {timeout_s} s") from None
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        raise NormalCrafterError(errors.INTERNAL, f"Blender failed to render {out}: {lines[-1]}")
    return out


def _check_args(out: Path, recipe: str, motion: str | None, width: int, height: int, frames: int,
                samples: int, overwrite: bool) -> None:
    if recipe not in RECIPES:
        raise NormalCrafterError(errors.BAD_REQUEST, f"unknown recipe {recipe!r}: choose {', '.join(RECIPES)}")
    if motion is not None and motion not in MOTIONS:
        raise NormalCrafterError(errors.BAD_REQUEST, f"unknown motion {motion!r}: choose {', '.join(MOTIONS)}")
    if not (8 <= width <= MAX_SIDE and 8 <= height <= MAX_SIDE):
        raise NormalCrafterError(errors.BAD_REQUEST, f"size {width}x{height}: each side must be 8..{MAX_SIDE}")
    if not 1 <= frames <= MAX_FRAMES:
        raise NormalCrafterError(errors.BAD_REQUEST, f"frames {frames}: must be 1..{MAX_FRAMES}")
    if not 1 <= samples <= 4096:
        raise NormalCrafterError(errors.BAD_REQUEST, f"samples {samples}: must be 1..4096")
    if out.exists() and not overwrite:
        raise NormalCrafterError(errors.OUTPUT_CONFLICT, f"{out} exists; pass overwrite to replace it")


def generate(out: Path, recipe: str, width: int, height: int, frames: int, seed: int, samples: int,
             motion: str | None, overwrite: bool) -> Path:
    """Render in this process (imports bpy): the subprocess's body."""
    from . import blender_scene
    from .camera import reprojection_flow

    _check_args(out, recipe, motion, width, height, frames, samples, overwrite)
    spec = make_spec(recipe, seed, width, height, frames, motion)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    for sub in ("rgb", "normal", "flow", "work"):
        (stage / sub).mkdir(parents=True)
    try:
        camera = blender_scene.build(spec)
        rgb_paths = [stage / "rgb" / f"rgb.{f:05d}.png" for f in range(frames)]
        k = spec["intrinsics"]
        prev = None
        t0 = time.perf_counter()
        for f, data in enumerate(blender_scene.render_frames(spec, camera, samples, stage / "work", rgb_paths)):
            _write_exr(stage / "normal" / f"normal.{f:05d}.exr", data.normal_cam, f)
            if prev is not None:
                flow = reprojection_flow(prev.position, prev.valid, data.position, data.valid,
                                         np.asarray(spec["camera_to_world"][f]), k)
                np.save(stage / "flow" / f"flow.{f - 1:05d}.npy", flow)
            prev = data
            print(f"frame {f + 1}/{frames} ({time.perf_counter() - t0:.1f} s)", flush=True)
        shutil.rmtree(stage / "work")
        import bpy

        spec.update({"generator": GENERATOR, "blender": bpy.app.version_string, "samples": samples,
                     "convention": CONVENTION})
        (stage / "scene.json").write_text(json.dumps(spec, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def _write_exr(path: Path, normals: np.ndarray, frame: int) -> None:
    import OpenEXR

    channels = {f"N.{a}": np.ascontiguousarray(normals[:, :, i], dtype=np.float32) for i, a in enumerate("XYZ")}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
              "normalcrafter_convention": CONVENTION, "normalcrafter_frame": str(frame),
              "normalcrafter_source": GENERATOR}
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {GENERATOR}",
                                description="Render a test clip with exact camera-space normals using Blender.")
    p.add_argument("out", type=Path, help="output folder of the clip")
    p.add_argument("--recipe", choices=RECIPES, default="objects")
    p.add_argument("--motion", choices=MOTIONS, default=None, help="camera motion (default: the recipe's own)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=160)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=8, help="Cycles samples of the RGB frames")
    p.add_argument("--overwrite", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        generate(args.out, args.recipe, args.width, args.height, args.frames, args.seed, args.samples,
                 args.motion, args.overwrite)
    except NormalCrafterError as exc:
        print(f"blender_gt: error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
