"""Which source frames a strip or a clip shows, and where they sit on the timeline.

Pure arithmetic on numbers read from Blender, so it is checked without bpy
and against Blender's own renders in the tests. The output files are named by
source frame (the video's 0-based frame index), so a span is all the import
needs to put them back on the timeline frame for frame.
"""
from __future__ import annotations

from dataclasses import dataclass


class PlanError(ValueError):
    """A target that cannot be estimated as it is; the message is for the user."""


@dataclass(frozen=True)
class FrameSpan:
    first: int  # first source frame, 0-based, inclusive
    stop: int  # last source frame + 1
    timeline_first: int  # the timeline frame that shows source frame ``first``

    @property
    def count(self) -> int:
        return self.stop - self.first

    def timeline_frame(self, source_frame: int) -> int:
        return self.timeline_first + source_frame - self.first


def strip_span(
    frame_start: float,
    final_start: int,
    final_end: int,
    anim_offset_start: int,
    frame_duration: int,
) -> FrameSpan:
    """The source frames a movie strip shows between its handles.

    Blender shows source frame ``t - frame_start + anim_offset_start`` at
    timeline frame ``t``; ``frame_duration`` already excludes the animation
    offsets. Handles dragged past the content hold the first or last frame:
    those held frames are not estimated twice, the span is clipped to the
    content.
    """
    start = int(round(frame_start))
    first = max(final_start - start + anim_offset_start, anim_offset_start)
    stop = min(final_end - start + anim_offset_start, anim_offset_start + frame_duration)
    if stop <= first:
        raise PlanError("the strip shows none of its movie's frames")
    return FrameSpan(first, stop, first - anim_offset_start + start)


def clip_span(frame_start: int, frame_offset: int, frame_duration: int) -> FrameSpan:
    """The frames of a movie clip: the clip shows video frame
    ``f - frame_start + frame_offset`` at scene frame ``f`` for
    ``frame_duration`` frames (the whole video)."""
    first = max(frame_offset, 0)
    stop = min(frame_offset + frame_duration, frame_duration)
    if stop <= first:
        raise PlanError(f"the clip's frame offset {frame_offset} leaves none of its {frame_duration} frames")
    return FrameSpan(first, stop, first - frame_offset + frame_start)
