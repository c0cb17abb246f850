"""Which frames each UNet call sees, how overlapping predictions blend, and
what a run of a clip, or of a chunk of one, reads, runs and decodes."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    start: int
    end: int
    # Leading frames shared with the previous window; 0 for the first window.
    overlap: int

    @property
    def size(self) -> int:
        return self.end - self.start


def window_schedule(num_frames: int, window: int = 14, stride: int = 10) -> list[Window]:
    """The release's schedule: starts 0, stride, 2*stride, ... while the window
    fits, plus a last window ending on the last frame when one is missing.

    F=25, window 14, stride 10 gives [0,14), [10,24), [11,25). Unlike the
    release (IndexError below 14 frames), a clip shorter than ``window`` is
    one window of all its frames.
    """
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    if window < 1 or stride < 1 or stride > window:
        raise ValueError(f"need 1 <= stride <= window, got window={window}, stride={stride}")
    window = min(window, num_frames)
    spans = [(s, s + window) for s in range(0, num_frames - window + 1, stride)]
    if spans[-1][1] < num_frames:
        spans.append((num_frames - window, num_frames))
    windows = []
    for i, (s, e) in enumerate(spans):
        # The release feeds nothing forward when stride == window, even into an
        # appended last window that does overlap its predecessor.
        overlap = 0 if i == 0 or stride == window else spans[i - 1][1] - s
        windows.append(Window(s, e, overlap))
    return windows


def final_frontier(windows: list[Window], index: int, num_frames: int) -> int:
    """Frames below this index are final once window ``index`` has run: no
    later window starts before it."""
    return windows[index + 1].start if index + 1 < len(windows) else num_frames


def grid_end(frame: int, decode_chunk: int, num_frames: int) -> int:
    """The first frame at or after ``frame`` on the decode grid (multiples of
    ``decode_chunk`` from frame 0), or the clip's end: where reading and
    decoding that must include ``frame`` stop."""
    return min(-(-frame // decode_chunk) * decode_chunk, num_frames)


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
        return grid_end(self.end, self.decode_chunk, self.num_frames)


def plan_chunk(
    num_frames: int, start: int, end: int, context: int = 0, window: int = 14, stride: int = 10, decode_chunk: int = 7
) -> ChunkPlan:
    """Plan output frames [start, end) of a clip of ``num_frames`` frames with
    at least ``context`` frames of windows run before the chunk's first decode
    chunk. The right side needs no context: no later frame influences the
    chunk, so exactly the windows that touch it are run."""
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    if not 0 <= start < end <= num_frames:
        raise ValueError(f"chunk {start}:{end} is not inside a clip of {num_frames} frames")
    if context < 0:
        raise ValueError("context must be 0 or more frames")
    if decode_chunk < 1:
        raise ValueError("decode_chunk must be at least 1")
    schedule = window_schedule(num_frames, window, stride)
    d0 = start // decode_chunk * decode_chunk
    d1 = grid_end(end, decode_chunk, num_frames)
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
        read_end=grid_end(runs[-1].end, decode_chunk, num_frames),
    )


def blend_weights(overlap: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Weights of the previous window's prediction over an overlap of ``overlap``
    frames: linspace(1, 0, n+2) without its ends (n=4: 0.8, 0.6, 0.4, 0.2)."""
    return torch.linspace(1.0, 0.0, overlap + 2, device=device)[1:-1]


def blend(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Linear cross-fade over the frame axis (dim 1) of two (B, n, ...) tensors."""
    w = blend_weights(previous.shape[1], previous.device).view(1, -1, *([1] * (previous.ndim - 2)))
    return previous * w + current * (1 - w)
