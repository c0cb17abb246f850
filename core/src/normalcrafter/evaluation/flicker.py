"""Temporal stability: flicker measured along optical flow, compensated for real motion.

For consecutive frames t, t+1 and forward flow f (frame t -> t+1), let
W[X](x) = X_{t+1}(x + f(x)) be frame t+1 sampled where pixel x of frame t
went (bilinear, renormalised). With prediction P and ground truth G (unit
camera-space normals):

    Q_x      = the smallest rotation taking G_t(x) to W[G](x)  (the true change)
    e(x)     = angle( W[P](x), Q_x P_t(x) )                     (the flicker)

``flicker`` is the mean of e over all valid pixels of all frame pairs. It is
0 for a correct prediction whatever the camera or objects do (camera-space
normals of a turning camera change, and Q_x follows them), 0 for a
prediction that is wrong by a constant amount, and it grows with any change
the ground truth does not have, in any direction. ``pred_change`` and
``gt_change`` (means of angle(P_t, W[P]) and angle(G_t, W[G])) are reported
next to it for context.

A pixel counts when the flow is known there (not NaN; estimated flow must
also pass a forward-backward check), it lands inside frame t+1, the ground
truth is valid at x and at the four pixels around its landing spot, and those
four differ by at most ``EDGE_DEG`` (bilinear sampling across a crease or an
occluding edge would mix two surfaces).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import angular_error, unit, valid_mask

FLOW_METHODS = ("dis", "farneback")
EDGE_DEG = 20.0


def estimate_flow(rgb_a: np.ndarray, rgb_b: np.ndarray, method: str = "dis") -> np.ndarray:
    """Forward flow a -> b (H, W, 2) from OpenCV, NaN where a forward-backward
    check fails (occlusions, unreliable matches)."""
    import cv2

    ga = cv2.cvtColor(np.ascontiguousarray(rgb_a), cv2.COLOR_RGB2GRAY)
    gb = cv2.cvtColor(np.ascontiguousarray(rgb_b), cv2.COLOR_RGB2GRAY)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        fw, bw = dis.calc(ga, gb, None), dis.calc(gb, ga, None)
    elif method == "farneback":
        args = (None, 0.5, 4, 15, 3, 5, 1.2, 0)
        fw, bw = cv2.calcOpticalFlowFarneback(ga, gb, *args), cv2.calcOpticalFlowFarneback(gb, ga, *args)
    else:
        raise ValueError(f"unknown flow method {method!r}: choose {', '.join(FLOW_METHODS)}")
    bw_at, inside = _sample(bw, fw)
    # Sundaram et al. (ECCV 2010): forward and backward flow must cancel out.
    sq = np.sum((fw + bw_at) ** 2, axis=-1)
    ok = inside & (sq < 0.01 * (np.sum(fw**2, axis=-1) + np.sum(bw_at**2, axis=-1)) + 0.5)
    fw = fw.astype(np.float32)
    fw[~ok] = np.nan
    return fw


def _sample(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (H, W, C) sampled bilinearly at x + flow(x); also whether the
    spot lies inside the picture (and the flow is finite)."""
    import cv2

    h, w = flow.shape[:2]
    j, i = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx = (j + flow[..., 0]).astype(np.float32)
    my = (i + flow[..., 1]).astype(np.float32)
    inside = np.isfinite(mx) & np.isfinite(my) & (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    mx[~inside], my[~inside] = 0, 0
    out = cv2.remap(np.ascontiguousarray(image, dtype=np.float32), mx, my, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(image.shape), inside


def _smooth_landing(gt_next: np.ndarray, flow: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """True where the four ground-truth pixels around each landing spot are all
    valid and within EDGE_DEG of each other."""
    h, w = flow.shape[:2]
    j, i = np.meshgrid(np.arange(w), np.arange(h))
    x = np.where(inside, j + np.nan_to_num(flow[..., 0]), 0)
    y = np.where(inside, i + np.nan_to_num(flow[..., 1]), 0)
    x0 = np.clip(np.floor(x).astype(int), 0, w - 1)
    y0 = np.clip(np.floor(y).astype(int), 0, h - 1)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    corners = [gt_next[y0, x0], gt_next[y0, x1], gt_next[y1, x0], gt_next[y1, x1]]
    ok = inside.copy()
    for c in corners:
        ok &= valid_mask(c)
    for a in range(4):
        for b in range(a + 1, 4):
            ok &= angular_error(corners[a], corners[b]) <= EDGE_DEG
    return ok


def rotate_like(v: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply to ``v`` the smallest rotation taking unit ``a`` to unit ``b``
    (per pixel); also where that rotation is defined (a, b not opposite)."""
    c = np.sum(a * b, axis=-1, keepdims=True)
    w = np.cross(a, b)
    ok = (c[..., 0] > -1.0 + 1e-6)
    denom = np.where(ok[..., None], 1.0 + c, 1.0)
    out = c * v + np.cross(w, v) + w * np.sum(w * v, axis=-1, keepdims=True) / denom
    return out, ok


@dataclass
class PairFlicker:
    pixels: int
    flicker: float  # sums over the pair's valid pixels (degrees)
    pred_change: float
    gt_change: float


def pair_flicker(pred_t: np.ndarray, pred_next: np.ndarray, gt_t: np.ndarray, gt_next: np.ndarray,
                 flow: np.ndarray, mask: np.ndarray | None = None) -> PairFlicker:
    """Sums of the flicker terms over the valid pixels of one frame pair."""
    pred_w, inside = _sample(pred_next, flow)
    gt_w, _ = _sample(gt_next, flow)
    ok = inside & valid_mask(gt_t) & _smooth_landing(gt_next, flow, inside)
    if mask is not None:
        ok &= mask
    g0, g1 = unit(gt_t[ok]), unit(gt_w[ok])
    p0, p1 = unit(pred_t[ok]), unit(pred_w[ok])
    expected, defined = rotate_like(p0, g0, g1)
    e = angular_error(p1[defined], expected[defined])
    return PairFlicker(
        pixels=int(defined.sum()),
        flicker=float(e.sum()),
        pred_change=float(angular_error(p0[defined], p1[defined]).sum()),
        gt_change=float(angular_error(g0[defined], g1[defined]).sum()),
    )


@dataclass
class FlickerStats:
    pixels: int = 0
    pairs: int = 0
    flicker: float = 0.0
    pred_change: float = 0.0
    gt_change: float = 0.0

    def add(self, pair: PairFlicker) -> None:
        self.pairs += 1
        self.pixels += pair.pixels
        self.flicker += pair.flicker
        self.pred_change += pair.pred_change
        self.gt_change += pair.gt_change

    def merge(self, other: FlickerStats) -> None:
        self.pairs += other.pairs
        self.pixels += other.pixels
        self.flicker += other.flicker
        self.pred_change += other.pred_change
        self.gt_change += other.gt_change

    def summary(self) -> dict[str, float | int]:
        n = self.pixels
        nan = float("nan")
        return {
            "pairs": self.pairs,
            "pixels": n,
            "flicker": self.flicker / n if n else nan,
            "pred_change": self.pred_change / n if n else nan,
            "gt_change": self.gt_change / n if n else nan,
        }
