"""Pictures of an evaluation, drawn with numpy and OpenCV.

* Contact sheet: one row per sampled frame (input, prediction, ground truth,
  angular-error heat map), with a colour bar for the error scale.
* Temporal profile (the paper's y-t slice): one fixed image column stacked
  over time, for the input, the prediction and the ground truth side by side;
  flicker shows up as vertical streaks, real motion as slanted structure.

Normals are shown in the OpenGL convention as ``(n + 1) / 2`` (the usual
colours: a surface facing the camera is lilac-blue), invalid ground truth black,
predictions by their direction.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write_bytes
from .metrics import unit

MAX_ERR_DEG = 45.0
TILE_MAX_W = 320
PROFILE_MIN_W = 160
LABEL_H = 22
BG = (32, 32, 32)


@dataclass
class SheetRow:
    frame: int
    rgb: np.ndarray | None  # (H, W, 3) uint8
    pred: np.ndarray  # (H, W, 3) float32, OpenGL
    gt: np.ndarray
    error: np.ndarray  # (H, W) degrees, NaN where not evaluated


def normals_to_rgb(n: np.ndarray, ground_truth: bool = True) -> np.ndarray:
    """Ground truth is black where invalid (length < 0.5); a prediction is
    drawn by its direction whatever its length, black only where it has none."""
    n = np.nan_to_num(n, nan=0.0, posinf=0.0, neginf=0.0)
    length = np.linalg.norm(n, axis=-1)
    valid = length > (0.5 if ground_truth else 0.0)
    if not ground_truth:
        n = unit(n)
    img = np.clip((n + 1.0) * 0.5 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    img[~valid] = 0
    return img


def error_to_rgb(err: np.ndarray, max_err: float = MAX_ERR_DEG) -> np.ndarray:
    import cv2

    scaled = np.clip(np.nan_to_num(err, nan=0.0) / max_err * 255.0, 0, 255).astype(np.uint8)
    img = cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)[:, :, ::-1].copy()
    img[~np.isfinite(err)] = 0
    return img


def _label(img: np.ndarray, text: str, height: int = LABEL_H) -> np.ndarray:
    """``img`` with a strip of text above it."""
    import cv2

    strip = np.full((height, img.shape[1], 3), BG, dtype=np.uint8)
    scale = 0.45
    cv2.putText(strip, text, (4, height - 7), cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return np.vstack([strip, img])


def _fit(img: np.ndarray, width: int, height: int, nearest: bool = False) -> np.ndarray:
    import cv2

    if img.shape[:2] == (height, width):
        return img
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(img, (width, height), interpolation=interp)


def _colorbar(width: int, max_err: float) -> np.ndarray:
    import cv2

    ramp = np.tile(np.linspace(0, max_err, width)[None, :], (12, 1))
    bar = error_to_rgb(ramp, max_err)
    strip = np.full((18, width, 3), BG, dtype=np.uint8)
    for deg in np.arange(0, max_err + 1e-6, 15):
        x = int(round(deg / max_err * (width - 1)))
        text = f"{deg:g} deg"
        x = min(max(x - 10, 2), width - 48)
        cv2.putText(strip, text, (x, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (235, 235, 235), 1, cv2.LINE_AA)
    return np.vstack([bar, strip])


def contact_sheet(rows: list[SheetRow], title: str, max_err: float = MAX_ERR_DEG) -> np.ndarray:
    """(H, W, 3) uint8 RGB picture."""
    h, w = rows[0].gt.shape[:2]
    tw = min(w, TILE_MAX_W)
    th = max(1, round(h * tw / w))
    lines = []
    for r in rows:
        mean = float(np.nanmean(r.error)) if np.isfinite(r.error).any() else float("nan")
        tiles = [
            _label(_fit(r.rgb, tw, th) if r.rgb is not None else np.zeros((th, tw, 3), np.uint8), f"input #{r.frame}"),
            _label(_fit(normals_to_rgb(r.pred, ground_truth=False), tw, th, True), "prediction"),
            _label(_fit(normals_to_rgb(r.gt), tw, th, True), "ground truth"),
            _label(_fit(error_to_rgb(r.error, max_err), tw, th, True), f"error, mean {mean:.1f} deg"),
        ]
        lines.append(np.hstack(tiles))
    sheet = np.vstack(lines)
    bar = _colorbar(min(sheet.shape[1], 4 * tw), max_err)
    pad = np.full((bar.shape[0], sheet.shape[1] - bar.shape[1], 3), BG, dtype=np.uint8)
    return _label(np.vstack([sheet, np.hstack([bar, pad])]), title)


def temporal_profile(pred_cols: np.ndarray, gt_cols: np.ndarray, rgb_cols: np.ndarray | None, column: int,
                     title: str) -> np.ndarray:
    """y-t slices: ``*_cols`` are (F, H, 3), image column ``column`` of each
    frame; time runs left to right, each frame a few pixels wide."""
    f, h = pred_cols.shape[:2]
    px = max(1, min(32, -(-PROFILE_MIN_W // max(f, 1))))  # short clips get wider frame strips, to stay legible

    def panel(cols: np.ndarray) -> np.ndarray:
        img = np.transpose(cols, (1, 0, 2))  # (H, F, 3): row y, column t
        return np.repeat(img, px, axis=1)

    panels = []
    if rgb_cols is not None:
        panels.append(_label(panel(rgb_cols), "input"))
    panels.append(_label(panel(normals_to_rgb(pred_cols, ground_truth=False)), "prediction"))
    panels.append(_label(panel(normals_to_rgb(gt_cols)), "ground truth"))
    gap = np.full((panels[0].shape[0], 6, 3), BG, dtype=np.uint8)
    body = panels[0]
    for p in panels[1:]:
        body = np.hstack([body, gap, p])
    return _label(body, f"{title}: column x={column}, time ->")


def save_png(path: Path, rgb: np.ndarray) -> Path:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, buf.tobytes())
