"""Bring a finished normal pass into the .blend: an image strip above its
movie strip, or an image-sequence datablock beside its movie clip (also for a
strip where the sequencer cannot show multilayer EXRs, before 4.4).

Re-running a job replaces what an earlier run imported for the same strip or
clip instead of stacking copies.
"""
from __future__ import annotations

import os

import bpy

from . import compat
from .exr_info import read_exr_info, sequencer_can_show
from .planning import Plan
from .timing import FrameSpan, PlanError

TAG_PLATE = "normalcrafter_plate"  # on an image strip (or image): the name of its movie strip
TAG_CLIP = "normalcrafter_clip"  # on an image: the name of its movie clip
MAX_CHANNEL = 128


def frame_file(output_dir: str, frame: int) -> str:
    return os.path.join(output_dir, f"normal.{frame:05d}.exr")


def check_files(output_dir: str, span: FrameSpan) -> list[str]:
    """Every frame file of the span, or PlanError naming the first missing one."""
    files = [frame_file(output_dir, n) for n in range(span.first, span.stop)]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise PlanError(f"{len(missing)} of {len(files)} frames are missing, e.g. {missing[0]}")
    return files


def _stored_path(path: str) -> str:
    """Relative to the .blend when Blender is set to store relative paths."""
    if bpy.data.is_saved and bpy.context.preferences.filepaths.use_relative_paths:
        try:
            return bpy.path.relpath(path)
        except ValueError:  # another drive on Windows
            return path
    return path


def _free_channel(container, above: int, start: int, stop: int) -> int:
    for channel in range(above + 1, MAX_CHANNEL + 1):
        if not any(
            s.channel == channel and s.frame_final_start < stop and s.frame_final_end > start for s in container
        ):
            return channel
    raise PlanError(f"no free channel above channel {above} for frames {start}-{stop - 1}")


def _match_plate(strip, plate, width: int, height: int) -> None:
    """Scale and place the pass so it covers its plate exactly, although it
    was estimated at a lower resolution."""
    elem = plate.elements[0] if len(plate.elements) else None
    if elem is None or not (elem.orig_width and elem.orig_height):
        return
    sx, sy = elem.orig_width / width, elem.orig_height / height
    t, pt = strip.transform, plate.transform
    t.scale_x, t.scale_y = pt.scale_x * sx, pt.scale_y * sy
    t.offset_x, t.offset_y, t.rotation = pt.offset_x, pt.offset_y, pt.rotation
    t.origin = pt.origin
    for side, factor in (("min_x", sx), ("max_x", sx), ("min_y", sy), ("max_y", sy)):
        setattr(strip.crop, side, round(getattr(plate.crop, side) / factor))
    strip.use_flip_x, strip.use_flip_y = plate.use_flip_x, plate.use_flip_y


def import_strip(plan: Plan, output_dir: str) -> tuple[str, list[str]]:
    """Add the pass as an image strip in the first free channel above its
    movie strip, frame for frame; return a one-line report and warnings."""
    scene = bpy.data.scenes.get(plan.scene)
    plate = None
    if scene is not None:
        plate = next((s for s in compat.all_strips(scene) if s.name == plan.target), None)
    if plate is None:
        raise PlanError(f"strip '{plan.target}' is gone; the frames are in {output_dir}")
    files = check_files(output_dir, plan.span)
    if not compat.SEQUENCER_SHOWS_MULTILAYER_EXR:
        image = _load_sequence(TAG_PLATE, plate.name, plan.span, files)
        return (f"'{plate.name}': {len(files)} normal frames in {output_dir}, image '{image.name}'"), [
            f"Blender {bpy.app.version_string}'s sequencer cannot show multilayer EXR files (4.4 and later can), "
            f"so '{plate.name}' got an image for the compositor instead of an image strip"]
    info = read_exr_info(files[0])
    if not sequencer_can_show(info.channels):
        # Blender's sequencer crashes on an EXR without an RGB pass; never add one.
        raise PlanError(f"the EXR files in {output_dir} have no RGB channels for the sequencer "
                        "(update the worker's normalcrafter package)")
    container = compat.container_of(scene, plate)
    for old in [s for s in container if s.type == "IMAGE" and s.get(TAG_PLATE) == plate.name]:
        container.remove(old)
    start, stop = plan.span.timeline_first, plan.span.timeline_first + plan.span.count
    channel = _free_channel(container, plate.channel, start, stop)
    strip = container.new_image(f"{plate.name} normals", files[0], channel, start)
    for f in files[1:]:
        strip.elements.append(os.path.basename(f))
    strip.directory = _stored_path(output_dir) + os.sep
    strip.colorspace_settings.name = "Non-Color"
    strip[TAG_PLATE] = plate.name
    _match_plate(strip, plate, info.width, info.height)
    return (f"'{plate.name}': {len(files)} normal frames in {output_dir}, "
            f"image strip '{strip.name}' in channel {channel}, frames {start}-{stop - 1}"), []


def _load_sequence(tag: str, target: str, span: FrameSpan, files: list[str]) -> bpy.types.Image:
    """The pass as a Non-Color image sequence, kept with a fake user (so
    saving the .blend keeps it before anything uses it). Custom properties
    give the Image User settings that line it up with the timeline:
    ``frame_start``, ``frame_offset``, ``frame_duration``."""
    image = next((im for im in bpy.data.images if im.get(tag) == target), None)
    if image is None:
        image = bpy.data.images.load(files[0], check_existing=False)
        image.name = f"{target} normals"
    image.filepath = _stored_path(files[0])
    image.source = "SEQUENCE"
    image.colorspace_settings.name = "Non-Color"
    image.use_fake_user = True
    image[tag] = target
    # An Image User shows file number (scene frame - frame_start + 1) + frame_offset.
    image["frame_start"] = span.timeline_first
    image["frame_offset"] = span.first - 1
    image["frame_duration"] = span.count
    image.reload()
    return image


def import_clip(plan: Plan, output_dir: str) -> tuple[str, list[str]]:
    """Load the pass as an image sequence; return a one-line report (and no warnings)."""
    files = check_files(output_dir, plan.span)
    image = _load_sequence(TAG_CLIP, plan.target, plan.span, files)
    start, stop = plan.span.timeline_first, plan.span.timeline_first + plan.span.count - 1
    return (f"clip '{plan.target}': {len(files)} normal frames in {output_dir}, "
            f"image '{image.name}' (scene frames {start}-{stop})"), []


def import_result(plan: Plan, result: dict) -> tuple[str, list[str]]:
    output_dir = result.get("output_dir") or plan.output_dir
    if plan.kind == "strip":
        return import_strip(plan, output_dir)
    return import_clip(plan, output_dir)
