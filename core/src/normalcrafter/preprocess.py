"""Frame preparation: downscale to a maximum size, white padding to the UNet's
multiple of 64, and the exact inverse crop."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_MULTIPLE = 64


@dataclass(frozen=True)
class Padding:
    top: int
    bottom: int
    left: int
    right: int

    @property
    def is_zero(self) -> bool:
        return not (self.top or self.bottom or self.left or self.right)


def padding_for(height: int, width: int, multiple: int = PAD_MULTIPLE) -> Padding:
    """Centred padding up to a multiple; the odd pixel goes to the bottom/right,
    as in the release."""
    def split(size: int) -> tuple[int, int]:
        total = -size % multiple
        return total // 2, total - total // 2

    top, bottom = split(height)
    left, right = split(width)
    return Padding(top, bottom, left, right)


def pad_frame(frame: np.ndarray, pad: Padding) -> np.ndarray:
    """Pad an (H, W, 3) uint8 frame with white."""
    if pad.is_zero:
        return frame
    return np.pad(frame, ((pad.top, pad.bottom), (pad.left, pad.right), (0, 0)), constant_values=255)


def unpad(array, pad: Padding):
    """Crop padding off the last two axes of an (..., H, W) array or tensor."""
    h, w = array.shape[-2:]
    return array[..., pad.top : h - pad.bottom, pad.left : w - pad.right]


def fit_size(height: int, width: int, max_res: int) -> tuple[int, int]:
    """Size with the longest side at most ``max_res``, aspect kept."""
    if max_res <= 0 or max(height, width) <= max_res:
        return height, width
    scale = max_res / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_rgb8(frame: np.ndarray) -> np.ndarray:
    """Any decoded frame (gray, RGB, RGBA; uint8, uint16 or float) to (H, W, 3) uint8 RGB.

    Alpha is dropped (composited on nothing: the colour is kept as stored);
    float input is taken as display-referred 0..1.
    """
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported frame shape {frame.shape}")
    if frame.shape[2] in (1, 2):
        frame = np.repeat(frame[:, :, :1], 3, axis=2)
    frame = frame[:, :, :3]
    if frame.dtype == np.uint8:
        return np.ascontiguousarray(frame)
    if frame.dtype == np.uint16:
        return (frame.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if np.issubdtype(frame.dtype, np.floating):
        f = np.nan_to_num(frame.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return (np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {frame.dtype}")


def resize_frame(frame: np.ndarray, max_res: int) -> np.ndarray:
    h, w = frame.shape[:2]
    nh, nw = fit_size(h, w, max_res)
    if (nh, nw) == (h, w):
        return frame
    import cv2  # imported here so GPU-only environments need no OpenCV

    return cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
