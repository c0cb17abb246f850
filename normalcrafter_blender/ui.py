"""The "NormalCrafter" sidebar tab, the same in the Video Sequencer and the
Movie Clip editor: targets, Estimate button, progress with Cancel, the last
outcome, the Relight section (when installed), then Settings and Advanced
sub-panels."""
from __future__ import annotations

import bpy

from . import compat, ui_text
from .planning import clip_frames, strip_frames
from .session import SESSION
from .timing import PlanError

CATEGORY = "NormalCrafter"
MAX_LISTED = 6


def _span_text(span) -> str:
    last = span.timeline_first + span.count - 1
    return f"frames {span.timeline_first}-{last} ({span.count})"


def _draw_targets(layout, context) -> int:
    """List what Estimate would run on; return how many can run."""
    box = layout.box()
    if context.space_data.type == "CLIP_EDITOR":
        clip = context.space_data.clip
        if clip is None:
            box.label(text="Open a movie clip", icon="INFO")
            return 0
        try:
            _path, span = clip_frames(clip)
        except PlanError as exc:
            ui_text.draw_lines(box, [str(exc)], "ERROR")
            return 0
        box.label(text=f"{clip.name}: {_span_text(span)}", icon="FILE_MOVIE")
        return 1
    strips = compat.selected_movie_strips(context.scene)
    if not strips:
        box.label(text="Select one or more movie strips", icon="INFO")
        return 0
    ready = 0
    for i, strip in enumerate(strips):
        try:
            _path, span = strip_frames(context.scene, strip)
        except PlanError as exc:
            if i < MAX_LISTED:
                ui_text.draw_lines(box, [str(exc)], "ERROR")
            continue
        ready += 1
        if i < MAX_LISTED:
            box.label(text=f"{strip.name}: {_span_text(span)}", icon="SEQUENCE")
    if len(strips) > MAX_LISTED:
        box.label(text=f"... and {len(strips) - MAX_LISTED} more", icon="BLANK1")
    return ready


def _draw_progress(layout) -> None:
    record = SESSION.current()
    number = SESSION.records.index(record) + 1
    col = layout.column(align=True)
    col.label(text=f"Job {number} of {len(SESSION.records)}: {record.plan.target}", icon="RENDER_ANIMATION")
    if record.total:
        text = ui_text.progress_text(record.done, record.total, record.fps, record.eta_s)
        col.progress(factor=record.done / record.total, type="BAR", text=text)
    else:
        col.progress(factor=0.0, type="BAR", text=record.stage)
    row = layout.row()
    row.operator("normalcrafter.cancel", icon="CANCEL")
    row.label(text="or Esc")


def draw_main(layout, context) -> None:
    ready = _draw_targets(layout, context)
    row = layout.row()
    row.scale_y = 1.4
    row.enabled = ready > 0
    label = "Estimate Normals" if ready < 2 else f"Estimate Normals ({ready} strips)"
    row.operator("normalcrafter.estimate", text=label, icon="NORMALS_FACE")
    if SESSION.busy:
        _draw_progress(layout)
    elif SESSION.status.lines:
        ui_text.draw_lines(layout.box(), SESSION.status.lines, SESSION.status.icon)


def draw_settings(layout, context) -> None:
    settings = context.scene.normalcrafter
    layout.use_property_split = True
    layout.use_property_decorate = False
    col = layout.column()
    col.prop(settings, "model")
    col.prop(settings, "max_res")
    col.prop(settings, "window")
    col.prop(settings, "precision")
    col.prop(settings, "output_dir")
    col.prop(settings, "world_space")
    if not settings.output_dir or not settings.model:
        prefs = context.preferences.addons[__package__].preferences
        notes = []
        if not settings.model:
            notes.append(f"Model: {prefs.model_source or 'the worker default'} (preferences)")
        if not settings.output_dir:
            notes.append(f"Output: {prefs.output_dir}<clip name>/ (preferences)")
        ui_text.draw_lines(col, notes, "INFO")


def draw_advanced(layout, context) -> None:
    settings = context.scene.normalcrafter
    layout.use_property_split = True
    layout.use_property_decorate = False
    col = layout.column()
    col.prop(settings, "stride")
    col.prop(settings, "decode_chunk")
    col.prop(settings, "renormalize")
    col.prop(settings, "compile")


def _panel(space: str, name: str, label: str, draw, parent: str | None = None, closed: bool = False) -> type:
    attrs = {
        "bl_idname": f"NORMALCRAFTER_PT_{space.lower()}_{name}",
        "bl_label": label,
        "bl_space_type": space,
        "bl_region_type": "UI",
        "bl_category": CATEGORY,
        "draw": lambda self, context: draw(self.layout, context),
    }
    if parent:
        attrs["bl_parent_id"] = f"NORMALCRAFTER_PT_{space.lower()}_{parent}"
    if closed:
        attrs["bl_options"] = {"DEFAULT_CLOSED"}
    return type(attrs["bl_idname"], (bpy.types.Panel,), attrs)


def panel_classes(relight_draw=None) -> tuple[type, ...]:
    """The panels for both editors; the main one ends with ``relight_draw``'s
    section when the relighting tools are installed."""

    def main(layout, context) -> None:
        draw_main(layout, context)
        if relight_draw is not None:
            relight_draw(layout, context)

    classes = []
    for space in ("SEQUENCE_EDITOR", "CLIP_EDITOR"):
        classes.append(_panel(space, "main", "Normal Pass", main))
        classes.append(_panel(space, "settings", "Settings", draw_settings, parent="main"))
        classes.append(_panel(space, "advanced", "Advanced", draw_advanced, parent="main", closed=True))
    return tuple(classes)
