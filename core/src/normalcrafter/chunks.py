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
from dataclasses import dataclass

import numpy as np
import torch

from . import errors
from .errors import NormalCrafterError
from .io.readers import FrameSource, open_source
from .pipeline import take_padded
from .preprocess import unpad
from .windows import Window, final_frontier, window_schedule


def _ceil_to(x: int, step: int) -> int:
    return -(-x // step) * step


@dataclass(frozen=True)
class ChunkPlan:
    """What one chunk reads and runs. All indices count frames of the whole
    clip from 0."""

    num_frames: int
    start: int  # output frames [start, end)
    end: int
    decode_chunk: int
    windows: tuple[Window, ...]  # the clip's windows it runs; the first starts from zero latents
    frontiers: tuple[int, ...]  # frames below frontiers[k] are final after windows[k]
    read_start: int  # frames [read_start, read_end) are read and encoded
    read_end: int

    @property
    def decode_start(self) -> int:
        return self.start // self.decode_chunk * self.decode_chunk

    @property
    def decode_end(self) -> int:
        return min(_ceil_to(self.end, self.decode_chunk), self.num_frames)


def plan_chunk(
    num_frames: int, start: int, end: int, context: int = 0, window: int = 14, stride: int = 10, decode_chunk: int = 7
) -> ChunkPlan:
    """Plan output frames [start, end) of a clip of ``num_frames`` frames with
    at least ``context`` frames of windows run before the chunk's first decode
    chunk. The right side needs no context: no later frame influences the
    chunk, so exactly the windows that touch it are run."""
    if not 0 <= start < end <= num_frames:
        raise ValueError(f"chunk {start}:{end} is not inside a clip of {num_frames} frames")
    if context < 0:
        raise ValueError("context must be 0 or more frames")
    if decode_chunk < 1:
        raise ValueError("decode_chunk must be at least 1")
    schedule = window_schedule(num_frames, window, stride)
    d0 = start // decode_chunk * decode_chunk
    d1 = min(_ceil_to(end, decode_chunk), num_frames)
    # Window starts and ends both grow monotonically along the schedule.
    touching = [k for k, w in enumerate(schedule) if w.start < d1 and w.end > d0]
    lead = max(k for k, w in enumerate(schedule) if w.start <= max(d0 - context, 0))
    first, last = min(touching[0], lead), touching[-1]
    runs = schedule[first : last + 1]
    windows = (Window(runs[0].start, runs[0].end, 0), *runs[1:])
    frontiers = tuple(final_frontier(schedule, k, num_frames) for k in range(first, last + 1))
    return ChunkPlan(
        num_frames=num_frames, start=start, end=end, decode_chunk=decode_chunk, windows=windows,
        frontiers=frontiers,
        # Encoder batches on the clip's decode grid, as the sequential run has them
        # (batch composition changes convolution numerics).
        read_start=runs[0].start // decode_chunk * decode_chunk,
        read_end=min(_ceil_to(runs[-1].end, decode_chunk), num_frames),
    )


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


@torch.no_grad()
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
    dc, n = plan.decode_chunk, plan.num_frames
    source = iter(frames)
    pad = None
    emb: dict[int, torch.Tensor] = {}
    lat: dict[int, torch.Tensor] = {}
    pred: dict[int, torch.Tensor] = {}
    read, decoded = plan.read_start, plan.decode_start
    for win, frontier in zip(plan.windows, plan.frontiers):
        if should_stop is not None and should_stop():
            return
        need = min(_ceil_to(win.end, dc), n)
        while read < need:
            batch, pad = take_padded(source, min(dc, need - read), pad, read, need)
            e, z = pipe.encode_frames(batch)
            for j in range(e.shape[0]):
                emb[read + j], lat[read + j] = e[j], z[j]
            read += len(batch)
        idx = range(win.start, win.end)
        previous = torch.stack([pred[i] for i in range(win.start, win.start + win.overlap)]) if win.overlap else None
        out = pipe.predict_window(torch.stack([emb[i] for i in idx]), torch.stack([lat[i] for i in idx]), previous)
        for j, i in enumerate(idx):
            pred[i] = out[j]
        for i in [i for i in emb if i < frontier]:
            del emb[i], lat[i]
        # Final latents before the chunk's first decode chunk are context only.
        for i in [i for i in pred if i < min(frontier, plan.decode_start)]:
            del pred[i]
        while decoded < plan.decode_end and decoded < frontier and (decoded + dc <= frontier or frontier == n):
            stop = min(decoded + dc, n)
            latents = torch.stack([pred.pop(i) for i in range(decoded, stop)])
            wanted = range(max(decoded, plan.start), min(stop, plan.end))
            if skip is None or not all(skip(i - plan.start) for i in wanted):
                imgs = unpad(pipe.decode_chunk(latents), pad).permute(0, 2, 3, 1).cpu().numpy()
                for i in wanted:
                    yield i - plan.start, imgs[i - decoded]
            decoded = stop


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

