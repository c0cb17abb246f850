"""Helpers for the Blender extension tests (fixtures in conftest.py).

bpy reads BLENDER_USER_RESOURCES once, at import, and keeps global state, so
every Blender session runs in its own subprocess (``scenarios.py``) that
reports facts as JSON; the tests assert on them here. The interpreter with
bpy is this one, or NORMALCRAFTER_BPY_PYTHON (e.g. a venv with bpy 4.2 LTS);
the worker always runs in this interpreter.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
SCENARIOS = HERE / "scenarios.py"
FRAMES, WIDTH, HEIGHT = 16, 64, 48


def bpy_python() -> str:
    return os.environ.get("NORMALCRAFTER_BPY_PYTHON", sys.executable)


HAS_BPY = "NORMALCRAFTER_BPY_PYTHON" in os.environ or importlib.util.find_spec("bpy") is not None
needs_bpy = pytest.mark.skipif(not HAS_BPY, reason="needs the bpy module")


def load_script(name: str, path: Path):
    """Import a file by path (the add-on package itself imports bpy)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_clip(path: Path, frames: int = FRAMES, level=lambda i: 8 + 14 * i, fps: int = 24) -> Path:
    """A lossless H.264 clip whose frame i is a flat grey of ``level(i)``,
    so a render tells which source frame it shows."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv444p"
        stream.options = {"qp": "0"}
        for i in range(frames):
            image = np.full((HEIGHT, WIDTH, 3), level(i), np.uint8)
            image[: HEIGHT // 2, : WIDTH // 2] = 255 - level(i)  # some structure for the model to see
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def run_scenario(name: str, args: dict, user_dir: Path, timeout: float = 300) -> dict:
    """Run one Blender session of scenarios.py with its own user folder; return its facts."""
    result = user_dir / f"{name}.json"
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(user_dir / "blender")}
    proc = subprocess.run(
        [bpy_python(), str(SCENARIOS), name, json.dumps({**args, "result": str(result)})],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    if proc.returncode != 0 or not result.exists():
        raise AssertionError(f"scenario {name} failed (exit {proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return json.loads(result.read_text())
