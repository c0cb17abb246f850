"""Read normal maps from files: EXR, 8/16-bit PNG or TIFF, and .npy.

* EXR: channels ``N.X/N.Y/N.Z`` (our writer), ``<layer>.Normal.X/Y/Z``
  (Blender's render pass, any part of a multi-part file), ``X/Y/Z`` or
  ``R/G/B``; the header attribute ``normalcrafter_convention`` names the
  axis convention. Non-finite or short (< 0.5) vectors are invalid.
* PNG/TIFF: ``(n + 1) / 2`` scaled to the full integer range; an all-zero
  (black) pixel is invalid, as in the DSINE benchmark files.
* NPY: one (H, W, 3) frame, or a whole clip (F, H, W, 3).

Readers return normals with invalid pixels set to zero vectors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import convention as conv
from .. import errors
from ..errors import NormalCrafterError
from .clips import EVAL_CONVENTION, Clip, numbered
from .metrics import valid_mask

HEADER_KEY = "normalcrafter_convention"
NORMAL_EXTS = (".exr", ".npy", ".png", ".tif", ".tiff")  # in order of preference when a folder mixes them


def read_normal_file(path: Path) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) float32 normals with invalid pixels zeroed, and the axis
    convention stated in the file (EXR header) or None."""
    ext = path.suffix.lower()
    try:
        if ext == ".exr":
            n, convention = _read_exr(path)
        elif ext == ".npy":
            n, convention = np.load(path, mmap_mode="r").astype(np.float32), None
        elif ext in (".png", ".tif", ".tiff"):
            n, convention = _read_encoded(path), None
        else:
            raise NormalCrafterError(errors.INPUT_INVALID, f"{path}: not a normal map (exr, png, tif or npy)")
    except (OSError, ValueError, RuntimeError) as exc:
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{path}: cannot read normals: {exc}") from None
    if n.ndim != 3 or n.shape[2] != 3:
        raise NormalCrafterError(errors.INPUT_INVALID, f"{path}: expected an (H, W, 3) normal map, got {n.shape}")
    return _zero_invalid(n), convention


def _zero_invalid(n: np.ndarray) -> np.ndarray:
    n = np.array(n, dtype=np.float32)
    n[~valid_mask(n)] = 0.0
    return n


def _read_exr(path: Path) -> tuple[np.ndarray, str | None]:
    import OpenEXR

    # Copy what is needed inside the block: closing the file empties its header dict.
    with OpenEXR.File(str(path), separate_channels=True) as f:
        channels = {name: np.array(c.pixels) for part in f.parts for name, c in part.channels.items()}
        value = f.header().get(HEADER_KEY)
    names = _pick_exr_channels(list(channels))
    if names is None:
        raise ValueError(f"no normal channels (N.X/N.Y/N.Z, *.Normal.X/Y/Z, X/Y/Z or R/G/B); "
                         f"has {', '.join(sorted(channels)[:8])}")
    n = np.stack([channels[c].astype(np.float32) for c in names], axis=-1)
    if isinstance(value, bytes):
        value = value.decode()
    return n, (str(value) if value else None)


def _pick_exr_channels(names: list[str]) -> list[str] | None:
    if all(f"N.{a}" in names for a in "XYZ"):
        return [f"N.{a}" for a in "XYZ"]
    for name in sorted(names):
        if name.endswith(".Normal.X"):
            base = name[: -len("X")]
            if all(base + a in names for a in "YZ"):
                return [base + a for a in "XYZ"]
    for group in ("XYZ", "RGB"):
        if all(a in names for a in group):
            return list(group)
    return None


def _read_encoded(path: Path) -> np.ndarray:
    import cv2

    raw = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError("not a readable image")
    if raw.ndim != 3 or raw.shape[2] < 3 or raw.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected an 8- or 16-bit RGB image, got {raw.dtype} {raw.shape}")
    rgb = raw[:, :, [2, 1, 0]]
    n = rgb.astype(np.float32) / np.iinfo(raw.dtype).max * 2.0 - 1.0
    n[~np.any(rgb > 0, axis=-1)] = 0.0
    return n


def _files_in(folder: Path) -> list[Path]:
    """The normal maps of a folder: files of the preferred extension present,
    hidden (temporary) files excluded."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    for ext in NORMAL_EXTS:
        chosen = [p for p in files if p.suffix.lower() == ext]
        if chosen:
            return chosen
    return []


def open_normal_clips(path: str | Path, convention: str | None = None) -> tuple[list[Clip], list[str]]:
    """Clips of normal maps at ``path`` and the warnings met opening them:

    * an (F, H, W, 3) .npy file: one clip;
    * a folder of normal maps (one per frame, numbered): one clip;
    * a folder of such folders, or of (F, H, W, 3) .npy files: one clip each.

    ``convention`` (a name or 3-letter code) overrides what files state; a
    file stating nothing is taken as OpenGL, with a warning.
    """
    p = Path(path).expanduser()
    if convention is not None:
        _check_convention(convention)
    if not p.exists():
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{p}: no such file or folder")
    warnings: list[str] = []
    if p.is_file():
        clips = [_npy_clip(p, convention, warnings)]
    elif _files_in(p):
        clips = [_folder_clip(p, convention, warnings)]
    else:
        subs = sorted(q for q in p.iterdir() if not q.name.startswith("."))
        clips = [_folder_clip(q, convention, warnings) for q in subs if q.is_dir() and _files_in(q)]
        clips += [_npy_clip(q, convention, warnings) for q in subs if q.is_file() and q.suffix.lower() == ".npy"]
        if not clips:
            raise NormalCrafterError(errors.INPUT_INVALID,
                                     f"{p}: no normal maps (exr, png, tif, npy) in it or in its sub-folders")
    return clips, warnings


def _check_convention(name: str) -> str:
    try:
        return conv.canonical(name)
    except ValueError as exc:
        raise NormalCrafterError(errors.BAD_REQUEST, str(exc)) from None


def _resolve(stated: str | None, override: str | None, where: Path, warnings: list[str]) -> str:
    if override is not None:
        return override
    if stated is not None:
        try:
            conv.canonical(stated)
        except ValueError:
            raise NormalCrafterError(errors.INPUT_INVALID, f"{where}: header names an unknown convention "
                                     f"{stated!r}; state the right one explicitly") from None
        return stated
    msg = f"{where.parent if where.is_file() else where}: no axis convention stated; assuming opengl"
    if msg not in warnings:
        warnings.append(msg)
    return EVAL_CONVENTION


def _folder_clip(folder: Path, override: str | None, warnings: list[str]) -> Clip:
    files, frames = numbered(_files_in(folder))
    if files[0].suffix.lower() == ".npy" and np.load(files[0], mmap_mode="r").ndim == 4:
        raise NormalCrafterError(errors.INPUT_INVALID,
                                 f"{folder}: holds whole-clip .npy files; pass one of them, or their folder's parent")
    _, stated = read_normal_file(files[0])
    conventions = {conv.canonical(_resolve(stated, override, files[0], warnings))}

    def read(i: int) -> np.ndarray:
        n, said = read_normal_file(files[i])
        src = _resolve(said, override, files[i], warnings)
        conventions.add(conv.canonical(src))
        return conv.convert(n, src, EVAL_CONVENTION)

    return Clip(name=folder.name, frames=frames, read_normal=read, conventions=conventions, source=str(folder))


def _npy_clip(path: Path, override: str | None, warnings: list[str]) -> Clip:
    if path.suffix.lower() != ".npy":
        raise NormalCrafterError(errors.INPUT_INVALID,
                                 f"{path}: a single file must be an (F, H, W, 3) .npy clip; "
                                 "give image sequences as a folder")
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{path}: cannot read: {exc}") from None
    if arr.ndim != 4 or arr.shape[3] != 3:
        raise NormalCrafterError(errors.INPUT_INVALID, f"{path}: expected (F, H, W, 3), got {arr.shape}")
    src = _resolve(None, override, path, warnings)
    return Clip(name=path.stem, frames=list(range(arr.shape[0])),
                read_normal=lambda i: conv.convert(_zero_invalid(arr[i]), src, EVAL_CONVENTION),
                conventions={conv.canonical(src)}, source=str(path))
