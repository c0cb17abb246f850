"""Which frames each UNet call sees, and how overlapping predictions blend."""
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


def blend_weights(overlap: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Weights of the previous window's prediction over an overlap of ``overlap``
    frames: linspace(1, 0, n+2) without its ends (n=4: 0.8, 0.6, 0.4, 0.2)."""
    return torch.linspace(1.0, 0.0, overlap + 2, device=device)[1:-1]


def blend(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Linear cross-fade over the frame axis (dim 1) of two (B, n, ...) tensors."""
    w = blend_weights(previous.shape[1], previous.device).view(1, -1, *([1] * (previous.ndim - 2)))
    return previous * w + current * (1 - w)
