"""From a movie strip or a movie clip to a worker job: input file, exact
frame range, output folder and settings."""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

import bpy

from .timing import FrameSpan, PlanError, clip_span, strip_span

VIDEO_SUFFIX = re.compile(r"\.(mp4|mov|mkv|avi|webm|m4v|mxf|mpe?g|ogv|flv|wmv|dv|mts|m2ts)$", re.IGNORECASE)


@dataclass(frozen=True)
class Plan:
    kind: str  # "strip" or "clip"
    scene: str  # the scene's name (the strip's owner)
    target: str  # the strip's or the clip's name
    input_path: str
    output_dir: str
    span: FrameSpan
    settings: tuple  # job fields other than input, output and frames, as sorted pairs

    def job(self) -> dict:
        return {
            "input": self.input_path,
            "output_dir": self.output_dir,
            "frames": [self.span.first, self.span.stop],
            **dict(self.settings),
        }


def folder_name(name: str) -> str:
    """A file-system-safe folder name for a strip or clip ("shot 1.mp4" -> "shot_1")."""
    stem = VIDEO_SUFFIX.sub("", name).strip()
    safe = re.sub(r"[^\w.-]+", "_", stem).strip("._")
    return safe or "clip"


def output_root(base: str, package: str) -> str:
    """The absolute folder under which each clip gets its sub-folder. A
    ``//`` path needs a saved .blend; unsaved files use the add-on's user folder."""
    if base.startswith("//") and not bpy.data.is_saved:
        return bpy.utils.extension_path_user(package, path="normals", create=True)
    return os.path.normpath(bpy.path.abspath(base))


def job_settings(settings, prefs) -> tuple:
    """The job fields from the scene's settings, falling back to the preferences."""
    fields = {
        "device": prefs.device,
        "dtype": prefs.precision if settings.precision == "PREFS" else settings.precision,
        "window": settings.window,
        "stride": settings.stride,
        "decode_chunk": settings.decode_chunk,
        "max_res": settings.max_res,
        "format": "exr",
        "renormalize": settings.renormalize,
        "compile": settings.compile,
        "convention": "opengl",
    }
    model = settings.model.strip() or prefs.model_source.strip()
    if model:
        # A local folder is sent absolute: the worker does not know the .blend's folder.
        is_path = model.startswith("//") or os.path.isabs(model) or os.path.isdir(bpy.path.abspath(model))
        fields["model"] = os.path.normpath(bpy.path.abspath(model)) if is_path else model
    return tuple(sorted(fields.items()))


def _source_file(path: str, library, what: str) -> str:
    if not path:
        raise PlanError(f"{what} has no file")
    full = os.path.normpath(bpy.path.abspath(path, library=library))
    if not os.path.isfile(full):
        raise PlanError(f"{what}: movie file not found: {full}")
    return full


def strip_frames(scene: bpy.types.Scene, strip) -> tuple[str, FrameSpan]:
    """The movie file of a strip and the frames it shows, or PlanError."""
    what = f"strip '{strip.name}'"
    if strip.type != "MOVIE":
        raise PlanError(f"{what} is not a movie strip")
    # The span assumes frame n of the movie plays at one fixed timeline frame;
    # these change that mapping, so they are refused rather than misaligned.
    if strip.use_reverse_frames:
        raise PlanError(f"{what} plays reversed; turn off Reverse Frames")
    if strip.strobe > 1.0:
        raise PlanError(f"{what} uses strobe {strip.strobe:g}; set Strobe to 1")
    if len(getattr(strip, "retiming_keys", ())) > 0:
        raise PlanError(f"{what} is retimed; reset its retiming (Strip > Retiming > Reset)")
    path = _source_file(strip.filepath, scene.library, what)
    try:
        span = strip_span(strip.frame_start, strip.frame_final_start, strip.frame_final_end,
                          strip.animation_offset_start, strip.frame_duration)
    except PlanError as exc:
        raise PlanError(f"{what}: {exc}") from None
    return path, span


def clip_frames(clip: bpy.types.MovieClip) -> tuple[str, FrameSpan]:
    """The movie file of a clip and its frames, or PlanError."""
    what = f"clip '{clip.name}'"
    if clip.source != "MOVIE":
        raise PlanError(f"{what} is an image sequence; use a movie file (or the command line for sequences)")
    path = _source_file(clip.filepath, clip.library, what)
    if clip.frame_duration <= 0:
        raise PlanError(f"{what}: Blender reads no frames from {path}")
    try:
        span = clip_span(clip.frame_start, clip.frame_offset, clip.frame_duration)
    except PlanError as exc:
        raise PlanError(f"{what}: {exc}") from None
    return path, span


def with_world_space(plan: Plan, scene: bpy.types.Scene, frame_map: dict[int, int]) -> Plan:
    """Export the scene camera's rotation for every frame the plan covers,
    beside its output folder, and ask the job for world-space normals too."""
    from .relight import RelightError, export_camera_rotations

    path = plan.output_dir.rstrip(os.sep) + ".camera_rotations.json"
    try:
        export_camera_rotations(scene, path, frame_map)
    except RelightError as exc:
        raise PlanError(f"world-space normals for '{plan.target}': {exc}") from None
    return dataclasses.replace(plan, settings=tuple(sorted({**dict(plan.settings), "camera_rotations": path}.items())))


def plan_strip(scene: bpy.types.Scene, strip, settings, prefs, root: str) -> Plan:
    path, span = strip_frames(scene, strip)
    plan = Plan("strip", scene.name, strip.name, path, os.path.join(root, folder_name(strip.name)), span,
                job_settings(settings, prefs))
    if settings.world_space:
        from .relight import strip_frame_map

        plan = with_world_space(plan, scene, strip_frame_map(strip))
    return plan


def plan_clip(scene: bpy.types.Scene, clip: bpy.types.MovieClip, settings, prefs, root: str) -> Plan:
    path, span = clip_frames(clip)
    plan = Plan("clip", scene.name, clip.name, path, os.path.join(root, folder_name(clip.name)), span,
                job_settings(settings, prefs))
    if settings.world_space:
        from .relight import clip_frame_map

        plan = with_world_space(plan, scene, clip_frame_map(clip))
    return plan
