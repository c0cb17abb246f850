"""One clip in chunks computed independently, equal to one sequential run.

Information in NormalCrafter flows forward only. A window's prediction
depends on the window before it (its overlap starts from that window's
prediction, and the overlap is then linearly blended with it) and on nothing
after it; the temporal VAE decoder mixes frames only within one decode
chunk, aligned to frame 0. So a chunk of output frames [start, end):

* runs the clip's own windows (the schedule of the whole clip, not one
  restarted at ``start``), from a window starting at least ``context`` frames
  before the chunk to the last window starting before the chunk's last
  decode chunk ends: the seam between two chunks is stitched by the method's
  own latent blend, computed on both sides;
* encodes and decodes in the clip's own chunks of ``decode_chunk`` frames.

The only difference from the sequential run is the chunk's first window,
whose overlap starts from zero latents instead of the previous window's
prediction. That reaches the next window only through the UNet input, which
scales latents by 1/sqrt(sigma_max^2 + 1), about 1/700, so each window of
context shrinks the seam error by orders of magnitude (docs/farm.md has
the measured figures). Cutting right after a window overlap (a window's end
that is also on the decode grid) keeps the previous window out of the chunk's
frames entirely, so those cuts (``chunk_ranges``) need the least context.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from . import errors
from .errors import NormalCrafterError
from .io.readers import FrameSource, open_source
from .windows import ChunkPlan, plan_chunk, window_schedule


def cut_points(num_frames: int, window: int = 14, stride: int = 10, decode_chunk: int = 7) -> list[int]:
    """Frames where a chunk may start with the smallest seam: the end of a
    window's blended overlap (a window end) that is also on the decode grid.
    For 14/10/7 they are 14, 84, 154, ... (every 70 frames). Settings without
    such points fall back to the decode grid."""
    ends = sorted({w.end for w in window_schedule(num_frames, window, stride) if w.end < num_frames})
    points = [e for e in ends if e % decode_chunk == 0]
    return points or list(range(decode_chunk, num_frames, decode_chunk))


def chunk_ranges(
    num_frames: int, chunk_frames: int, window: int = 14, stride: int = 10, decode_chunk: int = 7
) -> list[tuple[int, int]]:
    """Split a clip into chunks of about ``chunk_frames`` frames, cut at
    ``cut_points``; the last chunk takes the rest, up to 1.5 chunks."""
    if chunk_frames < 1:
        raise ValueError("chunk length must be at least 1 frame")
    points = cut_points(num_frames, window, stride, decode_chunk)
    bounds = [0]
    while num_frames - bounds[-1] > 1.5 * chunk_frames:
        later = [p for p in points if p > bounds[-1]]
        if not later:
            break
        bounds.append(min(later, key=lambda p: abs(p - bounds[-1] - chunk_frames)))
    bounds.append(num_frames)
    return list(zip(bounds, bounds[1:]))


def stream_chunk(
    pipe,
    frames: Iterable[np.ndarray],
    plan: ChunkPlan,
    should_stop: Callable[[], bool] | None = None,
    skip: Callable[[int], bool] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Run one chunk with a ``NormalCrafterPipeline``. ``frames`` are the
    clip's frames ``plan.read_start`` to ``plan.read_end``. Yields
    ``(index - plan.start, normals)`` for the chunk's frames, like
    ``pipe.stream``; ``skip`` takes the same chunk-relative index, and a decode
    chunk whose output frames are all skipped is not decoded."""
    relative = None if skip is None else (lambda i: skip(i - plan.start))
    for i, normals in pipe.stream_plan(frames, plan, should_stop, relative):
        yield i - plan.start, normals


class ChunkSource:
    """A chunk of an input, shaped like the ``FrameSource`` of its output
    frames for the job layer: ``numbers`` are the chunk's frame numbers,
    ``whole`` is the whole input (whose identity the output folder records,
    so every chunk of one job shares one folder)."""

    def __init__(self, whole: FrameSource, reader: FrameSource, plan: ChunkPlan) -> None:
        self.whole, self.reader, self.plan = whole, reader, plan
        self.path, self.kind, self.fps = whole.path, whole.kind, whole.fps
        self.size, self.source_size = whole.size, whole.source_size
        self.numbers = whole.numbers[plan.start : plan.end]
        self.notes = whole.notes

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def downscaled(self) -> bool:
        return self.whole.downscaled

    def stream(self, pipe, should_stop: Callable[[], bool] | None = None,
               skip: Callable[[int], bool] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        return stream_chunk(pipe, iter(self.reader), self.plan, should_stop, skip)


def open_chunk(
    path: str | os.PathLike, frames: tuple[int, int | None] | None, context: int, max_res: int,
    window: int = 14, stride: int = 10, decode_chunk: int = 7,
) -> ChunkSource:
    """Open frames A:B of an input (indices into the whole input, as
    ``--frames``) as a chunk with ``context`` frames of context."""
    whole = open_source(path, None, max_res)
    a, b = frames if frames is not None else (0, None)
    b = len(whole) if b is None else min(b, len(whole))
    if a >= b:
        raise NormalCrafterError(errors.INPUT_INVALID, f"{path} has {len(whole)} frames; the range {a}:{b} selects none")
    plan = plan_chunk(len(whole), a, b, context, window, stride, decode_chunk)
    reader = open_source(path, (plan.read_start, plan.read_end), max_res)
    return ChunkSource(whole, reader, plan)

