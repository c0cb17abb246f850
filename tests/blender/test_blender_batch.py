"""scripts/blender_batch.py run the way CI and farms run it: a fresh
process on a saved .blend, with the extension from the user preferences."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from blender_harness import ROOT, bpy_python, needs_bpy, run_scenario

pytestmark = [pytest.mark.blender, needs_bpy]

SCRIPT = ROOT / "scripts" / "blender_batch.py"


@pytest.fixture(scope="module")
def blend(extension_zip, clips, tiny_model, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("batch")
    path = tmp / "shot.blend"
    args = {"zip": str(extension_zip), "python": sys.executable, "model": str(tiny_model),
            "clips": {k: str(v) for k, v in clips.items()}, "blend": str(path)}
    facts = run_scenario("make_blend", args, tmp)
    return {"path": path, "tmp": tmp, "facts": facts, "model": str(tiny_model)}


def batch(blend: dict, *options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(blend["tmp"] / "blender")}
    return subprocess.run([bpy_python(), str(SCRIPT), str(blend["path"]), "--", *options],
                          capture_output=True, text=True, timeout=300, env=env)


def test_renders_every_movie_strip_and_saves(blend):
    proc = batch(blend, "--python", sys.executable, "--model", blend["model"], "--max-res", "64",
                 "--output-dir", "//passes/", "--save")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    passes = blend["tmp"] / "passes"
    assert sorted(p.name for p in (passes / "plate").glob("*.exr")) == [f"normal.{n:05d}.exr" for n in range(5, 9)]
    assert sorted(p.name for p in (passes / "other").glob("*.exr")) == [f"normal.{n:05d}.exr" for n in range(4)]
    saved = run_scenario("inspect", {"blend": str(blend["path"])}, blend["tmp"])
    if tuple(map(int, saved["version"].split(".")[:2])) >= (4, 4):
        placed = {s["tag"]: (s["channel"], s["final_start"], s["final_end"]) for s in saved["strips"] if s["tag"]}
        assert placed == {"plate": (3, 12, 16), "other": (5, 30, 34)}
    else:  # no multilayer EXR strips before 4.4: timed images instead
        timed = {im["plate"]: (im["frame_start"], im["frame_duration"]) for im in saved["images"]}
        assert timed == {"plate": (12, 4), "other": (30, 4)}
    assert "NormalCrafter: plate:" in proc.stdout  # progress lines for the console


def test_unknown_strip_is_a_usage_error(blend):
    proc = batch(blend, "--strips", "plate", "nope")
    assert proc.returncode == 2
    assert "no movie strip named 'nope'" in proc.stderr and "plate, other" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_option_is_a_usage_error(blend):
    proc = batch(blend, "--max-res", "big")
    assert proc.returncode == 2 and "--max-res" in proc.stderr


def test_failed_job_exits_1(blend):
    proc = batch(blend, "--python", str(blend["tmp"] / "no-such-python"))
    assert proc.returncode == 1
    assert "no Python interpreter at" in proc.stderr and "Traceback" not in proc.stderr
