"""Finding and loading the normal pass and the plate, and their timing.

Both are numbered by *input frame number* (a video's 0-based frame index, or
the number in an image sequence's file names); NormalCrafter names its output
``normal.<frame:05d>.exr`` with the same numbers. Timeline frame T shows input
frame ``T - shift``; the shift comes from the plate.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import bpy

from .errors import RelightError

VIDEO_EXTENSIONS = frozenset((".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mxf", ".ogv", ".mpg", ".mpeg",
                              ".mts", ".m2ts", ".flv", ".dv", ".wmv"))
_NUMBERED = re.compile(r"^(.*?)(\d+)(\D*)$")


@dataclass(frozen=True)
class NumberedFiles:
    """A run of files ``<prefix><number><suffix>`` in one folder."""

    first_path: str
    first: int
    last: int


def find_sequence(path: str) -> NumberedFiles:
    """The numbered sequence a file belongs to, or NormalCrafter's normal pass in a folder."""
    path = bpy.path.abspath(path)
    if os.path.isdir(path):
        folder, pattern = path, re.compile(r"^normal\.(\d+)\.exr$")
    elif os.path.isfile(path):
        folder, name = os.path.split(path)
        match = _NUMBERED.match(name)
        if match is None:
            return NumberedFiles(path, 0, 0)
        prefix, _, suffix = match.groups()
        pattern = re.compile("^" + re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    else:
        raise RelightError(f"no such file or folder: {path}")
    numbers = {}
    for entry in os.listdir(folder):
        match = pattern.match(entry)
        if match:
            numbers[int(match.group(1))] = os.path.join(folder, entry)
    if not numbers:
        raise RelightError(f"no normal.<frame>.exr files in {path}")
    first = min(numbers)
    return NumberedFiles(numbers[first], first, max(numbers))


def load_normals(path: str) -> tuple[bpy.types.Image, NumberedFiles]:
    """The normal pass as an image sequence of data (never colour-managed)."""
    files = find_sequence(path)
    if not files.first_path.lower().endswith(".exr"):
        raise RelightError(f"the normal pass must be EXR files, got {files.first_path}")
    image = _load_image(files.first_path)
    if "N" not in _passes(image):
        raise RelightError(f"{files.first_path} has no N.X/N.Y/N.Z channels (not a NormalCrafter EXR)")
    image.source = "SEQUENCE" if files.last > files.first else "FILE"
    image.colorspace_settings.name = "Non-Color"
    return image, files


def _passes(image: bpy.types.Image) -> list[str]:
    """The outputs an Image node shows for ``image`` (a multilayer EXR's passes)."""
    # Asked of a throwaway node, so a bad file fails before the setup is touched.
    probe = bpy.data.node_groups.new(".normalcrafter probe", "CompositorNodeTree")
    try:
        node = probe.nodes.new("CompositorNodeImage")
        node.image = image
        return [socket.name for socket in node.outputs]
    finally:
        bpy.data.node_groups.remove(probe)


def load_plate(path: str) -> bpy.types.MovieClip | bpy.types.Image:
    """A video as a movie clip, anything else as an image (a sequence when numbered)."""
    path = bpy.path.abspath(path)
    if not os.path.isfile(path):
        raise RelightError(f"plate not found: {path}")
    if os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS:
        return _load_clip(path)
    files = find_sequence(path)
    image = _load_image(path)
    image.source = "SEQUENCE" if files.last > files.first else "FILE"
    return image


def plate_size(plate: bpy.types.MovieClip | bpy.types.Image) -> tuple[int, int]:
    width, height = plate.size[:]
    if width == 0 or height == 0:
        raise RelightError(f"cannot read the plate {plate.filepath}")
    return width, height


def clip_shift(clip: bpy.types.MovieClip) -> int:
    """Timeline frame T shows the clip's 0-based frame ``T - clip_shift(clip)``."""
    return clip.frame_start - clip.frame_offset


def set_sequence_timing(node: bpy.types.Node, files: NumberedFiles, shift: int) -> None:
    """Make an Image node show file number ``T - shift`` at timeline frame T."""
    # Blender's image user shows file number T - frame_start + 1 + frame_offset.
    node.frame_start = shift + files.first
    node.frame_offset = files.first - 1
    node.frame_duration = files.last - files.first + 1
    node.use_auto_refresh = True
    node.use_cyclic = False


def _load_clip(path: str) -> bpy.types.MovieClip:
    try:
        return bpy.data.movieclips.load(path, check_existing=True)
    except RuntimeError as exc:
        raise RelightError(f"cannot open the plate {path}: {exc}") from None


def _load_image(path: str) -> bpy.types.Image:
    try:
        return bpy.data.images.load(path, check_existing=True)
    except RuntimeError as exc:
        raise RelightError(f"cannot open {path}: {exc}") from None


def clip_for_strip(strip: bpy.types.Strip) -> bpy.types.MovieClip:
    """The movie strip's file as a movie clip; a clip loaded here gets the strip's timing."""
    if strip.type != "MOVIE":
        raise RelightError(f"strip '{strip.name}' is not a movie strip")
    known = set(bpy.data.movieclips)
    clip = _load_clip(bpy.path.abspath(strip.filepath))
    if clip not in known:
        # The strip shows source frame T - frame_start + animation_offset_start;
        # the clip shows T - frame_start + frame_offset.
        clip.frame_start = int(round(strip.frame_start))
        clip.frame_offset = int(strip.animation_offset_start)
    return clip
