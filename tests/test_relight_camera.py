"""Exporting the scene camera's per-frame rotations (Blender) and reading them back (core)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from test_relight_compositor import PYTHONS, euler_xyz, lerp, main, make_video, run_blender, write_normals

pytestmark = pytest.mark.blender

RIG_ROTATION = [0.0, 0.0, 0.5]  # the camera's parent
CAMERA_KEYS = {1: [1.1, 0.0, -0.3], 11: [1.5, 0.2, 0.9]}
STRIP_START = 5  # the movie strip's first content frame on the timeline


def camera_to_world(frame: int) -> np.ndarray:
    t = min(max((frame - 1) / 10, 0.0), 1.0)
    return euler_xyz(*RIG_ROTATION) @ euler_xyz(*lerp(CAMERA_KEYS[1], CAMERA_KEYS[11], t))


@pytest.mark.parametrize("python", PYTHONS)
def test_exported_rotations_follow_the_animated_parented_camera(tmp_path, python):
    from normalcrafter.world_space import load_camera_rotations, to_world

    make_video(tmp_path / "plate.mp4", 8)
    for i in range(3, 8):
        write_normals(tmp_path / f"normal.{i:05d}.exr", np.zeros((4, 4, 3), np.float32))

    r = run_blender(python, "scenario_export", {
        "root": str(tmp_path), "rig": RIG_ROTATION, "camera_keys": CAMERA_KEYS, "strip_start": STRIP_START},
        tmp_path, script=__file__)

    # The strip is trimmed by one frame at the start: timeline 6..12 shows video frames 1..7.
    assert r["movie_map"] == {str(t): t - STRIP_START for t in range(6, 13)}
    assert r["image_map"] == {str(20 + i): 3 + i for i in range(5)}  # numbers from the file names
    assert r["clip_map"] == {str(10 + i - 2): i for i in range(2, 8)}  # clip start 10, offset 2
    assert r["frame_after"] == 3  # the export puts the scene back on its frame

    rotations = load_camera_rotations(tmp_path / "rotations.json")
    assert sorted(rotations) == list(range(1, 8))
    for input_frame, rotation in rotations.items():
        np.testing.assert_allclose(rotation, camera_to_world(input_frame + STRIP_START), atol=1e-5)
    # A surface facing the camera points back at it: its world normal is the camera's +Z axis.
    facing = to_world(np.array([[[0.0, 0.0, 1.0]]], np.float32), rotations[4])[0, 0]
    np.testing.assert_allclose(facing, camera_to_world(4 + STRIP_START)[:, 2], atol=1e-5)

    saved = json.loads((tmp_path / "rotations.json").read_text())
    assert saved["convention"] == "opengl" and saved["camera"] == "Solved Camera"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".camera_rotations")] == []
    assert "has no camera" in r["no_camera"] and "no frames" in r["no_frames"]
    assert r["operator"] == ["FINISHED"]
    assert sorted(load_camera_rotations(tmp_path / "from_operator.json")) == list(range(2, 8))


# ---------------------------------------------------------- Blender side

def scenario_export(config: dict) -> dict:
    from test_relight_compositor import _blender, _keyframe, _error

    bpy, relight = _blender()
    root = Path(config["root"])
    scene = bpy.context.scene
    rig = bpy.data.objects.new("Rig", None)
    rig.rotation_euler = config["rig"]
    camera = bpy.data.objects.new("Solved Camera", bpy.data.cameras.new("Solved Camera"))
    camera.parent = rig
    camera.scale = (2.0, 2.0, 2.0)  # scale must not leak into the rotations
    for obj in (rig, camera):
        scene.collection.objects.link(obj)
    scene.camera = camera
    _keyframe(camera, config["camera_keys"])
    scene.frame_set(3)

    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    movie = strips.new_movie("Shot", str(root / "plate.mp4"), 2, config["strip_start"])
    movie.frame_offset_start = 1
    images = strips.new_image("Normals", str(root / "normal.00003.exr"), 3, 20)
    for i in range(4, 8):
        images.elements.append(f"normal.{i:05d}.exr")
    clip = bpy.data.movieclips.load(str(root / "plate.mp4"))
    clip.frame_start, clip.frame_offset = 10, 2

    movie_map = relight.strip_frame_map(movie)
    relight.export_camera_rotations(scene, str(root / "rotations.json"), movie_map)
    result = {
        "movie_map": movie_map, "image_map": relight.strip_frame_map(images),
        "clip_map": relight.clip_frame_map(clip), "frame_after": scene.frame_current,
        "no_frames": _error(relight, lambda: relight.export_camera_rotations(scene, str(root / "x.json"), {})),
    }
    for cls in relight.classes:
        bpy.utils.register_class(cls)
    result["operator"] = sorted(bpy.ops.normalcrafter.export_camera_rotations(
        filepath=str(root / "from_operator.json"), clip=clip.name))
    for cls in reversed(relight.classes):
        bpy.utils.unregister_class(cls)
    scene.camera = None
    result["no_camera"] = _error(relight, lambda: relight.export_camera_rotations(scene, str(root / "x.json"),
                                                                                   movie_map))
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(globals())
