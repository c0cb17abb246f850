"""Estimate, Cancel, Check and Download operators.

Each one has two paths: from a button (INVOKE) it runs modal, polling the
worker from a 0.1 s timer so the UI never waits on it; from a script (EXEC)
or with ``bpy.app.background`` (no event loop: timers never fire) it blocks
until done. Failures become one-line reports, never tracebacks.
"""
from __future__ import annotations

import os

import bpy
from bpy.props import StringProperty

from . import compat, importer, ui_text
from .planning import Plan, output_root, plan_clip, plan_strip
from .prefs import get_prefs
from .session import SESSION, START_TIMEOUT_S, Background, Record, WorkerConfig, check_interpreter
from .timing import PlanError
from .worker_client import WorkerError

TIMER_S = 0.1
REDRAW_AREAS = {"SEQUENCE_EDITOR", "CLIP_EDITOR", "PREFERENCES"}


def redraw(context: bpy.types.Context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in REDRAW_AREAS:
                area.tag_redraw()


def worker_config(context: bpy.types.Context, offline: bool = True) -> WorkerConfig:
    prefs = get_prefs(context)
    python = bpy.path.abspath(prefs.python_path) if prefs.python_path else ""
    reason = check_interpreter(python)
    if reason:
        raise PlanError(reason)
    return WorkerConfig(os.path.normpath(python), offline)


def gather_plans(context: bpy.types.Context, strip_names: str, clip_name: str) -> tuple[list[Plan], list[str]]:
    """Plans for the named strips or clip, else for what the editor shows:
    the Movie Clip editor's clip, or the selected movie strips. Targets that
    cannot run come back as problems; none at all raises PlanError."""
    scene = context.scene
    settings = scene.normalcrafter
    prefs = get_prefs(context)
    root = output_root(settings.output_dir or prefs.output_dir, __package__)
    space = context.space_data
    if clip_name or (not strip_names and space is not None and space.type == "CLIP_EDITOR"):
        clip = bpy.data.movieclips.get(clip_name) if clip_name else space.clip
        if clip is None:
            raise PlanError(f"no movie clip named '{clip_name}'" if clip_name else "open a movie clip first")
        return [plan_clip(scene, clip, settings, prefs, root)], []
    if strip_names:
        by_name = {s.name: s for s in compat.all_strips(scene)}
        names = [n.strip() for n in strip_names.split(",") if n.strip()]
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise PlanError(f"no strip named {', '.join(repr(n) for n in unknown)} in scene '{scene.name}'")
        strips = [by_name[n] for n in names]
    else:
        strips = compat.selected_movie_strips(scene)
        if not strips:
            raise PlanError("select one or more movie strips")
    plans, problems = [], []
    for strip in strips:
        try:
            plans.append(plan_strip(scene, strip, settings, prefs, root))
        except PlanError as exc:
            problems.append(str(exc))
    if not plans:
        raise PlanError("; ".join(problems))
    return plans, problems


def finish_record(record: Record) -> None:
    """Import a finished job's result into the .blend and write its report."""
    if record.state != "done":
        return
    try:
        record.report, warnings = importer.import_result(record.plan, record.result or {})
        record.warnings.extend(warnings)
    except (ValueError, OSError) as exc:
        record.fail("import_failed", f"'{record.plan.target}': written, but not imported: {exc}")


def summarize(records: list[Record]) -> list[tuple[str, str]]:
    """(report type, line) for each job, as the status bar and panel show them."""
    lines = []
    for r in records:
        if r.state == "done":
            lines.append(("INFO", r.report))
            lines.extend(("WARNING", f"'{r.plan.target}': {w}") for w in r.warnings)
        elif r.state == "cancelled":
            lines.append(("WARNING", f"'{r.plan.target}': cancelled; finished frames are kept in {r.plan.output_dir}"))
        else:
            text = r.error if r.error.startswith("'") else f"'{r.plan.target}': {r.error}"
            lines.append(("ERROR", text))
    return lines


def publish(op: bpy.types.Operator, records: list[Record], problems: list[str]) -> bool:
    """Report every job and keep the outcome in the panel; True if all succeeded."""
    lines = [("WARNING", p) for p in problems] + summarize(records)
    for kind, text in lines:
        op.report({kind}, text)
    ok = bool(records) and all(r.state == "done" for r in records) and not problems
    icon = "CHECKMARK" if ok else ("ERROR" if any(k == "ERROR" for k, _ in lines) else "INFO")
    SESSION.status.set(icon, *(text for _, text in lines))
    return ok


class NORMALCRAFTER_OT_estimate(bpy.types.Operator):
    """Estimate a normal pass for the selected movie strips, or for the clip in the Movie Clip editor"""

    bl_idname = "normalcrafter.estimate"
    bl_label = "Estimate Normals"
    bl_options = {"REGISTER"}

    strips: StringProperty(
        name="Strips",
        description="Comma-separated movie strip names (default: the selected movie strips)",
        options={"SKIP_SAVE"},
    )
    clip: StringProperty(
        name="Clip",
        description="A movie clip's name, instead of strips (default in the Movie Clip editor: the clip in view)",
        options={"SKIP_SAVE"},
    )

    _timer = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None

    def _prepare(self, context) -> tuple[list[Plan], list[str], WorkerConfig] | None:
        try:
            config = worker_config(context)
            plans, problems = gather_plans(context, self.strips, self.clip)
        except PlanError as exc:
            self.report({"ERROR"}, str(exc))
            SESSION.status.set("ERROR", str(exc))
            return None
        return plans, problems, config

    def execute(self, context: bpy.types.Context) -> set[str]:
        prepared = self._prepare(context)
        if prepared is None:
            return {"CANCELLED"}
        plans, problems, config = prepared
        shown = [None]

        def on_update(finished: list[Record]) -> None:
            for record in finished:
                finish_record(record)
            # No panel in background mode: progress goes to the console instead.
            current = SESSION.current()
            line = current and f"{current.plan.target}: " + (
                ui_text.progress_text(current.done, current.total, current.fps, current.eta_s)
                if current.total else current.stage)
            if bpy.app.background and line and line != shown[0]:
                print(f"NormalCrafter: {line}", flush=True)
                shown[0] = line

        records = SESSION.run_blocking(plans, config, get_prefs(context).keep_warm, on_update)
        return {"FINISHED"} if publish(self, records, problems) else {"CANCELLED"}

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        if bpy.app.background:
            return self.execute(context)
        prepared = self._prepare(context)
        if prepared is None:
            return {"CANCELLED"}
        plans, problems, config = prepared
        for p in problems:
            self.report({"WARNING"}, p)
        SESSION.submit(plans, config, get_prefs(context).keep_warm, blocking=False)
        SESSION.status.set("INFO")
        redraw(context)
        if SESSION.modal_running:  # the running operator picks these jobs up too
            self.report({"INFO"}, f"queued {len(plans)} job(s)")
            return {"FINISHED"}
        self._problems = problems
        SESSION.modal_running = True
        self._timer = context.window_manager.event_timer_add(TIMER_S, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event) -> set[str]:
        if event.type == "ESC" and event.value == "PRESS":
            SESSION.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        for record in SESSION.pump():
            finish_record(record)
        redraw(context)
        if SESSION.busy:
            return {"PASS_THROUGH"}
        self._end(context)
        publish(self, SESSION.records, self._problems)
        return {"FINISHED"}

    def cancel(self, context: bpy.types.Context) -> None:
        # Blender ends modal operators when a file loads or the window closes.
        SESSION.abandon("the operator was stopped")
        self._end(context)

    def _end(self, context: bpy.types.Context) -> None:
        SESSION.modal_running = False
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None


class NORMALCRAFTER_OT_cancel(bpy.types.Operator):
    """Cancel the running and queued normal jobs (finished frames are kept)"""

    bl_idname = "normalcrafter.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return SESSION.busy

    def execute(self, context: bpy.types.Context) -> set[str]:
        SESSION.cancel()
        self.report({"INFO"}, "cancelling")
        return {"FINISHED"}


def describe_hello(hello: dict) -> list[str]:
    lines = [f"Worker ready: normalcrafter {hello.get('version', '?')}, torch {hello.get('torch', '?')}, "
             f"Python {hello.get('python', '?')}"]
    for d in hello.get("devices", []):
        lines.append(f"{d.get('id')}: {d.get('name')} ({ui_text.size(d.get('free_bytes'))} free "
                     f"of {ui_text.size(d.get('total_bytes'))})")
    if hello.get("default_device"):
        lines.append(f"Device 'Auto' uses {hello['default_device']}")
    if hello.get("log_path"):
        lines.append(f"Log: {hello['log_path']}")
    return lines


def _handshake(config: WorkerConfig) -> dict:
    client = config.client()
    try:
        return client.start(60.0)
    finally:
        client.stop(5.0)


class NORMALCRAFTER_OT_check_worker(bpy.types.Operator):
    """Start the worker with this interpreter and show what it runs on"""

    bl_idname = "normalcrafter.check_worker"
    bl_label = "Check Worker"
    bl_options = {"REGISTER"}

    _timer = None

    def _config(self, context) -> WorkerConfig | None:
        try:
            return worker_config(context)
        except PlanError as exc:
            SESSION.check.set("ERROR", f"Check failed: {exc}")
            self.report({"ERROR"}, str(exc))
            return None

    def _show(self, hello: dict | None, error: WorkerError | None) -> bool:
        if error is not None:
            SESSION.check.set("ERROR", f"Check failed: {error.message}")
            self.report({"ERROR"}, f"worker check failed: {error.message}")
            return False
        SESSION.check.set("CHECKMARK", *describe_hello(hello))
        self.report({"INFO"}, describe_hello(hello)[0])
        return True

    def _warm_hello(self, config: WorkerConfig) -> dict | None:
        if SESSION.client is not None and SESSION.client.alive and SESSION.config == config:
            return SESSION.hello
        return None

    def execute(self, context: bpy.types.Context) -> set[str]:
        config = self._config(context)
        if config is None:
            return {"CANCELLED"}
        hello, error = self._warm_hello(config), None
        if hello is None:
            try:
                hello = _handshake(config)
            except WorkerError as exc:
                error = exc
        return {"FINISHED"} if self._show(hello, error) else {"CANCELLED"}

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        config = self._config(context)
        if config is None:
            return {"CANCELLED"}
        if bpy.app.background or self._warm_hello(config) is not None:
            return self.execute(context)
        SESSION.check.set("TIME", f"Starting {config.python} ...")
        self._task = Background(_handshake, config)
        self._timer = context.window_manager.event_timer_add(TIMER_S, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event) -> set[str]:
        if event.type != "TIMER" or not self._task.finished:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        self._show(self._task.value, self._task.error)
        redraw(context)
        return {"FINISHED"}


def _download_model(prefs) -> str | None:
    """The hub id to fetch: the preferences' model if it is one, else the published weights."""
    model = prefs.model_source.strip()
    if model.count("/") == 1 and not os.path.exists(bpy.path.abspath(model)):
        return model
    return None


class NORMALCRAFTER_OT_download_model(bpy.types.Operator):
    """Have the worker download the model weights (resumes an interrupted download)"""

    bl_idname = "normalcrafter.download_model"
    bl_label = "Download Model"
    bl_options = {"REGISTER"}

    _timer = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if not bpy.app.online_access:
            cls.poll_message_set("Allow Online Access is off (Preferences > System)")
            return False
        return True

    def _begin(self, context) -> bool:
        prefs = get_prefs(context)
        try:
            config = worker_config(context, offline=False)
        except PlanError as exc:
            SESSION.download.set("ERROR", str(exc))
            self.report({"ERROR"}, str(exc))
            return False
        self._model = _download_model(prefs)
        self._folder = bpy.path.abspath(prefs.download_dir) if prefs.download_dir else None
        self._client = config.client()
        self._job = None
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not self._begin(context):
            return {"CANCELLED"}
        try:
            self._client.start(START_TIMEOUT_S)
            job = self._client.download(self._model, self._folder)
            done = self._client.wait(job, on_event=self._show_progress)
        except WorkerError as exc:
            return self._end(context, "ERROR", f"Download failed: {exc.message}")
        return self._finished(context, done.get("result") or {})

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        if bpy.app.background:
            return self.execute(context)
        if not self._begin(context):
            return {"CANCELLED"}
        self._task = Background(self._client.start, START_TIMEOUT_S)
        SESSION.download.set("TIME", "Starting the worker ...")
        self._timer = context.window_manager.event_timer_add(TIMER_S, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event) -> set[str]:
        if event.type == "ESC" and event.value == "PRESS" and self._job is not None:
            try:
                self._client.cancel(self._job)
            except WorkerError as exc:
                return self._end(context, "ERROR", f"Download failed: {exc.message}")
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if self._job is None:
            if not self._task.finished:
                return {"PASS_THROUGH"}
            try:
                if self._task.error is not None:
                    raise self._task.error
                self._job = self._client.download(self._model, self._folder)
            except WorkerError as exc:
                return self._end(context, "ERROR", f"Download failed: {exc.message}")
        for ev in self._client.poll():
            if ev.get("job") not in (self._job, None):
                continue
            if ev["type"] == "done":
                return self._finished(context, ev.get("result") or {})
            if ev["type"] == "error":
                return self._end(context, "ERROR", f"Download failed: {ev.get('message')}")
            self._show_progress(ev)
        redraw(context)
        return {"PASS_THROUGH"}

    def _show_progress(self, ev: dict) -> None:
        if ev.get("type") == "progress":
            line = f"{ev.get('repo', '')}: {ui_text.size(ev.get('done'))} of {ui_text.size(ev.get('total'))}"
            if ev.get("bytes_per_s"):
                line += f" · {ui_text.size(ev['bytes_per_s'])}/s · {ui_text.duration(ev.get('eta_s'))} left"
            SESSION.download.set("IMPORT", line, "Esc cancels; the next download resumes")
        elif ev.get("type") == "stage":
            SESSION.download.set("IMPORT", ev.get("message", ""))

    def _finished(self, context, result: dict) -> set[str]:
        prefs = get_prefs(context)
        source = result.get("source", "")
        note = ""
        if source and not prefs.model_source.strip():
            prefs.model_source = source
            note = f"; the Model preference is now {source}"
        return self._end(context, "CHECKMARK", f"Downloaded {result.get('model', 'the model')}{note}")

    def _end(self, context, icon: str, message: str) -> set[str]:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        SESSION.download.set(icon, message)
        self.report({"ERROR"} if icon == "ERROR" else {"INFO"}, message)
        Background(self._client.stop, 10.0)
        redraw(context)
        return {"CANCELLED"} if icon == "ERROR" else {"FINISHED"}

    def cancel(self, context: bpy.types.Context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        Background(self._client.stop, 10.0)


classes = (
    NORMALCRAFTER_OT_estimate,
    NORMALCRAFTER_OT_cancel,
    NORMALCRAFTER_OT_check_worker,
    NORMALCRAFTER_OT_download_model,
)
