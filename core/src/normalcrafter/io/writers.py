"""Output formats for normal frames.

* EXR: half float, lossless ZIP, channels ``N.X N.Y N.Z`` (Blender reads a
  pass "N") and the same values as ``R G B`` (Blender's "Combined"),
  optional ``Nworld.X/Y/Z``, header attributes naming the axis
  convention, the model and the settings.
* PNG: 16-bit RGB preview, ``(n + 1) / 2`` scaled to 0..65535.
* NPY: the raw model output of the whole range, (F, H, W, 3) float32 in the
  model's own convention, clamped, not renormalised; written once at the end.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_write, atomic_write_bytes, commit, temp_name

FORMATS = ("exr", "png", "npy")


def frame_path(folder: Path, frame: int, fmt: str) -> Path:
    return folder / f"normal.{frame:05d}.{fmt}"


def _exr_threads() -> None:
    """Let OpenEXR compress a file's blocks of lines on a few threads (it
    uses none unless asked): a frame reaches its file sooner, which is what
    the last frames of a clip wait for (512x288 on a 2-core machine: 21 ->
    14 ms with two threads). Once per process, unless already set."""
    import OpenEXR

    if OpenEXR.global_thread_count() == 0:
        OpenEXR.set_global_thread_count(min(4, os.cpu_count() or 1))


def write_exr(path: Path, normals: np.ndarray, header: dict[str, str], world: np.ndarray | None = None) -> Path:
    import OpenEXR

    _exr_threads()
    channels = {f"N.{a}": np.ascontiguousarray(normals[:, :, i], dtype=np.float16) for i, a in enumerate("XYZ")}
    # The same normals again as plain R,G,B: Blender's sequencer shows only a
    # Combined/RGB pass and crashes (5.0.1) on a file without one, and image
    # viewers show RGB by default. ZIP finds the copy, so it costs ~4% in size.
    channels.update({c: channels[f"N.{a}"] for c, a in zip("RGB", "XYZ")})
    if world is not None:
        channels.update(
            {f"Nworld.{a}": np.ascontiguousarray(world[:, :, i], dtype=np.float16) for i, a in enumerate("XYZ")}
        )
    hdr = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage, **header}

    def write(tmp: Path) -> None:
        try:
            with OpenEXR.File(hdr, channels) as f:
                f.write(str(tmp))
        except RuntimeError as exc:  # OpenEXR reports a failed write (disk full, ...) as RuntimeError
            raise OSError(str(exc).rstrip(".")) from None

    return atomic_write(path, write)


def encode_png16(normals: np.ndarray) -> bytes:
    import cv2

    rgb = np.clip((normals + 1.0) * 0.5 * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def write_png16(path: Path, normals: np.ndarray) -> Path:
    return atomic_write_bytes(path, encode_png16(normals))


def exr_header(convention: str, model: str, settings: dict, frame: int) -> dict[str, str]:
    return {
        "normalcrafter_convention": convention,
        "normalcrafter_model": model,
        "normalcrafter_settings": json.dumps(settings, sort_keys=True),
        "normalcrafter_frame": str(frame),
    }


def read_exr_normals(path: Path, layer: str = "N") -> tuple[np.ndarray, dict]:
    """Read back (H, W, 3) float32 normals and the header of one of our EXR files."""
    import OpenEXR

    with OpenEXR.File(str(path), separate_channels=True) as f:
        ch = f.channels()
        n = np.stack([ch[f"{layer}.{a}"].pixels.astype(np.float32) for a in "XYZ"], axis=-1)
        return n, dict(f.header())


class NpyWriter:
    """Collects frames into a memory-mapped (F, H, W, 3) file under a temporary
    name, so memory stays flat; renamed into place only when complete."""

    def __init__(self, path: Path, count: int, height: int, width: int) -> None:
        self.path = path
        self.tmp = temp_name(path)
        self.array = None
        try:
            self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float32,
                                                   shape=(count, height, width, 3))
            if hasattr(os, "posix_fallocate"):
                # Reserve the blocks now: a memory map that meets a full disk
                # later kills the process with SIGBUS instead of raising.
                with open(self.tmp, "rb+") as f:
                    os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError:
            self.abort()
            raise

    def put(self, index: int, normals: np.ndarray) -> None:
        self.array[index] = normals

    def finish(self) -> Path:
        self.array.flush()
        self.array = None
        commit(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.array = None
        self.tmp.unlink(missing_ok=True)
