"""Benchmark loaders on small synthetic stand-ins laid out like the real downloads."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest

from normalcrafter import convention as conv
from normalcrafter.errors import NormalCrafterError
from normalcrafter.evaluation import Clip, angular_error, evaluate, open_benchmark
from normalcrafter.evaluation.loaders.depth_normals import normals_from_depth
from normalcrafter.evaluation.loaders.sintel import TAG

H, W = 24, 32
K = np.array([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]])


def gl_normals(seed: int) -> np.ndarray:
    n = np.random.default_rng(seed).normal(size=(H, W, 3))
    n[..., 2] = np.abs(n[..., 2]) + 0.3
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def write_rgb(path: Path, size: tuple[int, int] = (H, W), ext_quality: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(len(str(path))).integers(0, 255, (*size, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)


def write_rgb_exr(path: Path, n: np.ndarray) -> None:
    chans = {c: np.ascontiguousarray(n[:, :, i], dtype=np.float32) for i, c in enumerate("RGB")}
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, chans) as f:
        f.write(str(path))


def write_png8(path: Path, n: np.ndarray) -> None:
    enc = np.clip((n + 1) / 2 * 255 + 0.5, 0, 255).astype(np.uint8)
    enc[np.linalg.norm(n, axis=-1) < 0.5] = 0
    cv2.imwrite(str(path), enc[:, :, ::-1])


def pred_clips(truth: dict[str, list[np.ndarray]], frames: dict[str, list[int]]) -> list[Clip]:
    return [Clip(name, frames[name], (lambda i, v=v: v[i])) for name, v in truth.items()]


@pytest.fixture
def dsine_eval(tmp_path: Path) -> tuple[Path, dict]:
    """dsine_eval/{sintel,scannet,nyuv2,ibims} as unpacked from dsine_eval.zip; normals in DSINE's LUB axes."""
    root = tmp_path / "dsine_eval"
    truth: dict = {}
    samples = {
        "sintel": [("alley_1", f"frame_{f:04d}", ".exr") for f in (1, 2, 3)] + [("cave_2", "frame_0001", ".exr")],
        "scannet": [("scene0532_00", "000000", ".png"), ("scene0220_02", "000450", ".png")],
        "nyuv2": [("test", "000001", ".png"), ("test", "000002", ".png"), ("train", "000007", ".png")],
        "ibims": [("ibims", "corridor_01", ".exr"), ("ibims", "office_01", ".exr"), ("ibims", "corridor_02", ".exr")],
    }
    for seed, (bench, items) in enumerate(samples.items()):
        for k, (scene, sid, ext) in enumerate(items):
            folder = root / bench / scene
            write_rgb(folder / f"{sid}_img.png")
            n = gl_normals(100 * seed + k)
            n[0, :4] = 0.0  # invalid pixels
            lub = conv.convert(n, "opengl", "LUB")
            (write_rgb_exr if ext == ".exr" else write_png8)(folder / f"{sid}_normal{ext}", lub)
            np.save(folder / f"{sid}_intrins.npy", K)
            truth.setdefault(bench, {}).setdefault(scene, []).append((sid, n))
    return root, truth


def test_dsine_layout(dsine_eval: tuple[Path, dict]) -> None:
    root, truth = dsine_eval
    sintel = open_benchmark("sintel", root)  # the package root ...
    assert [c.name for c in sintel] == ["alley_1", "cave_2"]
    assert sintel[0].frames == [1, 2, 3] and sintel[0].is_sequence
    assert [c.name for c in open_benchmark("sintel", root / "sintel")] == ["alley_1", "cave_2"]  # ... or its folder
    scannet = open_benchmark("scannet", root / "scannet")
    assert sorted(c.name for c in scannet) == ["scene0220_02", "scene0532_00"]
    assert not scannet[0].is_sequence
    nyu = open_benchmark("nyuv2", root)
    assert [c.name for c in nyu] == ["test"] and nyu[0].frames == [1, 2]  # the train split is left out
    ibims = open_benchmark("ibims", root)
    assert ibims[0].frames == [0, 1, 2]  # numbered by sorted name: corridor_01, corridor_02, office_01
    for bench, clips, tol in (("sintel", sintel, 1e-4), ("scannet", scannet, 0.6), ("nyuv2", nyu, 0.6),
                              ("ibims", ibims, 1e-4)):
        for clip in clips:
            expected = sorted(truth[bench][clip.name], key=lambda t: t[0])
            for i in range(len(clip)):
                got = clip.read_normal(i)
                n = expected[i][1]
                assert np.all(got[0, :4] == 0), "invalid pixels must stay invalid"
                assert angular_error(got[1:], n[1:]).max() < tol, f"{bench}/{clip.name}: not converted from LUB"
                assert clip.read_rgb(i).shape == (H, W, 3)
    # a perfect OpenGL prediction scores ~0 through the whole evaluation
    preds = pred_clips({c.name: [v for _, v in sorted(truth["sintel"][c.name], key=lambda t: t[0])]
                        for c in sintel}, {c.name: c.frames for c in sintel})
    report = evaluate(preds, sintel, flow="none")
    assert report["overall"]["mean"] < 1e-4 and report["overall"]["pixels"] == 4 * (H * W - 4)


def test_dsine_layout_errors(tmp_path: Path) -> None:
    (tmp_path / "x" / "scene").mkdir(parents=True)
    with pytest.raises(NormalCrafterError, match="no DSINE-layout"):
        open_benchmark("scannet", tmp_path / "x")
    write_rgb(tmp_path / "x" / "scene" / "000001_img.png")
    with pytest.raises(NormalCrafterError, match="no 000001_normal"):
        open_benchmark("scannet", tmp_path / "x")
    with pytest.raises(NormalCrafterError, match="unknown benchmark"):
        open_benchmark("kitti", tmp_path)


def plane_depth(normal_cv: np.ndarray, offset: float, k: np.ndarray = K, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """Depth (z) of the plane n . X = offset seen through pinhole k (OpenCV axes)."""
    j, i = np.meshgrid(np.arange(size[1], dtype=np.float64), np.arange(size[0], dtype=np.float64))
    rays = np.stack([(j - k[0, 2]) / k[0, 0], (i - k[1, 2]) / k[1, 1], np.ones_like(j)], axis=-1)
    return offset / (rays @ normal_cv)


def expected_gl(normal_cv: np.ndarray) -> np.ndarray:
    n = normal_cv / np.linalg.norm(normal_cv)
    n = -n if n[2] > 0 else n  # facing the camera: against the +Z (forward) axis
    return conv.convert(n[None].astype(np.float32), "opencv", "opengl")[0]


def test_normals_from_depth_of_a_plane_with_an_occluder() -> None:
    plane = np.array([0.3, -0.4, 1.0])
    depth = plane_depth(plane, 4.0)
    depth[6:14, 10:20] = 1.5  # a fronto-parallel card in front
    depth[0, 0] = 0.0  # unknown
    n = normals_from_depth(depth, K)
    valid = np.linalg.norm(n, axis=-1) > 0.5
    assert valid.mean() > 0.95 and not valid[0, 0]
    card = np.zeros((H, W), bool)
    card[6:14, 10:20] = True
    assert angular_error(n[valid & ~card], expected_gl(plane)).max() < 0.01
    assert angular_error(n[valid & card], np.array([0, 0, 1.0])).max() < 0.01


def write_sintel_file(path: Path, header: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.array([TAG], np.float32).tofile(f)
        for arr in header:
            arr.tofile(f)


def test_mpi_sintel_layout(tmp_path: Path) -> None:
    train = tmp_path / "MPI-Sintel-complete" / "training"
    planes = [np.array([0.1 * f, -0.5, 1.0]) for f in range(1, 4)]
    flows = []
    for f in range(1, 4):
        stem = f"frame_{f:04d}"
        write_rgb(train / "final" / "alley_1" / f"{stem}.png")
        write_rgb(train / "clean" / "alley_1" / f"{stem}.png")
        write_sintel_file(train / "depth" / "alley_1" / f"{stem}.dpt",
                          [np.array([W, H], np.int32), plane_depth(planes[f - 1], 3.0).astype(np.float32)])
        write_sintel_file(train / "camdata_left" / "alley_1" / f"{stem}.cam", [K.astype(np.float64), np.eye(3, 4)])
        if f < 3:
            flow = np.random.default_rng(f).normal(size=(H, W, 2)).astype(np.float32)
            flows.append(flow)
            write_sintel_file(train / "flow" / "alley_1" / f"{stem}.flo", [np.array([W, H], np.int32), flow])
            occ = np.zeros((H, W), np.uint8)
            occ[:3] = 255
            (train / "occlusions" / "alley_1").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(train / "occlusions" / "alley_1" / f"{stem}.png"), occ)
    clips = open_benchmark("sintel", tmp_path / "MPI-Sintel-complete", sintel_pass="clean")
    assert [c.name for c in clips] == ["alley_1"] and clips[0].frames == [1, 2, 3]
    c = clips[0]
    for i in range(3):
        n = c.read_normal(i)
        assert angular_error(n[np.linalg.norm(n, axis=-1) > 0.5], expected_gl(planes[i])).max() < 0.01
        assert c.read_rgb(i).shape == (H, W, 3)
    for i in range(2):
        got = c.read_flow(i)
        assert np.isnan(got[:3]).all()
        np.testing.assert_array_equal(got[3:], flows[i][3:])
    # depth missing: a clear message
    (train / "depth").rename(train / "depth_elsewhere")
    with pytest.raises(NormalCrafterError, match="MPI-Sintel-depth-training"):
        open_benchmark("sintel", tmp_path / "MPI-Sintel-complete")


def test_scannet_sens_export_layout(tmp_path: Path) -> None:
    scene = tmp_path / "scans" / "scene0000_00"
    planes = {}
    for f in range(5):
        write_rgb(scene / "color" / f"{f}.jpg", size=(2 * H, 2 * W))  # the colour camera is larger
        planes[f] = np.array([0.2, -0.6 + 0.1 * f, 1.0])
        depth_mm = np.round(plane_depth(planes[f], 2.0) * 1000).astype(np.uint16)
        (scene / "depth").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(scene / "depth" / f"{f}.png"), depth_mm)
    (scene / "intrinsic").mkdir()
    k4 = np.eye(4)
    k4[:3, :3] = K
    np.savetxt(scene / "intrinsic" / "intrinsic_depth.txt", k4)
    clips = open_benchmark("scannet", tmp_path, scannet_step=2, max_frames=2)
    assert [c.name for c in clips] == ["scene0000_00"] and clips[0].frames == [0, 2]
    c = clips[0]
    for i, f in enumerate(c.frames):
        n = c.read_normal(i)
        valid = np.linalg.norm(n, axis=-1) > 0.5
        assert valid.mean() > 0.8
        assert np.median(angular_error(n[valid], expected_gl(planes[f]))) < 1.0  # millimetre steps add noise
        assert c.read_rgb(i).shape == (H, W, 3)  # colour resized to the depth size
    assert c.is_sequence and c.read_flow is None
