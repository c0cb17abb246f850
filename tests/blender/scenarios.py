"""Blender sessions for the extension tests, one per process:

    python scenarios.py NAME '{"result": "facts.json", ...}'

Each scenario drives real bpy (and, through the installed extension, a real
worker process) and writes the facts it observed as JSON; the pytest side
asserts on them. BLENDER_USER_RESOURCES must be set by the caller: bpy reads
it when it is imported.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import time
import traceback
import types

import bpy

MODULE = "bl_ext.user_default.normalcrafter"


def addon(name: str):
    return importlib.import_module(f"{MODULE}.{name}")


def strips_of(scene):
    ed = scene.sequence_editor
    return ed.strips if hasattr(ed, "strips") else ed.sequences


def all_strips(scene):
    ed = scene.sequence_editor
    return list(ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all)


def install(args: dict) -> None:
    result = bpy.ops.extensions.package_install_files(filepath=args["zip"], repo="user_default",
                                                     enable_on_install=True)
    assert result == {"FINISHED"}, result
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.python_path = args["python"]
    prefs.model_source = args["model"]


def add_movie(scene, name: str, path: str, channel: int, start: int, anim=(0, 0), offsets=(0, 0)):
    if scene.sequence_editor is None:
        scene.sequence_editor_create()
    strip = strips_of(scene).new_movie(name, path, channel, start)
    strip.animation_offset_start, strip.animation_offset_end = anim
    strip.frame_offset_start, strip.frame_offset_end = offsets
    return strip


def strip_facts(strip) -> dict:
    facts = {
        "name": strip.name, "type": strip.type, "channel": strip.channel,
        "frame_start": strip.frame_start, "final_start": strip.frame_final_start,
        "final_end": strip.frame_final_end, "duration": strip.frame_duration,
        "anim_start": strip.animation_offset_start, "anim_end": strip.animation_offset_end,
        "scale": [strip.transform.scale_x, strip.transform.scale_y],
        "tag": strip.get("normalcrafter_plate"),
    }
    if strip.type == "IMAGE":
        facts["directory"] = bpy.path.abspath(strip.directory)
        facts["files"] = [e.filename for e in strip.elements]
        facts["colorspace"] = strip.colorspace_settings.name
    return facts


def select_only(scene, names: list[str]) -> None:
    for s in all_strips(scene):
        s.select = s.name in names


def estimate(**kwargs) -> dict:
    """Run the operator the way a script does; a reported error comes back as text."""
    t = time.monotonic()
    try:
        result = bpy.ops.normalcrafter.estimate(**kwargs)
        return {"result": sorted(result), "error": None, "seconds": time.monotonic() - t}
    except RuntimeError as exc:
        return {"result": None, "error": str(exc), "seconds": time.monotonic() - t}


def status_lines() -> list[str]:
    return list(addon("session").SESSION.status.lines)


def render_png(scene, frame: int, path: str) -> list[float]:
    """Render the sequencer at ``frame``; return the mean RGB of the bottom-right quarter."""
    scene.frame_set(frame)
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(path, check_existing=False)
    w, h = image.size
    pixels = list(image.pixels)
    bpy.data.images.remove(image)
    values = [0.0, 0.0, 0.0]
    count = 0
    for y in range(0, h // 2):  # image rows start at the bottom
        for x in range(w // 2, w):
            i = 4 * (y * w + x)
            for c in range(3):
                values[c] += pixels[i + c]
            count += 1
    return [v / count for v in values]


def setup_render(scene, png: bool) -> None:
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "IMAGE"
    if png:
        settings.file_format, settings.color_depth, settings.color_mode = "PNG", "8", "RGB"
    else:
        # Non-Color sequencer space: the rendered pixels are the strip's data as stored.
        scene.sequencer_colorspace_settings.name = "Non-Color"
        settings.file_format, settings.color_depth, settings.color_mode = "OPEN_EXR", "32", "RGB"


class PanelRecorder:
    """Stands in for a UILayout where bpy has no UI (background): records
    what a panel's draw code asks for, as text lines, and checks every call
    against the real UILayout API of this Blender (argument names, icon
    names, operator ids, property names), so a draw call the real UI would
    reject fails here."""

    API = bpy.types.UILayout.bl_rna.functions
    ICONS = set(API["label"].parameters["icon"].enum_items.keys())

    def __init__(self, lines: list[str] | None = None, depth: int = 0) -> None:
        self.lines = [] if lines is None else lines
        self.depth = depth

    def __setattr__(self, name, value) -> None:
        if name not in ("lines", "depth") and name not in bpy.types.UILayout.bl_rna.properties:
            raise AttributeError(f"UILayout has no attribute {name!r}")
        object.__setattr__(self, name, value)

    def _check(self, function: str, kwargs: dict) -> None:
        params = self.API[function].parameters
        unknown = set(kwargs) - set(params.keys())
        if unknown:
            raise TypeError(f"UILayout.{function}() got unknown arguments {unknown}")
        if kwargs.get("icon", "NONE") not in self.ICONS:
            raise TypeError(f"unknown icon {kwargs['icon']!r}")

    def _add(self, text: str) -> None:
        self.lines.append("  " * self.depth + text)

    def _nest(self, function: str, kwargs: dict, tag: str | None):
        self._check(function, kwargs)
        if tag:
            self._add(tag)
        return PanelRecorder(self.lines, self.depth + (1 if tag else 0))

    def box(self, **kw):
        return self._nest("box", kw, "[box]")

    def column(self, **kw):
        return self._nest("column", kw, None)

    def row(self, **kw):
        return self._nest("row", kw, None)

    def separator(self, **kw) -> None:
        self._check("separator", kw)

    def label(self, **kw) -> None:
        self._check("label", kw)
        icon = kw.get("icon", "NONE")
        self._add(("" if icon in ("NONE", "BLANK1") else f"({icon}) ") + kw.get("text", ""))

    def operator(self, idname: str, **kw):
        self._check("operator", kw)
        category, name = idname.split(".")
        rna = getattr(getattr(bpy.ops, category), name).get_rna_type()  # raises if no such operator
        self._add(f"[button {idname}] {kw.get('text', rna.name)}")
        return type("OperatorProperties", (), {})()

    def prop(self, data, name: str, **kw) -> None:
        self._check("prop", kw)
        if name not in data.bl_rna.properties:
            raise AttributeError(f"{data.bl_rna.identifier} has no property {name!r}")
        self._add(f"[field] {data.bl_rna.properties[name].name}: {getattr(data, name)!r}")

    def progress(self, **kw) -> None:
        self._check("progress", kw)
        self._add(f"[progress {kw.get('factor', 0):.2f}] {kw.get('text', '')}")


def draw_panels(space: str, clip=None) -> list[str]:
    """Every NormalCrafter panel of ``space`` as the sidebar would draw it."""
    context = types.SimpleNamespace(
        scene=bpy.context.scene, preferences=bpy.context.preferences, active_object=None,
        space_data=types.SimpleNamespace(type=space, clip=clip),
    )
    lines = []
    prefix = f"NORMALCRAFTER_PT_{space.lower()}_"
    for name in ("main", "settings", "advanced"):
        panel = getattr(bpy.types, prefix + name)
        lines.append(f"== {panel.bl_label}")
        recorder = PanelRecorder()
        panel.draw(types.SimpleNamespace(layout=recorder), context)
        lines += recorder.lines
    return lines


class _WithLayout:
    """The preferences object with a recorder in place of its (read-only) layout."""

    def __init__(self, real, layout) -> None:
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "layout", layout)

    def __getattr__(self, name):
        return getattr(self._real, name)


def draw_preferences() -> list[str]:
    prefs = bpy.context.preferences.addons[MODULE].preferences
    recorder = PanelRecorder()
    type(prefs).draw(_WithLayout(prefs, recorder), bpy.context)
    return recorder.lines


def image_facts() -> list[dict]:
    """The images the extension made (for a strip before 4.4, for a clip)."""
    return [{
        "name": im.name, "plate": im.get("normalcrafter_plate"), "clip": im.get("normalcrafter_clip"),
        "source": im.source, "colorspace": im.colorspace_settings.name,
        "filepath": bpy.path.abspath(im.filepath), "fake_user": im.use_fake_user,
        "frame_start": im["frame_start"], "frame_offset": im["frame_offset"], "frame_duration": im["frame_duration"],
    } for im in bpy.data.images if "frame_start" in im]


# -- scenarios -------------------------------------------------------------
def scenario_timing(args: dict) -> dict:
    """Which source frame Blender itself shows at each timeline frame, for
    strips with offsets, animation offsets and held frames."""
    scene = bpy.context.scene
    setup_render(scene, png=True)
    strip = add_movie(scene, "plate", args["clip"], 2, 10)
    cases = []
    cases_in = (((3, 0), (2, 5), 10), ((0, 4), (-2, 0), 10), ((5, 2), (0, 0), 1), ((1, 1), (3, -2), 7))
    for anim, offsets, start in cases_in:
        strip.animation_offset_start, strip.animation_offset_end = anim
        strip.frame_offset_start, strip.frame_offset_end = offsets
        strip.frame_start = start
        shown = {}
        for t in range(strip.frame_final_start - 1, strip.frame_final_end + 1):
            shown[t] = render_png(scene, t, os.path.join(args["tmp"], "timing.png"))[0]
        cases.append({"strip": strip_facts(strip), "shown": shown})
    return {"cases": cases}


def scenario_flow(args: dict) -> dict:
    facts: dict = {}
    tmp = args["tmp"]
    install(args)
    scene = bpy.context.scene
    facts["version"] = bpy.app.version_string
    facts["panels"] = sorted(c for c in dir(bpy.types) if c.startswith("NORMALCRAFTER_PT_"))
    planning = addon("planning")
    facts["unsaved_root"] = planning.output_root("//normals/", MODULE)
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(tmp, "flow.blend"))
    scene.normalcrafter.max_res = 64
    a, b = args["clips"]["a"], args["clips"]["b"]
    add_movie(scene, "plate", a, 2, 10, anim=(3, 0), offsets=(2, 7))
    add_movie(scene, "second", a, 5, 40, offsets=(1, 11))
    add_movie(scene, "third", b, 2, 60, offsets=(0, 12))
    session = addon("session").SESSION
    operators = addon("operators")

    # A bad interpreter: one clean line, and the add-on stays usable.
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.python_path = os.path.join(tmp, "no-such-python")
    select_only(scene, ["plate"])
    facts["bad_python"] = {**estimate(), "status": status_lines()}
    prefs.python_path = args["python"]

    # The non-blocking path, exactly as the modal operator drives it from its
    # timer: submit returns at once, the worker starts on a thread, pump()
    # never waits.
    facts["panel_idle"] = draw_panels("SEQUENCE_EDITOR")
    plans, problems = operators.gather_plans(bpy.context, "", "")
    config = operators.worker_config(bpy.context)
    t = time.monotonic()
    records = session.submit(plans, config, keep_warm=True, blocking=False)
    submit_s = time.monotonic() - t
    states, progress, pump_s = [], [], []
    while not all(r.finished for r in records):
        t = time.monotonic()
        for r in session.pump():
            operators.finish_record(r)
        pump_s.append(time.monotonic() - t)
        if records[0].state == "running" and "panel_running" not in facts:
            facts["panel_running"] = draw_panels("SEQUENCE_EDITOR")
        states.append(records[0].state)
        progress.append(records[0].done)
        time.sleep(0.02)
    facts["modal"] = {
        "plans": [p.job() for p in plans], "submit_s": submit_s, "max_pump_s": max(pump_s),
        "pumps": len(pump_s), "states": sorted(set(states)), "progress": sorted(set(progress)),
        "final": records[0].state, "error": records[0].error, "report": records[0].report,
        "result": records[0].result, "hello": session.hello,
    }
    facts["after_modal"] = [strip_facts(s) for s in all_strips(scene)]

    # Rendered normal strip, two frames, with the plate muted: the test
    # compares them with the EXR files of the source frames they should show.
    setup_render(scene, png=False)
    movies = [s for s in all_strips(scene) if s.type == "MOVIE"]
    for s in movies:
        s.mute = True
    renders = {}
    for t in (13, 15):
        path = os.path.join(tmp, f"render_{t}.exr")
        scene.frame_set(t)
        scene.render.filepath = path
        bpy.ops.render.render(write_still=True)
        renders[t] = path
    for s in movies:
        s.mute = False
    facts["renders"] = renders

    # The blocking operator on the same strip: the worker resumes (nothing to
    # do) and the import replaces the earlier image strip.
    facts["rerun"] = estimate()
    facts["panel_done"] = draw_panels("SEQUENCE_EDITOR")
    facts["after_rerun"] = [strip_facts(s) for s in all_strips(scene)]

    # Batch: two selected strips, one click, one warm worker.
    select_only(scene, ["second", "third"])
    pid = session.hello["pid"]
    facts["batch"] = {**estimate(), "status": status_lines(), "same_worker": session.hello["pid"] == pid,
                      "results": [r.result for r in session.records]}
    facts["after_batch"] = [strip_facts(s) for s in all_strips(scene)]

    # World-space normals: the scene camera turns 90 degrees about Z over the
    # strip; the job gets its per-frame rotations and writes an Nworld pass.
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.rotation_euler = (1.2, 0.0, 0.0)
    cam.keyframe_insert("rotation_euler", frame=60)
    cam.rotation_euler = (1.2, 0.0, 1.5707963)
    cam.keyframe_insert("rotation_euler", frame=75)
    add_movie(scene, "world", b, 7, 60, offsets=(0, 12))
    scene.normalcrafter.world_space = True
    select_only(scene, ["world"])
    facts["world"] = {**estimate(), "status": status_lines(), "plans": [
        p.job() for p in operators.gather_plans(bpy.context, "world", "")[0]]}
    scene.normalcrafter.world_space = False
    scene.normalcrafter.compile = True
    facts["compile_plans"] = [p.job() for p in operators.gather_plans(bpy.context, "world", "")[0]]
    scene.normalcrafter.compile = False

    # A movie clip: an image sequence datablock.
    clip = bpy.data.movieclips.load(a)
    clip.frame_start, clip.frame_offset = 100, 12
    facts["clip"] = estimate(clip=clip.name)
    facts["images"] = image_facts()
    facts["panel_clip"] = draw_panels("CLIP_EDITOR", clip)
    facts["check"] = sorted(bpy.ops.normalcrafter.check_worker())
    facts["preferences"] = draw_preferences()

    # Download: only with Allow Online Access; the worker does the fetching
    # (a repository that does not exist fails fast, with or without network).
    facts["download_offline_poll"] = bpy.ops.normalcrafter.download_model.poll()
    bpy.context.preferences.system.use_online_access = True
    prefs.model_source = "normalcrafter-tests/does-not-exist"
    facts["preferences_online"] = draw_preferences()
    try:
        facts["download"] = {"result": sorted(bpy.ops.normalcrafter.download_model()), "error": None}
    except RuntimeError as exc:
        facts["download"] = {"result": None, "error": str(exc)}
    facts["download"]["notice"] = list(session.download.lines)
    prefs.model_source = args["model"]
    bpy.context.preferences.system.use_online_access = False

    # Worker-side failures: a missing model, an unreadable movie. Each is one
    # line in Blender; the next job still runs.
    add_movie(scene, "fresh", b, 8, 120, offsets=(0, 12))
    scene.normalcrafter.model = os.path.join(tmp, "no-such-model")
    select_only(scene, ["fresh"])
    facts["missing_model"] = {**estimate(), "status": status_lines()}
    scene.normalcrafter.model = ""
    broken = os.path.join(tmp, "broken.mp4")
    shutil.copy(a, broken)
    add_movie(scene, "broken", broken, 10, 200)
    with open(broken, "wb") as fh:
        fh.write(b"\0not a movie" * 100)
    select_only(scene, ["broken"])
    facts["unreadable"] = {**estimate(), "status": status_lines()}
    # The folder the failed job chose is usable: nothing was written to it.
    select_only(scene, ["fresh"])
    facts["after_errors"] = {**estimate(), "status": status_lines()}

    # Cancel mid-job (small windows make it several steps); finished frames stay.
    add_movie(scene, "long", b, 9, 300)
    scene.normalcrafter.window, scene.normalcrafter.stride = 2, 2
    plans, _ = operators.gather_plans(bpy.context, "long", "")
    records = session.submit(plans, config, keep_warm=True, blocking=False)
    while records[0].done < 1 and not records[0].finished:
        session.pump()
        time.sleep(0.02)
    session.cancel()
    while not records[0].finished:
        session.pump()
        time.sleep(0.02)
    out = plans[0].output_dir
    facts["cancel"] = {"state": records[0].state, "done_at_cancel": records[0].done,
                       "files": sorted(os.listdir(out)), "total": plans[0].span.count}
    scene.normalcrafter.window, scene.normalcrafter.stride = 14, 10
    select_only(scene, ["second"])
    facts["after_cancel"] = estimate()

    # Disabling the add-on stops its worker.
    pid = session.hello["pid"]
    bpy.ops.preferences.addon_disable(module=MODULE)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.1)
    facts["worker_gone_after_disable"] = not os.path.exists(f"/proc/{pid}")
    return facts


def scenario_quit(args: dict) -> dict:
    """Start the add-on's worker and leave without disabling the add-on, as
    quitting Blender does; the caller checks that the worker is gone."""
    install(args)
    operators = addon("operators")
    session = addon("session").SESSION
    session.submit([], operators.worker_config(bpy.context), keep_warm=True, blocking=True)
    return {"worker_pid": session.hello["pid"]}


def scenario_make_blend(args: dict) -> dict:
    """A saved .blend with two movie strips, and user preferences with the extension enabled."""
    install(args)
    bpy.ops.wm.save_userpref()
    scene = bpy.context.scene
    add_movie(scene, "plate", args["clips"]["a"], 2, 10, anim=(3, 0), offsets=(2, 7))
    add_movie(scene, "other", args["clips"]["b"], 4, 30, offsets=(0, 12))
    bpy.ops.wm.save_as_mainfile(filepath=args["blend"])
    return {"strips": [strip_facts(s) for s in all_strips(scene)]}


def scenario_inspect(args: dict) -> dict:
    bpy.ops.wm.open_mainfile(filepath=args["blend"])
    return {"strips": [strip_facts(s) for s in all_strips(bpy.context.scene)], "images": image_facts(),
            "version": bpy.app.version_string}


def main() -> int:
    name, args = sys.argv[1], json.loads(sys.argv[2])
    try:
        facts = globals()[f"scenario_{name}"](args)
    except Exception:
        traceback.print_exc()
        return 1
    with open(args["result"], "w") as fh:
        json.dump(facts, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
