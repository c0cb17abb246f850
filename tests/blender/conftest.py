"""Fixtures for the Blender extension tests; see blender_harness.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from blender_harness import ROOT, load_script, write_clip


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> Path:
    build = load_script("build_extension", ROOT / "scripts" / "build_extension.py")
    return build.build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "a": write_clip(folder / "shot_a.mp4"),
        "b": write_clip(folder / "shot_b.mp4", level=lambda i: 230 - 13 * i),
    }
