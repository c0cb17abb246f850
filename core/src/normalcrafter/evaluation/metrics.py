"""Angular-error metrics of the DSINE protocol (Bae & Davison, CVPR 2024).

Per valid ground-truth pixel, the error is the angle between the unit
prediction and the unit ground truth. Statistics are pooled over all valid
pixels of a clip (per-clip numbers) and of the whole set (overall numbers),
exactly as DSINE concatenates its errors before taking the mean and median.

To keep memory flat on long sequences, errors are accumulated as exact sums
and counts plus a histogram of 0.001-degree bins for the median (so the
median is exact to 0.001 degrees).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

THRESHOLDS = (5.0, 7.5, 11.25, 22.5, 30.0)
BIN_DEG = 1e-3
_NBINS = int(round(180.0 / BIN_DEG)) + 1


def unit(v: np.ndarray) -> np.ndarray:
    """Normalise (..., 3) vectors; zero vectors stay zero."""
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


def valid_mask(normals: np.ndarray) -> np.ndarray:
    """Valid ground truth: finite and of length over 0.5 (DSINE's rule for
    float maps; decoders give invalid pixels length 0)."""
    n = np.linalg.norm(np.nan_to_num(normals, nan=0.0, posinf=0.0, neginf=0.0), axis=-1)
    return np.isfinite(normals).all(axis=-1) & (n > 0.5)


def angular_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Angle in degrees between (..., 3) vectors, computed as
    atan2(|a x b|, a . b) so that small angles stay accurate (an arccos of a
    float32 dot product cannot resolve angles under about 0.03 degrees).
    A zero or non-finite vector has no direction and counts as 90 degrees
    off, as in DSINE (a normalised zero vector has a dot product of 0)."""
    a = unit(np.nan_to_num(pred, nan=0.0, posinf=0.0, neginf=0.0))
    b = unit(np.nan_to_num(gt, nan=0.0, posinf=0.0, neginf=0.0))
    angle = np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1)))
    undefined = ~(np.any(a != 0, axis=-1) & np.any(b != 0, axis=-1))
    return np.where(undefined, 90.0, angle)


@dataclass
class ErrorStats:
    """Running statistics of angular errors (degrees)."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    within: np.ndarray = field(default_factory=lambda: np.zeros(len(THRESHOLDS), dtype=np.int64))
    hist: np.ndarray = field(default_factory=lambda: np.zeros(_NBINS, dtype=np.int64))

    def add(self, errors_deg: np.ndarray) -> None:
        e = np.asarray(errors_deg, dtype=np.float64).ravel()
        self.count += e.size
        self.total += float(e.sum())
        self.total_sq += float(np.square(e).sum())
        self.within += np.array([np.count_nonzero(e < t) for t in THRESHOLDS], dtype=np.int64)
        self.hist += np.bincount(np.clip((e / BIN_DEG).astype(np.int64), 0, _NBINS - 1), minlength=_NBINS)

    def merge(self, other: ErrorStats) -> None:
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq
        self.within += other.within
        self.hist += other.hist

    def median(self) -> float:
        """The median, interpolated inside its 0.001-degree bin."""
        if self.count == 0:
            return float("nan")
        half = self.count / 2.0
        cum = np.cumsum(self.hist)
        b = int(np.searchsorted(cum, half))
        before = cum[b - 1] if b > 0 else 0
        return (b + (half - before) / max(self.hist[b], 1)) * BIN_DEG

    def summary(self) -> dict[str, float | int]:
        """mean, median, rmse (degrees) and the percentage of pixels under each threshold."""
        if self.count == 0:
            nan = float("nan")
            return {"pixels": 0, "mean": nan, "median": nan, "rmse": nan, **{_key(t): nan for t in THRESHOLDS}}
        out: dict[str, float | int] = {
            "pixels": self.count,
            "mean": self.total / self.count,
            "median": self.median(),
            "rmse": float(np.sqrt(self.total_sq / self.count)),
        }
        out.update({_key(t): 100.0 * float(w) / self.count for t, w in zip(THRESHOLDS, self.within)})
        return out


def _key(threshold: float) -> str:
    return f"within_{threshold:g}"
