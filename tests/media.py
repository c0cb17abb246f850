"""Small real media files for tests: mp4 via PyAV, images via OpenCV/OpenEXR."""
from pathlib import Path

import numpy as np


def moving_clip(n: int, h: int = 48, w: int = 80, seed: int = 0) -> np.ndarray:
    """A textured square moving over a gradient: real structure, real motion."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 128)], -1)
    tex = rng.integers(0, 256, (h // 3, w // 3, 3))
    frames = []
    for i in range(n):
        f = base.copy()
        x0 = (i * 3) % max(w - w // 3, 1)
        f[h // 3 : h // 3 + tex.shape[0], x0 : x0 + tex.shape[1]] = tex
        frames.append(f.astype(np.uint8))
    return np.stack(frames)


def write_video(path: Path, frames: np.ndarray, fps: int = 24) -> Path:
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264" if path.suffix != ".avi" else "mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode(None))
    return path


def write_sequence(folder: Path, frames: np.ndarray, pattern: str = "plate.{:04d}.png", first: int = 1) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / pattern.format(first + i)), f[:, :, ::-1])
    return folder
