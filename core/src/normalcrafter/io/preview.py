"""Side-by-side preview video: input on the left, normals as colours on the right."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .readers import FrameSource
from .writers import frame_path, read_exr_normals


def normals_to_rgb8(normals: np.ndarray) -> np.ndarray:
    return np.clip((normals + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def _load_written(path: Path) -> np.ndarray:
    if path.suffix == ".exr":
        return normals_to_rgb8(read_exr_normals(path)[0])
    import cv2

    png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    return (png.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)


def write_preview(src: FrameSource, folder: Path, fmt: str, fps: float = 24.0) -> Path:
    import av

    final = folder / "preview.mp4"
    h, w = src.size

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = 2 * w + (2 * w) % 2, h + h % 2
            stream.pix_fmt = "yuv420p"
            for number, frame in zip(src.numbers, src):
                side = np.concatenate([frame, _load_written(frame_path(folder, number, fmt))], axis=1)
                side = np.pad(side, ((0, stream.height - h), (0, stream.width - 2 * w), (0, 0)))
                out.mux(stream.encode(av.VideoFrame.from_ndarray(side, format="rgb24")))
            out.mux(stream.encode(None))

    return atomic_write(final, write)
