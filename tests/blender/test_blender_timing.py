"""The frames a strip or a clip shows: arithmetic checked against Blender's own renders."""
from __future__ import annotations

import pytest

from blender_harness import ROOT, load_script, needs_bpy, run_scenario

timing = load_script("nc_timing", ROOT / "normalcrafter_blender" / "timing.py")
ui_text = load_script("nc_ui_text", ROOT / "normalcrafter_blender" / "ui_text.py")


def test_strip_span_with_handles_and_animation_offsets():
    # Content starts at 10 after 3 trimmed source frames; handles trim 2 and 5.
    span = timing.strip_span(frame_start=10, final_start=12, final_end=18, anim_offset_start=3, frame_duration=13)
    assert (span.first, span.stop, span.timeline_first) == (5, 11, 12)
    assert span.timeline_frame(10) == 17


def test_strip_span_skips_held_frames_beyond_the_content():
    # Handles dragged 2 frames before and 3 after a 12-frame content at 10..21.
    span = timing.strip_span(frame_start=10, final_start=8, final_end=25, anim_offset_start=0, frame_duration=12)
    assert (span.first, span.stop, span.timeline_first) == (0, 12, 10)


def test_strip_span_outside_the_content_is_refused():
    with pytest.raises(timing.PlanError):
        timing.strip_span(frame_start=10, final_start=30, final_end=35, anim_offset_start=0, frame_duration=12)


def test_clip_span_follows_start_and_offset():
    span = timing.clip_span(frame_start=100, frame_offset=10, frame_duration=16)
    assert (span.first, span.stop, span.timeline_first) == (10, 16, 100)
    span = timing.clip_span(frame_start=1, frame_offset=-3, frame_duration=16)
    assert (span.first, span.stop, span.timeline_first) == (0, 13, 4)
    with pytest.raises(timing.PlanError):
        timing.clip_span(frame_start=1, frame_offset=16, frame_duration=16)


def test_progress_text_has_frames_speed_and_time_left():
    assert ui_text.progress_text(12, 40, 3.14, 9.4) == "12 / 40 frames · 3.14 fps · 9 s left"
    assert ui_text.progress_text(40, 40, 12.0, 0.0) == "40 / 40 frames · 12 fps"
    assert ui_text.duration(3725) == "1 h 02 min" and ui_text.duration(None) == "?"


@pytest.mark.blender
@needs_bpy
def test_span_is_what_blender_shows(clips, tmp_path):
    """Render every timeline frame around four strips (trims, animation
    offsets, held frames) and read back which source frame Blender drew: the
    span must name exactly those frames, at exactly those timeline frames."""
    facts = run_scenario("timing", {"clip": str(clips["a"]), "tmp": str(tmp_path)}, tmp_path)
    for case in facts["cases"]:
        s = case["strip"]
        span = timing.strip_span(s["frame_start"], s["final_start"], s["final_end"], s["anim_start"], s["duration"])
        shown = {int(t): round((v * 255 - 8) / 14) for t, v in case["shown"].items()}
        for t, source in shown.items():
            if span.timeline_first <= t < span.timeline_first + span.count:
                assert source == span.first + t - span.timeline_first, (s, t)
            elif s["final_start"] <= t < s["final_end"]:  # a held frame: not estimated again
                assert source in (span.first, span.stop - 1), (s, t)
            else:
                assert source < 0, (s, t)  # nothing drawn outside the strip
        assert span.count > 0
