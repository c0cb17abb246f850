"""Accuracy metrics, normal-map files, conventions and frame pairing, on hand-made cases."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest

from normalcrafter import convention as conv
from normalcrafter.cli import main
from normalcrafter.errors import NormalCrafterError
from normalcrafter.evaluation import Clip, ErrorStats, angular_error, evaluate, open_normal_clips, read_normal_file
from normalcrafter.evaluation.clips import pair_frames


def random_normals(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    n = np.random.default_rng(seed).normal(size=(*shape, 3))
    n[..., 2] = np.abs(n[..., 2]) + 0.2  # facing the camera, like real normals
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def rotation(axis: np.ndarray, deg: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.deg2rad(deg)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def clip_of(frames: list[np.ndarray], name: str = "c", numbers: list[int] | None = None, **kw) -> Clip:
    return Clip(name=name, frames=numbers or list(range(len(frames))), read_normal=lambda i: frames[i], **kw)


def write_exr(path: Path, n: np.ndarray, names: str = "N.X N.Y N.Z", convention: str | None = None,
              dtype=np.float16) -> None:
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    if convention:
        header["normalcrafter_convention"] = convention
    chans = {c: np.ascontiguousarray(n[:, :, i], dtype=dtype) for i, c in enumerate(names.split())}
    with OpenEXR.File(header, chans) as f:
        f.write(str(path))


def test_identical_normals_give_zero() -> None:
    n = random_normals((2, 24, 32))
    report = evaluate([clip_of(list(n))], [clip_of(list(n))], flow="none")
    o = report["overall"]
    assert o["pixels"] == 2 * 24 * 32
    assert o["mean"] == 0.0 and o["median"] < 1e-3 and o["rmse"] == 0.0
    assert o["within_5"] == o["within_11.25"] == o["within_30"] == 100.0


@pytest.mark.parametrize("deg", [0.01, 3.0, 10.0, 25.0, 90.0, 170.0])
def test_a_known_rotation_gives_its_angle(deg: float) -> None:
    gt = random_normals((20, 30), seed=1)
    axis = np.cross(gt, [0.3, -0.5, 0.8])  # an axis perpendicular to each normal: the angle is exactly deg
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    a = np.deg2rad(deg)
    pred = gt * np.cos(a) + np.cross(axis, gt) * np.sin(a)
    err = angular_error(pred, gt)
    np.testing.assert_allclose(err, deg, atol=1e-5)
    o = evaluate([clip_of([pred.astype(np.float32)])], [clip_of([gt])], flow="none")["overall"]
    assert o["mean"] == pytest.approx(deg, abs=1e-4)
    assert o["median"] == pytest.approx(deg, abs=1e-3)
    assert o["within_11.25"] == (100.0 if deg < 11.25 else 0.0)
    assert o["within_30"] == (100.0 if deg < 30 else 0.0)


def test_a_global_rotation_and_unnormalised_vectors() -> None:
    gt = np.tile(np.array([0.0, 0.0, 1.0], dtype=np.float32), (8, 8, 1))
    pred = 3.7 * gt @ rotation([1, 0, 0], 12.0).T.astype(np.float32)  # length must not matter
    assert angular_error(pred, gt) == pytest.approx(np.full((8, 8), 12.0), abs=1e-5)


def test_masks_are_respected() -> None:
    gt = random_normals((16, 16), seed=2)
    pred = gt.copy()
    gt[:4] = 0.0  # invalid: zero length
    gt[4:6, :, 0] = np.nan  # invalid: not finite
    gt[6, :] *= 0.4  # invalid: shorter than 0.5
    pred[:7] = -pred[:7]  # garbage where the ground truth is invalid: must not count
    user_mask = np.ones((16, 16), bool)
    user_mask[:, :8] = False
    pred[:, :8] = [1.0, 0.0, 0.0]  # garbage outside the user's mask
    gt_clip = clip_of([gt], read_mask=lambda i: user_mask)
    o = evaluate([clip_of([pred])], [gt_clip], flow="none")["overall"]
    assert o["pixels"] == (16 - 7) * 8
    assert o["mean"] == 0.0
    # Without the mask the garbage counts.
    o2 = evaluate([clip_of([pred])], [clip_of([gt])], flow="none")["overall"]
    assert o2["pixels"] == (16 - 7) * 16 and o2["mean"] > 10


def test_zero_and_nan_predictions_count_as_ninety_degrees() -> None:
    gt = np.tile(np.array([0.0, 0.0, 1.0], dtype=np.float32), (2, 2, 1))
    pred = gt.copy()
    pred[0, 0] = 0.0
    pred[0, 1] = np.nan
    np.testing.assert_allclose(angular_error(pred, gt), [[90.0, 90.0], [0.0, 0.0]])


def test_overall_is_pooled_over_pixels_not_averaged_over_clips() -> None:
    gt_a, gt_b = random_normals((10, 10), 3), random_normals((30, 10), 4)
    r = rotation([0, 1, 0], 10.0).astype(np.float32)
    report = evaluate([clip_of([gt_a @ r.T], "a"), clip_of([gt_b], "b")], [clip_of([gt_a], "a"), clip_of([gt_b], "b")],
                      flow="none")
    errs = np.concatenate([angular_error(gt_a @ r.T, gt_a).ravel(), np.zeros(300)])
    assert report["overall"]["mean"] == pytest.approx(errs.mean(), rel=1e-9)
    assert report["overall"]["median"] == pytest.approx(np.median(errs), abs=1e-3)
    assert [c["name"] for c in report["clips"]] == ["a", "b"]


def test_median_matches_numpy_to_a_thousandth_of_a_degree() -> None:
    e = np.random.default_rng(5).gamma(2.0, 8.0, 100_001)
    s = ErrorStats()
    s.add(e[:50_000])
    s.add(e[50_000:])
    assert s.median() == pytest.approx(np.median(e), abs=1e-3)
    summary = s.summary()
    assert summary["mean"] == pytest.approx(e.mean())
    assert summary["within_22.5"] == pytest.approx(100 * np.mean(e < 22.5))


@pytest.mark.parametrize("code", ["opencv", "RDF", "LUB", "DRB", "FLU"])
def test_convention_flips_are_undone(tmp_path: Path, code: str) -> None:
    gt = random_normals((3, 12, 16), seed=6)
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    for f in range(3):
        write_exr(tmp_path / "pred" / f"normal.{f:05d}.exr", conv.convert(gt[f], "opengl", code), convention=code,
                  dtype=np.float32)
        write_exr(tmp_path / "gt" / f"normal.{f:05d}.exr", gt[f], convention="opengl", dtype=np.float32)
    preds, warnings = open_normal_clips(tmp_path / "pred")
    gts, _ = open_normal_clips(tmp_path / "gt")
    assert not warnings
    report = evaluate(preds, gts, flow="none")
    assert report["overall"]["mean"] < 1e-4
    assert report["clips"][0]["prediction"]["conventions"] == [conv.canonical(code)]
    # Stating the wrong convention by hand overrides the header, and shows.
    wrong, _ = open_normal_clips(tmp_path / "pred", convention="opengl")
    assert evaluate(wrong, gts, flow="none")["overall"]["mean"] > 30


def test_npy_clip_needs_a_stated_convention_or_warns(tmp_path: Path) -> None:
    gt = random_normals((4, 8, 8), seed=7)
    np.save(tmp_path / "pred.npy", conv.convert(gt, "opengl", "opencv"))
    preds, warnings = open_normal_clips(tmp_path / "pred.npy")
    assert warnings and "assuming opengl" in warnings[0]
    gts = [clip_of(list(gt))]
    assert evaluate(preds, gts, flow="none")["overall"]["mean"] > 90
    preds, warnings = open_normal_clips(tmp_path / "pred.npy", convention="opencv")
    assert not warnings
    assert evaluate(preds, gts, flow="none")["overall"]["mean"] < 1e-4


def test_file_formats(tmp_path: Path) -> None:
    n = random_normals((10, 12), seed=8)
    n[0, 0] = 0.0
    # 16-bit PNG, (n+1)/2
    png16 = np.clip((n + 1) / 2 * 65535 + 0.5, 0, 65535).astype(np.uint16)
    png16[0, 0] = 0  # black: invalid
    cv2.imwrite(str(tmp_path / "a.png"), png16[:, :, ::-1])
    got, stated = read_normal_file(tmp_path / "a.png")
    assert stated is None
    assert np.all(got[0, 0] == 0)
    assert angular_error(got[1:], n[1:]).max() < 0.01
    # 8-bit PNG (the DSINE benchmark files)
    cv2.imwrite(str(tmp_path / "b.png"), np.clip((n + 1) / 2 * 255 + 0.5, 0, 255).astype(np.uint8)[:, :, ::-1])
    assert angular_error(read_normal_file(tmp_path / "b.png")[0][1:], n[1:]).max() < 1.0
    # EXR with R/G/B channels, and Blender's multilayer pass names
    write_exr(tmp_path / "c.exr", n, "R G B", dtype=np.float32)
    write_exr(tmp_path / "d.exr", n, "ViewLayer.Normal.X ViewLayer.Normal.Y ViewLayer.Normal.Z", dtype=np.float32)
    for name in ("c.exr", "d.exr"):
        got, _ = read_normal_file(tmp_path / name)
        np.testing.assert_array_equal(got, n)
    # npy frame
    np.save(tmp_path / "e.npy", n)
    np.testing.assert_array_equal(read_normal_file(tmp_path / "e.npy")[0], n)


def test_bad_files_give_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "x.exr").write_bytes(b"not an exr")
    with pytest.raises(NormalCrafterError) as e:
        read_normal_file(tmp_path / "x.exr")
    assert e.value.code == "input_unreadable" and "\n" not in e.value.message
    write_exr(tmp_path / "y.exr", np.zeros((4, 4, 2), np.float32), "U V")
    with pytest.raises(NormalCrafterError, match="no normal channels"):
        read_normal_file(tmp_path / "y.exr")
    with pytest.raises(NormalCrafterError, match="no such file"):
        open_normal_clips(tmp_path / "missing")
    with pytest.raises(NormalCrafterError, match="unknown axis convention"):
        open_normal_clips(tmp_path, convention="RUX")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NormalCrafterError, match="no normal maps"):
        open_normal_clips(tmp_path / "empty")


def test_folder_of_clip_folders_pairs_by_name(tmp_path: Path) -> None:
    gt = random_normals((2, 8, 8), seed=9)
    for side in ("pred", "gt"):
        for clip in ("alley_1", "market_2"):
            (tmp_path / side / clip).mkdir(parents=True)
            for f in (1, 2):
                np.save(tmp_path / side / clip / f"frame_{f:04d}.npy", gt[f - 1] if clip == "alley_1" else -gt[f - 1])
    preds, _ = open_normal_clips(tmp_path / "pred", "opengl")
    gts, _ = open_normal_clips(tmp_path / "gt", "opengl")
    report = evaluate(preds[::-1], gts, flow="none")
    assert [c["name"] for c in report["clips"]] == ["market_2", "alley_1"]
    assert all(c["mean"] == 0.0 and c["first_frame"] == 1 for c in report["clips"])
    with pytest.raises(NormalCrafterError, match="without ground truth: market_2"):
        evaluate(preds, gts[:1] + [clip_of([gt[0]], "other")], flow="none")


def test_frame_pairing() -> None:
    gt = clip_of([np.zeros((2, 2, 3))] * 5, numbers=[10, 11, 12, 13, 14])
    sub = pair_frames(clip_of([np.zeros((2, 2, 3))] * 2, numbers=[11, 13]), gt)
    assert sub.gt_pos == [1, 3] and not sub.by_order
    ordered = pair_frames(clip_of([np.zeros((2, 2, 3))] * 5, numbers=[0, 1, 2, 3, 4]), gt)
    assert ordered.by_order and ordered.frames == [10, 11, 12, 13, 14]
    with pytest.raises(NormalCrafterError, match="have no ground truth"):
        pair_frames(clip_of([np.zeros((2, 2, 3))] * 2, numbers=[13, 15]), gt)


def test_prediction_is_resized_to_the_ground_truth() -> None:
    gt = np.tile(np.array([0.0, 0.6, 0.8], dtype=np.float32), (32, 48, 1))
    pred = np.tile(np.array([0.0, 0.6, 0.8], dtype=np.float32), (16, 24, 1))
    report = evaluate([clip_of([pred])], [clip_of([gt])], flow="none")
    assert report["overall"]["pixels"] == 32 * 48 and report["overall"]["mean"] < 1e-4
    assert report["clips"][0]["prediction_resized"] and "resized" in report["warnings"][0]


def test_eval_command_errors(tmp_path: Path, capsys) -> None:
    assert main(["eval", str(tmp_path / "nothing"), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("normalcrafter eval: error:") and "\n" not in err
    (tmp_path / "p").mkdir()
    np.save(tmp_path / "p" / "x.npy", np.zeros((1, 8, 8, 3), np.float32))
    assert main(["eval", str(tmp_path / "p" / "x.npy"), str(tmp_path / "p" / "x.npy"), "--pred-convention", "XYZ",
                 "--out", str(tmp_path / "o")]) == 2
    assert "unknown axis convention" in capsys.readouterr().err
    (tmp_path / "dsine" / "scene0001_00").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "dsine" / "scene0001_00" / "000000_img.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "dsine" / "scene0001_00" / "000000_normal.png"), np.zeros((8, 8, 3), np.uint8))
    assert main(["eval", str(tmp_path / "p" / "x.npy"), str(tmp_path / "dsine"), "--out", str(tmp_path / "o")]) == 2
    assert "pass --benchmark" in capsys.readouterr().err
