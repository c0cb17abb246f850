"""The motion-compensated flicker metric and the optical flow it uses."""
from __future__ import annotations

import numpy as np
import pytest

from normalcrafter.evaluation import Clip, InputFrames, evaluate
from normalcrafter.evaluation.flicker import estimate_flow, pair_flicker, rotate_like

H, W = 48, 64


def sphere_normals(cx: float = W / 2, cy: float = H / 2, r: float = 20.0) -> np.ndarray:
    """A sphere in front of a wall: smooth normals with an occluding edge."""
    j, i = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    x, y = (j - cx) / r, -(i - cy) / r
    inside = x**2 + y**2 < 1
    n = np.zeros((H, W, 3), np.float32)
    n[..., 2] = 1.0
    n[inside, 0], n[inside, 1] = x[inside], y[inside]
    n[inside, 2] = np.sqrt(1 - x[inside] ** 2 - y[inside] ** 2)
    return n


def texture(seed: int = 0) -> np.ndarray:
    import cv2

    noise = np.random.default_rng(seed).uniform(0, 255, (H * 2, W * 2, 3)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.5)


def noisy(n: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    m = n + rng.normal(0, sigma, n.shape).astype(np.float32)
    return m / np.linalg.norm(m, axis=-1, keepdims=True)


def clip(frames: list[np.ndarray], flows: list[np.ndarray] | None = None) -> Clip:
    return Clip("c", list(range(len(frames))), lambda i: frames[i],
                read_flow=(lambda i: flows[i]) if flows is not None else None)


ZERO = np.zeros((H, W, 2), np.float32)


def test_static_correct_sequence_has_zero_flicker() -> None:
    gt = [sphere_normals()] * 6
    report = evaluate([clip(gt)], [clip(gt, [ZERO] * 5)], flow="gt")
    fl = report["overall"]["flicker"]
    assert fl["pairs"] == 5 and fl["pixels"] > 0.8 * 5 * H * W
    assert fl["flicker"] < 1e-9 and fl["pred_change"] < 1e-9


def test_flicker_grows_with_injected_noise() -> None:
    gt = [sphere_normals()] * 6
    values = []
    for sigma in (0.0, 0.01, 0.03, 0.1):
        rng = np.random.default_rng(1)
        pred = [noisy(g, sigma, rng) for g in gt]
        values.append(evaluate([clip(pred)], [clip(gt, [ZERO] * 5)], flow="gt")["overall"]["flicker"]["flicker"])
    assert values[0] < 1e-5
    assert values[0] < values[1] < values[2] < values[3]
    assert 2.5 < values[3] / values[2] < 4.0  # roughly proportional to the noise


def test_constant_error_is_not_flicker() -> None:
    gt = [sphere_normals()] * 4
    pred = [np.roll(g, 5, axis=1) for g in gt]  # wrong, but identically wrong in every frame
    report = evaluate([clip(pred)], [clip(gt, [ZERO] * 3)], flow="gt")
    assert report["overall"]["mean"] > 5
    assert report["overall"]["flicker"]["flicker"] < 1e-5


def test_real_motion_is_not_punished_but_ignoring_it_is() -> None:
    """The sphere slides 2 px right per frame while the camera rolls 3 degrees per frame
    (camera-space normals turn with it). A prediction that follows has no flicker; one
    that stays frozen has about the true change as flicker."""
    frames, flows = [], []
    for t in range(5):
        n = sphere_normals(cx=W / 2 - 8 + 2 * t)
        a = np.deg2rad(3.0 * t)
        rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]], np.float32)
        frames.append(n @ rot.T)
    for _ in range(4):
        f = np.zeros((H, W, 2), np.float32)
        f[..., 0] = 2.0  # (flow of the wall and the sphere alike, for simplicity; the wall's normals are (0,0,1))
        flows.append(f)
    follow = evaluate([clip(frames)], [clip(frames, flows)], flow="gt")["overall"]["flicker"]
    assert follow["gt_change"] > 0.5
    assert follow["flicker"] < 1e-4 and follow["pred_change"] == pytest.approx(follow["gt_change"])
    frozen = evaluate([clip([frames[0]] * 5)], [clip(frames, flows)], flow="gt")["overall"]["flicker"]
    assert frozen["flicker"] > 0.5 * follow["gt_change"]


def test_rotate_like_is_the_smallest_rotation() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(100, 3))
    a /= np.linalg.norm(a, axis=-1, keepdims=True)
    b = rng.normal(size=(100, 3))
    b /= np.linalg.norm(b, axis=-1, keepdims=True)
    out, ok = rotate_like(a, a, b)
    assert ok.all()
    np.testing.assert_allclose(out, b, atol=1e-9)
    v = rng.normal(size=(100, 3))
    rv, _ = rotate_like(v, a, b)
    np.testing.assert_allclose(np.linalg.norm(rv, axis=-1), np.linalg.norm(v, axis=-1), rtol=1e-9)
    # the rotation axis a x b is left alone
    axis = np.cross(a, b)
    np.testing.assert_allclose(rotate_like(axis, a, b)[0], axis, atol=1e-9)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_estimated_flow_recovers_a_shift_and_flags_what_leaves_the_picture(method: str) -> None:
    big = texture()
    a = big[10:10 + H, 10:10 + W]
    b = big[10 - 1:10 - 1 + H, 10 - 3:10 - 3 + W]  # content moves 3 px right, 1 px down
    flow = estimate_flow(a, b, method)
    known = np.isfinite(flow[..., 0])
    centre = known[8:-8, 8:-8]
    assert centre.mean() > 0.9
    med = np.nanmedian(flow[8:-8, 8:-8].reshape(-1, 2), axis=0)
    np.testing.assert_allclose(med, [3.0, 1.0], atol=0.25)
    # The right-most columns move out of the picture: no flow there.
    assert not known[:, -2:].any()


def test_flicker_with_estimated_flow_from_input_frames() -> None:
    """With no ground-truth flow, DIS flow on the input frames carries the metric."""
    big = texture(3)
    rgb = [big[10:10 + H, 10 - 2 * t:10 - 2 * t + W] for t in range(4)]  # a pan: 2 px per frame
    gt = [np.roll(sphere_normals(), 2 * t, axis=1) for t in range(4)]  # normals move with the picture
    inputs = InputFrames(list(range(4)), lambda i: rgb[i])
    zero = evaluate([clip(gt)], [clip(gt)], rgb=inputs, flow="auto")
    assert zero["clips"][0]["flow"] == "dis"
    assert zero["overall"]["flicker"]["flicker"] < 0.05
    rng = np.random.default_rng(4)
    shaky = evaluate([clip([noisy(g, 0.05, rng) for g in gt])], [clip(gt)], rgb=inputs, flow="farneback")
    assert shaky["clips"][0]["flow"] == "farneback"
    assert shaky["overall"]["flicker"]["flicker"] > 2.0


def test_no_flow_and_no_frames_skips_flicker_with_a_warning() -> None:
    gt = [sphere_normals()] * 3
    report = evaluate([clip(gt)], [clip(gt)], flow="auto")
    assert report["overall"]["flicker"] is None and report["clips"][0]["flow"] == "none"
    assert "flicker skipped" in report["warnings"][0]


def test_pair_flicker_ignores_landing_spots_across_edges() -> None:
    gt = sphere_normals()
    flow = np.full((H, W, 2), 0.5, np.float32)  # half-pixel moves: bilinear mixes neighbours
    res = pair_flicker(gt, gt, gt, gt, flow)
    assert res.flicker == pytest.approx(0.0, abs=1e-6)
    # pixels next to the sphere's outline land between wall and sphere: excluded
    assert res.pixels < (H - 1) * (W - 1) - 2 * np.pi * 20 * 0.9
