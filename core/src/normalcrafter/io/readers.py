"""Frame sources: video files, image sequences and single images.

Every source is opened, checked and counted up front (so the window schedule
is known) and then decoded lazily, one frame at a time, so a 2,000-frame clip
never sits in memory. Frames come out as (H, W, 3) uint8 RGB, downscaled to
the maximum resolution.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import errors
from ..errors import NormalCrafterError
from ..preprocess import fit_size, resize_frame, to_rgb8

VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mxf", ".mpg", ".mpeg"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".bmp", ".webp"}
MIN_SIDE = 8
MAX_SIDE = 16384

_DIGITS = re.compile(r"(\d+)(?!.*\d)")  # the last run of digits in a file name
_PRINTF = re.compile(r"%0?(\d*)d")
_HASHES = re.compile(r"#+")


@dataclass
class FrameSource:
    """A checked input. ``numbers`` are the input's own frame numbers of the
    selected frames; iterate to decode them in order."""

    path: Path
    kind: str  # "video" | "sequence" | "image"
    numbers: list[int]
    size: tuple[int, int]  # (height, width) after downscaling
    source_size: tuple[int, int]
    fps: float | None
    _files: list[Path] = field(default_factory=list, repr=False)
    _video_range: tuple[int, int] = (0, 0)
    max_res: int = 0
    # Facts about the input a user must hear (a gap, a variable frame rate),
    # which the job passes on as warnings.
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def downscaled(self) -> bool:
        return self.size != self.source_size

    @property
    def files(self) -> list[Path]:
        """The files the frames come from: a sequence's frames, else the one input file."""
        return self._files or [self.path]

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.kind == "video":
            yield from self._iter_video()
        else:
            for f in self._files:
                yield self._prepare(read_image(f), f)

    def _prepare(self, frame: np.ndarray, where: Path | str) -> np.ndarray:
        rgb = to_rgb8(frame)
        if rgb.shape[:2] != self.source_size:
            raise NormalCrafterError(
                errors.INPUT_INVALID,
                f"{where}: frame is {rgb.shape[1]}x{rgb.shape[0]}, the first one was "
                f"{self.source_size[1]}x{self.source_size[0]}; all frames must have one size",
            )
        return resize_frame(rgb, self.max_res)

    def _iter_video(self) -> Iterator[np.ndarray]:
        import av

        start, stop = self._video_range
        done = start
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for index, frame in enumerate(container.decode(stream)):
                    if index < start:
                        continue
                    if index >= stop:
                        return
                    if frame.is_corrupt:
                        # The decoder hid damaged data by guessing pixels: refuse
                        # rather than estimate normals of an invented picture.
                        raise NormalCrafterError(
                            errors.INPUT_UNREADABLE,
                            f"{self.path}: video is damaged at frame {index} (the decoder had to conceal "
                            f"corrupt data); re-export or re-copy the file",
                        )
                    done = index + 1
                    yield self._prepare(frame.to_ndarray(format="rgb24"), self.path)
        except av.FFmpegError as exc:
            raise NormalCrafterError(
                errors.INPUT_UNREADABLE, f"{self.path}: video is corrupt at frame {done}: {exc.strerror or exc}"
            ) from None
        if done < stop:
            raise NormalCrafterError(
                errors.INPUT_UNREADABLE,
                f"{self.path}: video ended at frame {done}, its container promised {stop}",
            )


def parse_range(text: str | None) -> tuple[int, int | None]:
    """'A:B' (A inclusive, B exclusive, from 0, like a Python slice)."""
    if text is None or text == "":
        return 0, None
    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if not m:
        raise NormalCrafterError(errors.BAD_REQUEST, f"--frames {text!r}: expected A:B, e.g. 0:100 or 10:")
    a = int(m.group(1)) if m.group(1) else 0
    b = int(m.group(2)) if m.group(2) else None
    if b is not None and b <= a:
        raise NormalCrafterError(errors.BAD_REQUEST, f"--frames {text}: the end must be after the start")
    return a, b


def _select(count: int, frames: tuple[int, int | None] | None, what: str) -> tuple[int, int]:
    a, b = frames if frames is not None else (0, None)
    b = count if b is None else min(b, count)
    if count == 0:
        raise NormalCrafterError(errors.INPUT_INVALID, f"{what} has no frames")
    if a >= b:
        raise NormalCrafterError(errors.INPUT_INVALID, f"{what} has {count} frames; the range {a}:{b} selects none")
    return a, b


def _range_note(count: int, frames: tuple[int, int | None] | None) -> list[str]:
    end = frames[1] if frames is not None else None
    if end is None or end <= count:
        return []
    return [f"frames {frames[0]}:{end} were asked for, but the input has {count}; estimating {frames[0]}:{count}"]


def _check_size(h: int, w: int, where: Path | str, max_res: int) -> tuple[int, int]:
    if min(h, w) < MIN_SIDE:
        raise NormalCrafterError(
            errors.INPUT_INVALID, f"{where}: frames are {w}x{h}; at least {MIN_SIDE}x{MIN_SIDE} pixels are needed"
        )
    out = fit_size(h, w, max_res)
    if max(out) > MAX_SIDE:
        raise NormalCrafterError(
            errors.INPUT_INVALID,
            f"{where}: frames are {w}x{h}; set --max-res (at most {MAX_SIDE}) to process them downscaled",
        )
    return out


def read_image(path: Path) -> np.ndarray:
    """One image file as an array (RGB order; uint8, uint16 or float32)."""
    try:
        if path.suffix.lower() == ".exr":
            return _read_exr_rgb(path)
        import cv2

        data = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile copes with any path; cv2.imread does not
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except (OSError, ValueError, RuntimeError) as exc:
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{path}: cannot read image: {exc}") from None
    if img is None:
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{path}: not a readable image (empty or corrupt)")
    if img.ndim == 3 and img.shape[2] >= 3:
        img = img[:, :, [2, 1, 0] + list(range(3, img.shape[2]))]
    return img


def _read_exr_rgb(path: Path) -> np.ndarray:
    """Scene-linear EXR to display-referred float RGB (sRGB curve), which is
    what the model saw in training."""
    import OpenEXR

    with OpenEXR.File(str(path), separate_channels=True) as f:
        ch = f.channels()
        names = [n for n in ("R", "G", "B") if n in ch] or [n for n in ("Y",) if n in ch]
        if not names:
            raise ValueError(f"no R/G/B or Y channel (has {', '.join(sorted(ch)) or 'none'})")
        rgb = np.stack([ch[n].pixels.astype(np.float32) for n in names], axis=-1)
    rgb = np.clip(np.nan_to_num(rgb), 0.0, None)
    return np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1 / 2.4) - 0.055).clip(0, 1)


def _image_size(path: Path) -> tuple[int, int]:
    return read_image(path).shape[:2]


def _sequence_files(path: Path) -> list[Path]:
    """Files of an image sequence given as a folder, a printf pattern
    (frame.%04d.png) or a hash pattern (frame.####.png)."""
    name = path.name
    token = None if path.is_dir() else _PRINTF.search(name) or _HASHES.search(name)
    if token:
        folder = path.parent
        pat = re.compile(re.escape(name[: token.start()]) + r"\d+" + re.escape(name[token.end() :]) + r"\Z")
        if not folder.is_dir():
            raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{folder}: folder does not exist")
        files = [p for p in folder.iterdir() if pat.match(p.name)]
    else:
        files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")]
    files = sorted(files, key=lambda p: (_frame_number(p), p.name))
    for a, b in zip(files, files[1:]):
        if _frame_number(a) == _frame_number(b):
            # Both would be written to the same output frame.
            raise NormalCrafterError(
                errors.INPUT_INVALID,
                f"{path}: {a.name} and {b.name} both have frame number {_frame_number(a)}; "
                f"name the sequence with a pattern such as plate.####.png",
            )
    return files


def _gap_note(numbers: list[int]) -> list[str]:
    missing = (numbers[-1] - numbers[0] + 1) - len(numbers)
    if missing <= 0:
        return []
    first = next(a + 1 for a, b in zip(numbers, numbers[1:]) if b != a + 1)
    return [f"the sequence skips {missing} frame number(s) (the first missing is {first}); the frames on either "
            f"side of a gap are treated as neighbours, and output frames keep the input's numbers"]


def _frame_number(path: Path) -> int:
    m = _DIGITS.search(path.stem)
    return int(m.group(1)) if m else 0


def open_source(
    path: str | Path, frames: tuple[int, int | None] | None = None, max_res: int = 1024
) -> FrameSource:
    """Open and check an input. ``frames`` selects input frames A (inclusive)
    to B (exclusive), counted from 0 in the order the input has them."""
    p = Path(path).expanduser()
    # A file or folder that exists is never a pattern, even with '#' or '%d' in its name.
    is_pattern = not p.exists() and bool(_PRINTF.search(p.name) or _HASHES.search(p.name))
    if not is_pattern and not p.exists():
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{p}: no such file or folder")
    if p.is_dir() or is_pattern:
        files = _sequence_files(p)
        if not files:
            raise NormalCrafterError(errors.INPUT_INVALID, f"{p}: no image files found (png, jpg, tif, exr)")
        a, b = _select(len(files), frames, str(p))
        notes = _range_note(len(files), frames)
        files = files[a:b]
        h, w = _image_size(files[0])
        size = _check_size(h, w, files[0], max_res)
        numbers = [_frame_number(f) for f in files]
        return FrameSource(p, "sequence", numbers, size, (h, w), None, files, max_res=max_res,
                           notes=notes + _gap_note(numbers))
    if p.suffix.lower() in IMAGE_EXTS:
        _select(1, frames, str(p))
        h, w = _image_size(p)
        size = _check_size(h, w, p, max_res)
        return FrameSource(p, "image", [0], size, (h, w), None, [p], max_res=max_res)
    return _open_video(p, frames, max_res)


def _open_video(p: Path, frames: tuple[int, int | None] | None, max_res: int) -> FrameSource:
    import av

    if p.stat().st_size == 0:
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{p}: file is empty")
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{p}: has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            stated = stream.frames
            # Count packets rather than trusting the header's frame count, which
            # some containers get wrong; demuxing without decoding is cheap.
            count, times = 0, []
            for pkt in container.demux(stream):
                if pkt.size == 0:
                    continue
                if pkt.is_corrupt:
                    raise NormalCrafterError(
                        errors.INPUT_UNREADABLE,
                        f"{p}: video is truncated or damaged at frame {count}; re-export or re-copy the file",
                    )
                count += 1
                if pkt.pts is not None:
                    times.append(pkt.pts)
            w, h = stream.codec_context.width, stream.codec_context.height
    except av.EOFError:
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"{p}: video ends before its first frame (no frames, "
                                 f"or the file is truncated)") from None
    except av.FFmpegError as exc:
        raise NormalCrafterError(
            errors.INPUT_UNREADABLE, f"{p}: not a readable video ({exc.strerror or type(exc).__name__})"
        ) from None
    a, b = _select(count, frames, str(p))
    size = _check_size(h, w, p, max_res)
    notes = _range_note(count, frames)
    if stated and stated != count:
        notes.append(f"the container states {stated} frames but holds {count}; all {count} are used")
    if _variable_rate(times):
        notes.append("variable frame rate: output frame N is the N-th frame of the file, which players and Blender "
                     "may time differently; convert to a constant frame rate first for exact alignment")
    return FrameSource(p, "video", list(range(a, b)), size, (h, w), fps, _video_range=(a, b), max_res=max_res,
                       notes=notes)


def _variable_rate(pts: list[int]) -> bool:
    """Frame durations that differ by more than half the shortest one."""
    steps = np.diff(np.unique(pts))
    return steps.size > 1 and steps.max() - steps.min() > steps.min() / 2
