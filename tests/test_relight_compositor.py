"""The relight compositor setup, rendered headless and compared with numpy.

Each test writes real inputs (EXR normal passes, EXR or H.264 plates), runs
Blender (the bpy module) in a subprocess that executes this same file's
``scenario_*`` function, and reads the rendered float EXRs back.

Blender 5.0 (the venv's bpy) runs by default. The 4.2/4.4 compositor API is
exercised when NORMALCRAFTER_BPY_LEGACY_PYTHON names a Python with bpy 4.x,
numpy<2, OpenEXR and pytest installed, e.g.::

    python3.11 -m venv /tmp/bpy42 && /tmp/bpy42/bin/pip install bpy==4.2.0 "numpy<2" OpenEXR pytest
    NORMALCRAFTER_BPY_LEGACY_PYTHON=/tmp/bpy42/bin/python pytest tests/test_relight_compositor.py
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import OpenEXR
import pytest

REPO = Path(__file__).resolve().parents[1]
LEGACY_PYTHON = os.environ.get("NORMALCRAFTER_BPY_LEGACY_PYTHON")

PYTHONS = [pytest.param(sys.executable, id="bpy-5.0")]
PYTHONS.append(pytest.param(LEGACY_PYTHON, id="bpy-4.x", marks=pytest.mark.skipif(
    not LEGACY_PYTHON, reason="set NORMALCRAFTER_BPY_LEGACY_PYTHON to a Python with bpy 4.2/4.4")))

pytestmark = pytest.mark.blender


# ---------------------------------------------------------------- test side

def write_normals(path: Path, normals: np.ndarray) -> None:
    channels = {f"N.{axis}": np.ascontiguousarray(normals[..., i], dtype=np.float32) for i, axis in enumerate("XYZ")}
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, channels).write(str(path))


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    channels = {c: np.ascontiguousarray(rgb[..., i], dtype=np.float32) for i, c in enumerate("RGB")}
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, channels).write(str(path))


def read_rgb(path: str | Path) -> np.ndarray:
    channels = OpenEXR.File(str(path), separate_channels=True).channels()
    return np.stack([channels[c].pixels for c in "RGB"], axis=-1).astype(np.float64)


def random_normals(rng: np.random.Generator, shape=(6, 8)) -> np.ndarray:
    normals = rng.normal(size=(*shape, 3))
    normals[0, 0] = (0, 0, 1)  # facing the camera
    normals[0, 1] = (1, 0, 0)  # edge-on
    normals[0, 2] = (0, 0, -1)  # facing away
    return (normals / np.linalg.norm(normals, axis=-1, keepdims=True)).astype(np.float32)


def reference(normals: np.ndarray, plate: np.ndarray, lights: int, rim: bool, blend: str, values: dict) -> np.ndarray:
    """The relight formula written out in numpy (the issue's definition)."""
    n = normals.astype(np.float64)
    light = np.zeros_like(plate, dtype=np.float64)
    for k in range(1, lights + 1):
        direction = np.asarray(values[f"Light {k} Direction"], dtype=np.float64)
        direction = direction / np.linalg.norm(direction)
        wrap = values[f"Light {k} Wrap"]
        lambert = np.maximum((n @ direction + wrap) / (1 + wrap), 0.0)
        light += np.asarray(values[f"Light {k} Color"][:3]) * values[f"Light {k} Intensity"] * lambert[..., None]
    if rim:
        edge = np.clip(1.0 - n[..., 2], 0.0, 1.0) ** values["Rim Power"]
        light += np.asarray(values["Rim Color"][:3]) * values["Rim Intensity"] * edge[..., None]
    tint = values["Tint By Plate"]
    added = light * (1 - tint + tint * plate) * values["Strength"]
    return plate + added if blend == "ADD" else 1 - (1 - plate) * (1 - added)


def run_blender(python: str, scenario: str, config: dict, tmp_path: Path, script: str = __file__) -> dict:
    """Run ``scenario`` of ``script`` (a test module) in a fresh Blender; return what it returned."""
    config_path = tmp_path / f"{scenario}.json"
    config = {**config, "result": str(tmp_path / f"{scenario}.result.json")}
    config_path.write_text(json.dumps(config))
    proc = subprocess.run([python, script, scenario, str(config_path)], capture_output=True, text=True,
                          timeout=300, cwd=str(REPO))
    assert proc.returncode == 0, f"blender scenario {scenario} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(Path(config["result"]).read_text())


def base_values(lights: int, rim: bool = False) -> dict:
    values = {"Strength": 1.0, "Tint By Plate": 0.0}
    if rim:
        values.update({"Rim Color": [1.0, 1.0, 1.0, 1.0], "Rim Intensity": 0.0, "Rim Power": 1.0})
    for k in range(1, lights + 1):
        values.update({f"Light {k} Direction": [0.0, 0.0, 1.0], f"Light {k} Color": [1.0, 1.0, 1.0, 1.0],
                       f"Light {k} Intensity": 1.0, f"Light {k} Wrap": 0.0})
    return values


NUMERIC_CASES = [
    # Plain Lambert, max(N.L, 0), added to the plate.
    dict(name="lambert", lights=1, rim=False, blend="ADD", frame=1,
         values={**base_values(1), "Light 1 Direction": [0.3, 0.5, 0.8]}),
    # Wrap, rim, two coloured lights, plate tint, screen.
    dict(name="wrap_rim_screen", lights=2, rim=True, blend="SCREEN", frame=2,
         values={**base_values(2, rim=True), "Strength": 0.8, "Tint By Plate": 0.6,
                 "Light 1 Direction": [0.3, 0.4, 0.5], "Light 1 Color": [1.0, 0.5, 0.25, 1.0],
                 "Light 1 Intensity": 1.5, "Light 1 Wrap": 0.3,
                 "Light 2 Direction": [-1.0, 0.0, 0.2], "Light 2 Color": [0.2, 0.4, 1.0, 1.0],
                 "Light 2 Intensity": 0.7, "Rim Color": [1.0, 1.0, 0.5, 1.0], "Rim Intensity": 0.4, "Rim Power": 2.5}),
    # Full wrap on one light and a rebuild to three lights, added.
    dict(name="wrap_rim_add", lights=3, rim=True, blend="ADD", frame=3,
         values={**base_values(3, rim=True), "Strength": 2.0, "Tint By Plate": 1.0,
                 "Light 1 Direction": [0.0, -2.0, 1.0], "Light 1 Wrap": 1.0,
                 "Light 2 Direction": [0.7, 0.7, 0.1], "Light 2 Intensity": 0.25, "Light 2 Wrap": 0.5,
                 "Light 3 Direction": [0.0, 0.0, -1.0], "Light 3 Color": [0.1, 0.9, 0.3, 1.0],
                 "Rim Intensity": 1.0, "Rim Power": 4.0}),
]


@pytest.mark.parametrize("python", PYTHONS)
def test_relight_matches_numpy(tmp_path, python):
    rng = np.random.default_rng(7)
    normals = [random_normals(rng) for _ in range(3)]
    for i, n in enumerate(normals):
        write_normals(tmp_path / f"normal.{i:05d}.exr", n)
    plate = rng.uniform(0.0, 1.0, size=(6, 8, 3))
    write_rgb(tmp_path / "plate.exr", plate)
    cases = [{**case, "out": str(tmp_path / f"{case['name']}.exr")} for case in NUMERIC_CASES]

    run_blender(python, "scenario_numeric", {"normals": str(tmp_path), "plate": str(tmp_path / "plate.exr"),
                                             "cases": cases}, tmp_path)

    for case in cases:
        # The scene starts at frame 1 and the plate is a still, so frame T shows normal pass T - 1.
        expected = reference(normals[case["frame"] - 1], plate, case["lights"], case["rim"], case["blend"],
                             case["values"])
        got = read_rgb(case["out"])
        np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=case["name"])
    lambert = read_rgb(cases[0]["out"]) - plate
    assert lambert[0, 2].max() < 1e-6 < lambert[0, 0].min()  # the far side stays dark, the near side is lit


@pytest.mark.parametrize("python", PYTHONS)
def test_relight_reads_the_writers_exr(tmp_path, python):
    """The pipeline's own EXR (half float, N.* plus R,G,B and Nworld.*): the setup must use the N pass."""
    from normalcrafter.io.writers import exr_header, read_exr_normals, write_exr

    rng = np.random.default_rng(5)
    normals = random_normals(rng)
    world = -normals  # any other values: using this pass by mistake would show
    path = write_exr(tmp_path / "normal.00000.exr", normals, exr_header("opengl", "test", {}, 0), world=world)
    stored, _ = read_exr_normals(path)  # half-float rounded
    plate = rng.uniform(0.0, 1.0, size=(6, 8, 3))
    write_rgb(tmp_path / "plate.exr", plate)
    case = dict(NUMERIC_CASES[1], frame=1, out=str(tmp_path / "out.exr"))

    run_blender(python, "scenario_numeric", {"normals": str(tmp_path), "plate": str(tmp_path / "plate.exr"),
                                             "cases": [case]}, tmp_path)

    expected = reference(stored, plate, case["lights"], case["rim"], case["blend"], case["values"])
    np.testing.assert_allclose(read_rgb(case["out"]), expected, atol=2e-5)


def make_video(path: Path, frames: int) -> list[int]:
    import av

    levels = [20 * i + 10 for i in range(frames)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "0"}
        for level in levels:
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), level, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return levels


def srgb_to_linear(value: float) -> float:
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


@pytest.mark.parametrize("python", PYTHONS)
def test_normal_pass_follows_the_clip_timing(tmp_path, python):
    """A movie clip plate retimed in Blender (start 10, offset 2): the normal pass stays on its frames.

    Each normal pass frame i has a distinct N.L with a light toward the
    camera, each video frame j a distinct grey, so a render tells which frame
    of each Blender showed. The normals are 16x16 and the plate 64x64: the
    setup scales them.
    """
    levels = make_video(tmp_path / "plate.mp4", 8)
    cosines = [0.15 + 0.2 * i for i in range(5)]
    for i, c in enumerate(cosines):
        normal = np.array([math.sqrt(1 - c * c), 0.0, c], dtype=np.float32)
        write_normals(tmp_path / f"normal.{i:05d}.exr", np.broadcast_to(normal, (16, 16, 3)))
    frames = list(range(8, 13))

    result = run_blender(python, "scenario_clip_timing", {
        "normals": str(tmp_path / "normal.00002.exr"), "plate": str(tmp_path / "plate.mp4"),
        "frames": frames, "out": str(tmp_path / "out")}, tmp_path)

    assert result["scaled"], "a 16x16 normal pass must be scaled to the 64x64 plate"
    linear_levels = np.array([srgb_to_linear(level / 255) for level in levels])
    for frame in frames:
        plate = read_rgb(tmp_path / f"out_plate_{frame}.exr")[24:40, 24:40].mean()
        lit = read_rgb(tmp_path / f"out_lit_{frame}.exr")[24:40, 24:40].mean()
        plate_index = int(np.abs(linear_levels - plate).argmin())
        normal_index = int(np.abs(np.array(cosines) - (lit - plate)).argmin())
        assert abs(linear_levels[plate_index] - plate) < 0.01
        assert abs(cosines[normal_index] - (lit - plate)) < 1e-3
        assert plate_index == frame - 8  # clip start 10, offset 2: frame 10 shows video frame 2
        assert normal_index == plate_index, f"frame {frame}: plate frame {plate_index}, normals {normal_index}"


def euler_xyz(x: float, y: float, z: float) -> np.ndarray:
    """Blender's XYZ Euler rotation as a matrix (X applied first)."""
    cx, sx, cy, sy, cz, sz = math.cos(x), math.sin(x), math.cos(y), math.sin(y), math.cos(z), math.sin(z)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def lerp(a, b, t):
    return [x + (y - x) * t for x, y in zip(a, b)]


CAMERA_KEYS = {1: [1.2, 0.0, 0.3], 9: [1.4, 0.1, -0.5]}
EMPTY_KEYS = {1: [0.2, -0.4, 0.1], 9: [1.1, 0.6, 2.0]}


def camera_space_direction(frame: int) -> np.ndarray:
    t = (frame - 1) / 8
    camera = euler_xyz(*lerp(CAMERA_KEYS[1], CAMERA_KEYS[9], t))
    toward_light = euler_xyz(*lerp(EMPTY_KEYS[1], EMPTY_KEYS[9], t))[:, 2]
    return camera.T @ toward_light


@pytest.mark.parametrize("python", PYTHONS)
def test_light_follows_an_empty_relative_to_the_camera(tmp_path, python):
    rng = np.random.default_rng(11)
    normals = random_normals(rng)
    write_normals(tmp_path / "normal.00000.exr", normals)
    write_rgb(tmp_path / "black.exr", np.zeros((6, 8, 3)))

    result = run_blender(python, "scenario_drivers", {
        "normals": str(tmp_path / "normal.00000.exr"), "plate": str(tmp_path / "black.exr"),
        "camera_keys": CAMERA_KEYS, "empty_keys": EMPTY_KEYS, "out": str(tmp_path / "out")}, tmp_path)

    for name, frame in (("live_1", 1), ("live_4", 4), ("live_7", 7), ("rebuilt_4", 4), ("once_7_seen_at_1", 7)):
        expected = np.maximum(normals.astype(np.float64) @ camera_space_direction(frame), 0.0)
        np.testing.assert_allclose(read_rgb(tmp_path / f"out_{name}.exr"), np.repeat(expected[..., None], 3, -1),
                                   atol=2e-5, err_msg=name)
    assert result["drivers_live"] == 3 and result["drivers_after_rebuild"] == 3 and result["drivers_once"] == 0
    np.testing.assert_allclose(result["set_once"], camera_space_direction(7), atol=1e-5)


# ---------------------------------------------------------- Blender side
# Run as ``python this_file.py scenario_name config.json`` in a fresh process.

def _blender():
    import importlib
    import types

    import bpy

    # The relight sub-package stands alone: load it without the add-on's
    # __init__ (which needs files the extension build adds).
    package = types.ModuleType("normalcrafter_blender")
    package.__path__ = [str(REPO / "normalcrafter_blender")]
    sys.modules["normalcrafter_blender"] = package
    return bpy, importlib.import_module("normalcrafter_blender.relight")


def _render(bpy, scene, path: str) -> None:
    """Render only the compositor, to a float EXR with no view transform."""
    if bpy.app.version < (5, 0, 0):
        # Blender's default Render Layers node would make it render the 3D
        # scene too (slow without a GPU, and beside the point here).
        for node in [n for n in scene.node_tree.nodes if n.bl_idname == "CompositorNodeRLayers"]:
            scene.node_tree.nodes.remove(node)
    settings = scene.render.image_settings
    if bpy.app.version >= (5, 0, 0):
        settings.media_type = "IMAGE"
    settings.file_format = "OPEN_EXR"
    settings.color_depth = "32"
    settings.color_mode = "RGB"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)


def _data_image(bpy, path: str):
    image = bpy.data.images.load(path)
    image.colorspace_settings.name = "Non-Color"
    return image


def _error(relight, call) -> str:
    try:
        call()
    except relight.RelightError as exc:
        return str(exc)
    except RuntimeError as exc:  # an operator's ERROR report
        return str(exc)
    return "no error"


def _set_values(node, values: dict) -> None:
    for name, value in values.items():
        node.inputs[name].default_value = value


def scenario_numeric(config: dict) -> dict:
    bpy, relight = _blender()
    scene = bpy.context.scene
    plate = _data_image(bpy, config["plate"])
    for case in config["cases"]:
        setup = relight.build_relight(scene, config["normals"], plate, lights=case["lights"], blend=case["blend"],
                                      rim=case["rim"])
        _set_values(setup.node, case["values"])
        scene.frame_set(case["frame"])
        _render(bpy, scene, case["out"])
    return {}


def scenario_clip_timing(config: dict) -> dict:
    bpy, relight = _blender()
    scene = bpy.context.scene
    setup = relight.build_relight(scene, config["normals"], config["plate"])
    clip = setup.node.inputs["Image"].links[0].from_node.clip
    clip.frame_start, clip.frame_offset = 10, 2
    setup = relight.build_relight(scene, config["normals"], clip, rim=False)
    values = {"Tint By Plate": 0.0, "Light 1 Direction": (0.0, 0.0, 1.0), "Light 1 Color": (1.0, 1.0, 1.0, 1.0),
              "Light 1 Intensity": 1.0, "Light 1 Wrap": 0.0}
    _set_values(setup.node, values)
    for frame in config["frames"]:
        scene.frame_set(frame)
        for name, strength in (("plate", 0.0), ("lit", 1.0)):
            setup.node.inputs["Strength"].default_value = strength
            _render(bpy, scene, f"{config['out']}_{name}_{frame}.exr")
    scaled = setup.node.inputs["Normal"].links[0].from_node.bl_idname == "CompositorNodeScale"
    return {"scaled": scaled}


def _keyframe(obj, keys: dict) -> None:
    for frame, rotation in keys.items():
        obj.rotation_euler = rotation
        obj.keyframe_insert("rotation_euler", frame=int(frame))
    for curve in _fcurves(obj):
        for point in curve.keyframe_points:
            point.interpolation = "LINEAR"


def _fcurves(obj):
    action = obj.animation_data.action
    if hasattr(action, "fcurves"):
        return action.fcurves
    # Blender 5.0 layered actions keep curves in channel bags.
    return [c for layer in action.layers for strip in layer.strips for bag in strip.channelbags for c in bag.fcurves]


def _driver_count(tree) -> int:
    return len(tree.animation_data.drivers) if tree.animation_data else 0


def scenario_drivers(config: dict) -> dict:
    bpy, relight = _blender()
    scene = bpy.context.scene
    camera = bpy.data.objects.new("Shot Camera", bpy.data.cameras.new("Shot Camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    empty = bpy.data.objects.new("Key Light", None)
    scene.collection.objects.link(empty)
    _keyframe(camera, config["camera_keys"])
    _keyframe(empty, config["empty_keys"])
    plate = _data_image(bpy, config["plate"])
    setup = relight.build_relight(scene, config["normals"], plate, rim=False)
    _set_values(setup.node, {"Strength": 1.0, "Tint By Plate": 0.0, "Light 1 Color": (1.0, 1.0, 1.0, 1.0),
                             "Light 1 Intensity": 1.0, "Light 1 Wrap": 0.0})
    relight.link_light(scene, 1, empty)
    result = {"drivers_live": _driver_count(setup.tree)}
    for frame in (1, 4, 7):
        scene.frame_set(frame)
        _render(bpy, scene, f"{config['out']}_live_{frame}.exr")
    # A rebuild renumbers the inputs (two lights now); the link must survive.
    setup = relight.build_relight(scene, config["normals"], plate, lights=2, rim=False)
    setup.node.inputs["Light 2 Intensity"].default_value = 0.0
    result["drivers_after_rebuild"] = _driver_count(setup.tree)
    scene.frame_set(4)
    _render(bpy, scene, f"{config['out']}_rebuilt_4.exr")
    scene.frame_set(7)
    relight.link_light(scene, 1, empty, live=False)
    result["drivers_once"] = _driver_count(setup.tree)
    result["set_once"] = list(setup.node.inputs["Light 1 Direction"].default_value)
    scene.frame_set(1)
    _render(bpy, scene, f"{config['out']}_once_7_seen_at_1.exr")
    return result


def main(namespace: dict) -> None:
    """Run the scenario named on the command line from a test module's ``namespace``."""
    scenario, config_file = sys.argv[1], sys.argv[2]
    settings = json.loads(Path(config_file).read_text())
    outcome = namespace[scenario](settings)
    Path(settings["result"]).write_text(json.dumps(outcome))


if __name__ == "__main__":
    main(globals())
