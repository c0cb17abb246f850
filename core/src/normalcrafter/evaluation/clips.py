"""A clip of normal maps, read lazily frame by frame, and how a prediction
clip is matched with its ground truth."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import errors
from ..errors import NormalCrafterError

EVAL_CONVENTION = "opengl"  # everything is converted to this before it is compared or drawn
_DIGITS = re.compile(r"(\d+)(?!.*\d)")


@dataclass
class Clip:
    """Frames of one clip. Readers take a position 0..len-1 (not a frame
    number) and return normals as (H, W, 3) float32 in the OpenGL convention,
    zero where invalid; RGB as (H, W, 3) uint8; forward flow from position i
    to i+1 as (H, W, 2) float32 pixels, NaN where unknown; masks as bool."""

    name: str
    frames: list[int]
    read_normal: Callable[[int], np.ndarray]
    read_rgb: Callable[[int], np.ndarray] | None = None
    read_flow: Callable[[int], np.ndarray] | None = None
    read_mask: Callable[[int], np.ndarray] | None = None
    conventions: set[str] = field(default_factory=set)  # the source's own convention(s), for the report
    source: str = ""
    is_sequence: bool = True  # False for sets of unrelated images: no flicker, no temporal profile

    def __len__(self) -> int:
        return len(self.frames)


def frame_number(path: Path) -> int | None:
    m = _DIGITS.search(path.stem)
    return int(m.group(1)) if m else None


def numbered(files: list[Path]) -> tuple[list[Path], list[int]]:
    """Files sorted by the last number in their names (their position when a
    name has none); refuses two files with one number."""
    nums = [frame_number(f) for f in files]
    if any(n is None for n in nums):
        files = sorted(files, key=lambda p: p.name)
        return files, list(range(len(files)))
    pairs = sorted(zip(nums, files))
    seen = [n for n, _ in pairs]
    for a, b in zip(pairs, pairs[1:]):
        if a[0] == b[0]:
            raise NormalCrafterError(errors.INPUT_INVALID, f"{a[1].name} and {b[1].name} have one frame number")
    return [f for _, f in pairs], seen


@dataclass
class Pairing:
    """Which prediction position goes with which ground-truth position."""

    pred_pos: list[int]
    gt_pos: list[int]
    frames: list[int]  # the ground truth's frame numbers
    by_order: bool  # True when frame numbers did not match and the order was used


def pair_frames(pred: Clip, gt: Clip) -> Pairing:
    """Match frames by frame number when the prediction's numbers are a subset
    of the ground truth's (a prediction of every 10th frame is fine); when no
    number matches and the counts agree, match them in order."""
    gt_index = {n: i for i, n in enumerate(gt.frames)}
    if all(n in gt_index for n in pred.frames):
        gt_pos = [gt_index[n] for n in pred.frames]
        return Pairing(list(range(len(pred))), gt_pos, [gt.frames[i] for i in gt_pos], False)
    if len(pred) == len(gt) and not set(pred.frames) & set(gt.frames):
        return Pairing(list(range(len(pred))), list(range(len(gt))), list(gt.frames), True)
    missing = [n for n in pred.frames if n not in gt_index]
    raise NormalCrafterError(
        errors.INPUT_INVALID,
        f"clip {pred.name!r}: prediction frames {_span(missing)} have no ground truth "
        f"(ground truth has {len(gt)} frames, {_span(gt.frames)})",
    )


def pair_clips(preds: list[Clip], gts: list[Clip]) -> list[tuple[Clip, Clip]]:
    """Pair clips by name; a single clip on each side pairs whatever the names."""
    if len(preds) == 1 and len(gts) == 1:
        return [(preds[0], gts[0])]
    by_name = {c.name: c for c in gts}
    missing = [p.name for p in preds if p.name not in by_name]
    if missing:
        raise NormalCrafterError(
            errors.INPUT_INVALID,
            f"prediction clips without ground truth: {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} (ground truth has {', '.join(sorted(by_name)[:5])}"
            f"{' ...' if len(by_name) > 5 else ''})",
        )
    return [(p, by_name[p.name]) for p in preds]


def _span(nums: list[int]) -> str:
    if not nums:
        return "none"
    return f"{nums[0]}..{nums[-1]}" if len(nums) > 1 else str(nums[0])
