"""The Blender ground-truth generator (real bpy, Cycles on the CPU, in a subprocess),
checked against analytic normals, and `normalcrafter eval` end to end on its clips."""
from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest

from normalcrafter import convention as conv
from normalcrafter.cli import main
from normalcrafter.errors import NormalCrafterError
from normalcrafter.evaluation import angular_error, open_benchmark, read_normal_file
from normalcrafter.evaluation.blender_gt import render_clip
from normalcrafter.evaluation.flicker import _sample
from normalcrafter.evaluation.scene_recipes import RECIPES, make_spec

pytestmark = [pytest.mark.blender, pytest.mark.skipif(find_spec("bpy") is None, reason="needs the bpy module")]


@pytest.fixture(scope="session")
def analytic_clip(tmp_path_factory) -> Path:
    return render_clip(tmp_path_factory.mktemp("gt") / "analytic", "analytic", width=96, height=64, frames=3,
                       seed=1, samples=2, motion="handheld")


@pytest.fixture(scope="session")
def objects_clip(tmp_path_factory) -> Path:
    return render_clip(tmp_path_factory.mktemp("gt") / "objects", "objects", width=128, height=80, frames=4,
                       seed=2, samples=2)


def analytic_normals(spec: dict, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the recipe's analytic sphere and plane ourselves: camera-space
    (OpenGL) normals and an object-id map (0 = nothing)."""
    k, w, h = spec["intrinsics"], spec["width"], spec["height"]
    cam = np.asarray(spec["camera_to_world"][frame])
    rot, origin = cam[:3, :3], cam[:3, 3]
    j, i = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    d = np.stack([(j - k["cx"]) / k["fx"], -(i - k["cy"]) / k["fy"], -np.ones_like(j)], -1) @ rot.T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    best = np.full((h, w), np.inf)
    normal = np.zeros((h, w, 3))
    ids = np.zeros((h, w), np.uint8)
    for q, obj in enumerate(spec["objects"], start=1):
        a = obj["analytic"]
        if a["type"] == "plane":
            nn = np.asarray(a["normal"], float)
            t = ((np.asarray(a["point"]) - origin) @ nn) / (d @ nn)
            hit = (t > 0) & (t < best)
            normal[hit] = nn
        else:
            c, r = np.asarray(a["center"]), a["radius"]
            b = d @ (origin - c)
            disc = b * b - ((origin - c) @ (origin - c) - r * r)
            t = -b - np.sqrt(np.maximum(disc, 0))
            hit = (disc > 0) & (t > 0) & (t < best)
            normal[hit] = ((origin + d * t[..., None] - c) / r)[hit]
        best[hit] = t[hit]
        ids[hit] = q
    return normal @ rot, ids  # world -> camera: R^T n


def test_blender_normals_match_analytic_sphere_and_plane(analytic_clip: Path) -> None:
    spec = json.loads((analytic_clip / "scene.json").read_text())
    assert spec["convention"] == "opengl" and spec["blender"].startswith("5.")
    kernel = np.ones((3, 3), np.uint8)
    for f in range(spec["frames"]):
        rendered, stated = read_normal_file(analytic_clip / "normal" / f"normal.{f:05d}.exr")
        assert stated == "opengl"
        expected, ids = analytic_normals(spec, f)
        hit = np.linalg.norm(rendered, axis=-1) > 0.5
        assert (hit == (ids > 0)).mean() > 0.999
        # Away from outlines (where a pixel centre may fall on either side of the tessellated sphere).
        interior = (cv2.erode(ids, kernel) == ids) & (cv2.dilate(ids, kernel) == ids) & hit
        err = angular_error(rendered, expected)
        plane, sphere = interior & (ids == 1), interior & (ids == 2)
        assert plane.sum() > 1000 and sphere.sum() > 200
        assert err[plane].max() < 0.01
        assert err[sphere].max() < 0.5 and err[sphere].mean() < 0.1


def test_exact_flow_carries_world_normals(objects_clip: Path) -> None:
    """Along the generator's flow, the same surface point must show the same
    world-space normal in both frames (static scene, moving camera)."""
    spec = json.loads((objects_clip / "scene.json").read_text())
    for f in range(spec["frames"] - 1):
        rot0 = np.asarray(spec["camera_to_world"][f])[:3, :3]
        rot1 = np.asarray(spec["camera_to_world"][f + 1])[:3, :3]
        n0 = read_normal_file(objects_clip / "normal" / f"normal.{f:05d}.exr")[0] @ rot0.T
        n1 = read_normal_file(objects_clip / "normal" / f"normal.{f + 1:05d}.exr")[0] @ rot1.T
        flow = np.load(objects_clip / "flow" / f"flow.{f:05d}.npy")
        assert flow.shape == (spec["height"], spec["width"], 2)
        known = np.isfinite(flow[..., 0])
        assert 0.5 < known.mean() < 1.0 and np.abs(np.nanmedian(flow[..., 0])) > 0.3  # the camera moves
        warped, inside = _sample(n1, flow)
        ok = known & inside & (np.linalg.norm(n0, axis=-1) > 0.5)
        err = angular_error(n0[ok], warped[ok])
        assert np.median(err) < 0.01 and np.percentile(err, 80) < 0.5


def test_generator_is_deterministic_and_checks_its_arguments(analytic_clip: Path, tmp_path: Path) -> None:
    again = render_clip(tmp_path / "again", "analytic", width=96, height=64, frames=3, seed=1, samples=2,
                        motion="handheld")
    for f in range(3):
        # Cycles' threads may change the last bit of a float normal; nothing more.
        np.testing.assert_allclose(read_normal_file(again / "normal" / f"normal.{f:05d}.exr")[0],
                                   read_normal_file(analytic_clip / "normal" / f"normal.{f:05d}.exr")[0], atol=1e-6)
        # OpenImageDenoise's threads may move a rare pixel by one level
        a = cv2.imread(str(again / "rgb" / f"rgb.{f:05d}.png")).astype(int)
        b = cv2.imread(str(analytic_clip / "rgb" / f"rgb.{f:05d}.png")).astype(int)
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3
    assert not list(tmp_path.glob(".*partial"))
    with pytest.raises(NormalCrafterError) as e:
        render_clip(again, "analytic")
    assert e.value.code == "output_conflict"
    with pytest.raises(NormalCrafterError, match="unknown recipe"):
        render_clip(tmp_path / "x", "forest")
    with pytest.raises(NormalCrafterError, match="each side must be"):
        render_clip(tmp_path / "x", "room", width=4)
    proc = subprocess.run([sys.executable, "-m", "normalcrafter.evaluation.blender_gt", str(again)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "exists" in proc.stderr


def test_recipes_are_seeded_data() -> None:
    for recipe in RECIPES:
        a, b = make_spec(recipe, 7, 64, 48, 5), make_spec(recipe, 7, 64, 48, 5)
        assert json.dumps(a) == json.dumps(b)
        assert json.dumps(make_spec(recipe, 8, 64, 48, 5)) != json.dumps(a)
        assert len(a["camera_to_world"]) == 5
        cams = np.asarray(a["camera_to_world"])
        np.testing.assert_allclose(cams[:, :3, :3] @ cams[:, :3, :3].transpose(0, 2, 1), np.tile(np.eye(3), (5, 1, 1)),
                                   atol=1e-9)
        if a["motion"] != "static":
            assert not np.allclose(cams[0], cams[-1])


def test_blender_loader(objects_clip: Path) -> None:
    (clip,) = open_benchmark("blender", objects_clip)
    assert clip.name == "objects" and clip.frames == [0, 1, 2, 3] and clip.conventions == {"RUB"}
    assert clip.read_rgb(0).shape == (80, 128, 3) and clip.read_flow(2).shape == (80, 128, 2)
    clips = open_benchmark("blender", objects_clip.parent)  # a folder of clips
    assert [c.name for c in clips] == ["objects"]


def write_prediction(folder: Path, gt_clip: Path, sigma: float, convention: str) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for p in sorted((gt_clip / "normal").glob("*.exr")):
        n, _ = read_normal_file(p)
        n = n + rng.normal(0, sigma, n.shape).astype(np.float32)
        n = conv.convert(n / np.linalg.norm(n, axis=-1, keepdims=True), "opengl", convention)
        chans = {f"N.{a}": np.ascontiguousarray(n[:, :, i], dtype=np.float16) for i, a in enumerate("XYZ")}
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
                  "normalcrafter_convention": convention}
        with OpenEXR.File(header, chans) as f:
            f.write(str(folder / p.name))


def test_eval_command_end_to_end(objects_clip: Path, tmp_path: Path, capsys) -> None:
    write_prediction(tmp_path / "pred", objects_clip, 0.03, "opencv")
    out = tmp_path / "report"
    assert main(["eval", str(tmp_path / "pred"), str(objects_clip), "--out", str(out), "--plots"]) == 0
    printed = capsys.readouterr().out
    assert "overall" in printed and "flicker" in printed
    report = json.loads((out / "metrics.json").read_text())
    clip = report["clips"][0]
    assert clip["flow"] == "gt" and clip["prediction"]["conventions"] == ["RDF"]
    assert 1.0 < report["overall"]["mean"] < 5.0  # the injected noise, not a convention mismatch
    assert report["overall"]["within_11.25"] > 95
    assert report["overall"]["flicker"]["flicker"] > 1.0
    sheet = cv2.imread(clip["plots"]["sheet"])
    profile = cv2.imread(clip["plots"]["profile"])
    assert sheet.shape[1] == 4 * 128 and sheet.shape[0] > 4 * 80
    assert profile.shape[0] == 80 + 2 * 22 and profile.shape[1] >= 3 * 4 * 8  # y-t: image height by frames
    # The same prediction read as OpenGL is far off: the convention really was applied.
    assert main(["eval", str(tmp_path / "pred"), str(objects_clip), "--out", str(out),
                 "--pred-convention", "opengl", "--flow", "none"]) == 0
    assert json.loads((out / "metrics.json").read_text())["overall"]["mean"] > 60
