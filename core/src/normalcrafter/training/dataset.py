"""Training data: clips on disk, and the on-the-fly synthetic source.

On-disk format (one folder per clip, any number of clips under a root)::

    <root>/<clip>/rgb/00000.png       8-bit RGB frames (.png or .jpg), sorted by name
    <root>/<clip>/normal/00000.png    normals: 16-bit PNG with value = round((n + 1) / 2 * 65535)
                                      per channel (R=X, G=Y, B=Z), or .npy float (H, W, 3) in [-1, 1]
    <root>/<clip>/clip.json           optional: {"convention": "opengl"} (default), any name or
                                      3-letter code of normalcrafter.convention

Normals are camera-space unit vectors; "opengl" = RUB (+X right, +Y up, +Z
toward the camera), as the bundled model predicts. A vector shorter than 0.5
(e.g. zero, stored as 32768 in all three 16-bit channels) marks a pixel
without ground truth (sky); losses in pixel space skip it. Frame i of rgb/ pairs with frame
i of normal/ (same count required).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .. import convention, errors
from ..errors import NormalCrafterError
from .synthetic import Clips, render_clips

RGB_SUFFIXES = (".png", ".jpg", ".jpeg")
NORMAL_SUFFIXES = (".png", ".npy")


def _cv2():
    import cv2

    return cv2


def _frames(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes) if folder.is_dir() else []


def read_normal(path: Path) -> np.ndarray:
    """(H, W, 3) float32 normals in [-1, 1] from a 16-bit PNG or an .npy file."""
    if path.suffix.lower() == ".npy":
        n = np.load(path, allow_pickle=False).astype(np.float32)
    else:
        raw = _cv2().imread(str(path), _cv2().IMREAD_UNCHANGED)
        if raw is None or raw.dtype != np.uint16 or raw.ndim != 3:
            raise NormalCrafterError(errors.INPUT_INVALID, f"{path} is not a 16-bit RGB PNG normal map")
        n = raw[..., ::-1].astype(np.float32) / 65535.0 * 2.0 - 1.0
    if n.ndim != 3 or n.shape[-1] != 3:
        raise NormalCrafterError(errors.INPUT_INVALID, f"{path}: normals must be (H, W, 3), got {n.shape}")
    return n


def read_rgb(path: Path) -> np.ndarray:
    img = _cv2().imread(str(path), _cv2().IMREAD_COLOR)
    if img is None:
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"cannot read frame {path}")
    return np.ascontiguousarray(img[..., ::-1])


def _write_atomic(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    if not _cv2().imwrite(str(tmp), image):
        raise NormalCrafterError(errors.OUTPUT_NOT_WRITABLE, f"cannot write {path}")
    os.replace(tmp, path)


def write_clip(folder: str | Path, rgb: np.ndarray, normal: np.ndarray, convention_name: str = "opengl") -> Path:
    """Write one clip in the on-disk format: ``rgb`` (F, H, W, 3) uint8,
    ``normal`` (F, H, W, 3) float in [-1, 1] in ``convention_name``."""
    folder = Path(folder)
    (folder / "rgb").mkdir(parents=True, exist_ok=True)
    (folder / "normal").mkdir(parents=True, exist_ok=True)
    for i in range(rgb.shape[0]):
        _write_atomic(folder / "rgb" / f"{i:05d}.png", np.ascontiguousarray(rgb[i][..., ::-1]))
        n16 = np.round((np.clip(normal[i], -1, 1) + 1) / 2 * 65535).astype(np.uint16)
        _write_atomic(folder / "normal" / f"{i:05d}.png", np.ascontiguousarray(n16[..., ::-1]))
    (folder / "clip.json").write_text(json.dumps({"convention": convention_name}) + "\n")
    return folder


class ClipFolder:
    """One clip on disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rgb = _frames(folder / "rgb", RGB_SUFFIXES)
        self.normal = _frames(folder / "normal", NORMAL_SUFFIXES)
        if not self.rgb or len(self.rgb) != len(self.normal):
            raise NormalCrafterError(
                errors.INPUT_INVALID,
                f"clip {folder}: {len(self.rgb)} RGB frames but {len(self.normal)} normal frames (need the same, > 0)",
            )
        meta = folder / "clip.json"
        name = json.loads(meta.read_text()).get("convention", "opengl") if meta.is_file() else "opengl"
        try:
            self.convention = convention.canonical(name)
        except ValueError as exc:
            raise NormalCrafterError(errors.INPUT_INVALID, f"clip {folder}: {exc}") from None

    def __len__(self) -> int:
        return len(self.rgb)

    def load(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(count, H, W, 3) uint8 RGB and float32 RUB normals."""
        rgb = np.stack([read_rgb(p) for p in self.rgb[start : start + count]])
        normal = np.stack([read_normal(p) for p in self.normal[start : start + count]])
        if rgb.shape != normal.shape:
            raise NormalCrafterError(errors.INPUT_INVALID, f"clip {self.folder}: RGB {rgb.shape} vs normals {normal.shape}")
        return rgb, convention.convert(normal, self.convention, "RUB")


def list_clips(root: str | Path) -> list[ClipFolder]:
    root = Path(root)
    if not root.is_dir():
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"dataset folder {root} does not exist")
    clips = [ClipFolder(p) for p in sorted(root.iterdir()) if (p / "rgb").is_dir()]
    if (root / "rgb").is_dir():
        clips.append(ClipFolder(root))
    if not clips:
        raise NormalCrafterError(errors.INPUT_INVALID, f"dataset folder {root} holds no clip (folders with rgb/ and normal/)")
    return clips


def _fit(images: np.ndarray, height: int, width: int, nearest: bool) -> np.ndarray:
    """Centre-crop to the target aspect, then resize (normals: nearest, so no
    two surfaces are averaged)."""
    cv2 = _cv2()
    h, w = images.shape[1:3]
    scale = max(height / h, width / w)
    ch, cw = round(height / scale), round(width / scale)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return np.stack([cv2.resize(im[y0 : y0 + ch, x0 : x0 + cw], (width, height), interpolation=interp) for im in images])


class FolderSource:
    """Random contiguous runs of frames from clips on disk, at the training size."""

    def __init__(self, root: str | Path, height: int, width: int, device: torch.device) -> None:
        self.clips = list_clips(root)
        self.height, self.width, self.device = height, width, device

    def sample(self, num_clips: int, num_frames: int) -> Clips:
        num_frames = min(num_frames, min(len(c) for c in self.clips))
        rgbs, normals = [], []
        for _ in range(num_clips):
            clip = self.clips[int(torch.randint(len(self.clips), (1,)))]
            start = int(torch.randint(len(clip) - num_frames + 1, (1,)))
            rgb, normal = clip.load(start, num_frames)
            rgbs.append(_fit(rgb, self.height, self.width, nearest=False))
            normals.append(_fit(normal, self.height, self.width, nearest=True))
        rgb_t = torch.from_numpy(np.stack(rgbs)).permute(0, 1, 4, 2, 3).float() / 255.0
        normal_t = torch.from_numpy(np.stack(normals)).permute(0, 1, 4, 2, 3)
        return Clips(rgb_t.to(self.device), normal_t.to(self.device))


class SyntheticSource:
    """Fresh procedural clips for every batch (torch's global RNG picks the scenes)."""

    def __init__(self, height: int, width: int, device: torch.device) -> None:
        self.height, self.width, self.device = height, width, device

    def sample(self, num_clips: int, num_frames: int) -> Clips:
        return render_clips(num_clips, num_frames, self.height, self.width, self.device)


def make_source(source: str, height: int, width: int, device: torch.device) -> SyntheticSource | FolderSource:
    if source == "synthetic":
        return SyntheticSource(height, width, device)
    return FolderSource(source, height, width, device)
