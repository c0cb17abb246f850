"""The add-on's one worker and the jobs it runs, as the panels show them.

Everything here runs on Blender's main thread except ``WorkerClient.start``
and ``stop`` (seconds, while the worker imports torch or winds down), which
go to a plain thread that never touches bpy; the main thread picks their
outcome up in :meth:`Session.pump`. The same pump serves the modal operator
(called from its timer) and the blocking path (called in a loop), so both
see the same events the same way.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from .planning import Plan
from .worker_client import WorkerClient, WorkerError

START_TIMEOUT_S = 180.0  # a first start imports torch and may compile kernels
FINISHED = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class WorkerConfig:
    """What the worker process is started with; a change restarts it."""

    python: str
    offline: bool = True

    def client(self) -> WorkerClient:
        # Jobs never reach the network: a model id missing from the cache fails
        # with model_missing instead of downloading behind the user's back.
        # No log path: the worker keeps one file per run, pruned, in its own
        # per-user log folder, and names it in its handshake.
        env = {"HF_HUB_OFFLINE": "1"} if self.offline else {}
        return WorkerClient(self.python, env=env)


def check_interpreter(python: str) -> str | None:
    """A one-line reason the interpreter path cannot work, or None."""
    if not python:
        return "set the worker's Python interpreter in the add-on preferences (Edit > Preferences > Add-ons)"
    if not os.path.isfile(python):
        return f"no Python interpreter at {python} (set it in the add-on preferences)"
    return None


@dataclass
class Notice:
    """A few lines a panel shows under a heading icon."""

    lines: list[str] = field(default_factory=list)
    icon: str = "INFO"

    def set(self, icon: str, *lines: str) -> None:
        self.icon, self.lines = icon, [line for line in lines if line]


@dataclass
class Record:
    """One job as the UI tracks it."""

    plan: Plan
    job_id: str | None = None
    state: str = "waiting"  # waiting, queued, running, then done, failed or cancelled
    stage: str = "waiting for the worker"
    done: int = 0
    total: int = 0
    fps: float = 0.0
    eta_s: float | None = None
    result: dict | None = None
    error: str = ""
    code: str = ""
    warnings: list[str] = field(default_factory=list)
    report: str = ""  # what the import made of the result

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def fail(self, code: str, message: str) -> None:
        self.state = "cancelled" if code == "cancelled" else "failed"
        self.code, self.error = code, message
        self.stage = "cancelled" if self.state == "cancelled" else "failed"


class Background:
    """A call on a plain thread whose outcome the main thread collects."""

    def __init__(self, fn, *args) -> None:
        self.value = None
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)
        self._thread.start()

    def _run(self, fn, *args) -> None:
        try:
            self.value = fn(*args)
        except WorkerError as exc:
            self.error = exc

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()


class Session:
    def __init__(self) -> None:
        self.client: WorkerClient | None = None
        self.config: WorkerConfig | None = None
        self.hello: dict | None = None
        self.records: list[Record] = []
        self.keep_warm = True
        self.modal_running = False
        self.status = Notice()  # the outcome of the last batch
        self.check = Notice()  # the preferences' "Check" result
        self.download = Notice()  # the preferences' download progress
        self._starting: Background | None = None
        self._by_id: dict[str, Record] = {}

    # -- state the panels read ---------------------------------------------
    @property
    def busy(self) -> bool:
        return any(not r.finished for r in self.records)

    def current(self) -> Record | None:
        """The running job, else the next one, else the last one."""
        for state in ("running", "queued", "waiting"):
            for r in self.records:
                if r.state == state:
                    return r
        return self.records[-1] if self.records else None

    # -- jobs ---------------------------------------------------------------
    def submit(self, plans: list[Plan], config: WorkerConfig, keep_warm: bool, blocking: bool) -> list[Record]:
        """Queue ``plans``; start (or restart) the worker if needed. Blocking
        waits for the worker's handshake here; otherwise :meth:`pump` submits
        the jobs once it has answered."""
        if not self.busy:
            self.records = []
            self._by_id = {}
        self.keep_warm = keep_warm
        new = [Record(p) for p in plans]
        self.records.extend(new)
        restart = self.client is not None and (config != self.config or not self.client.alive)
        if restart and self._starting is None and not self._active():
            self._drop_worker()
        if self.client is None:
            self.config = config
            self.client = config.client()
            if blocking:
                try:
                    self.hello = self.client.start(START_TIMEOUT_S)
                except WorkerError as exc:
                    self._start_failed(exc)
                    return new
            else:
                self._starting = Background(self.client.start, START_TIMEOUT_S)
        self._submit_waiting()
        return new

    def pump(self) -> list[Record]:
        """Take the worker's events (never blocks); return the records that
        finished since the last call."""
        before = {id(r) for r in self.records if r.finished}
        if self._starting is not None:
            if not self._starting.finished:
                return []
            starting, self._starting = self._starting, None
            if starting.error is not None:
                self._start_failed(starting.error)
            else:
                self.hello = starting.value
                self._submit_waiting()
        if self.client is not None:
            for event in self.client.poll():
                self._apply(event)
        if not self.busy and not self.keep_warm and self.client is not None:
            self._drop_worker()
        return [r for r in self.records if r.finished and id(r) not in before]

    def run_blocking(self, plans: list[Plan], config: WorkerConfig, keep_warm: bool, on_update=None) -> list[Record]:
        """Run ``plans`` to their end on this thread (background mode, scripts)."""
        records = self.submit(plans, config, keep_warm, blocking=True)
        while not all(r.finished for r in records):
            finished = self.pump()
            if on_update is not None:
                on_update(finished)
            time.sleep(0.05)
        return records

    def cancel(self) -> None:
        """Cancel every job; the worker removes partial files, finished frames stay."""
        for r in self.records:
            if r.state == "waiting":
                r.fail("cancelled", "cancelled before it started")
        if self.client is not None and self._active():
            try:
                self.client.cancel(None)
            except WorkerError as exc:
                self._worker_died(exc.message)

    def abandon(self, reason: str) -> None:
        """Cancel everything and forget it, so results that still arrive are
        never imported (a new .blend is loading, the operator was stopped)."""
        self.cancel()
        for r in self.records:
            if not r.finished:
                r.fail("cancelled", reason)
        self.modal_running = False

    def shutdown(self) -> None:
        """Stop the worker now (add-on disabled, Blender quitting)."""
        self.cancel()
        # stop() also ends a worker that is still starting: its start() then
        # fails on its own thread, which nobody waits for.
        self._starting = None
        if self.client is not None:
            self.client.stop(timeout=5.0)
            self.client = None
        self.hello = None

    # -- internals ----------------------------------------------------------
    def _active(self) -> bool:
        return any(r.state in ("queued", "running") for r in self.records)

    def _submit_waiting(self) -> None:
        if self.client is None or self._starting is not None:
            return
        for r in self.records:
            if r.state != "waiting":
                continue
            try:
                r.job_id = self.client.submit(r.plan.job())
            except WorkerError as exc:
                self._worker_died(exc.message)
                return
            r.state, r.stage = "queued", "queued"
            self._by_id[r.job_id] = r

    def _start_failed(self, exc: WorkerError) -> None:
        message = f"the worker did not start: {exc.message}"
        for r in self.records:
            if r.state == "waiting":
                r.fail(exc.code, message)
        self.client, self.hello = None, None

    def _worker_died(self, message: str) -> None:
        for r in self.records:
            if not r.finished:
                r.fail("worker_died", message)
        self._drop_worker()

    def _drop_worker(self) -> None:
        client, self.client, self.hello = self.client, None, None
        if client is not None:
            Background(client.stop, 10.0)  # an idle worker exits at once; never wait on the UI thread

    def _apply(self, event: dict) -> None:
        kind = event.get("type")
        record = self._by_id.get(event.get("job"))
        if record is None:
            if kind == "error" and event.get("code") == "worker_died":
                self._worker_died(event.get("message") or "the worker stopped")
            return
        if record.finished:
            return
        if kind == "queued":
            record.stage = "queued" if not event.get("position") else f"queued ({event['position']} ahead)"
        elif kind == "stage":
            record.state = "running"
            record.stage = event.get("message") or event.get("stage", "")
        elif kind == "progress":
            record.state = "running"
            record.done, record.total = event.get("done", 0), event.get("total", 0)
            record.fps, record.eta_s = event.get("fps") or 0.0, event.get("eta_s")
        elif kind == "warning":
            record.warnings.append(event.get("message", ""))
        elif kind == "done":
            record.state, record.stage = "done", "done"
            record.result = event.get("result") or {}
        elif kind == "error":
            message = event.get("message") or "the job failed"
            if event.get("suggestion"):
                message += f"; {event['suggestion']}"
            record.fail(event.get("code") or "internal", message)


SESSION = Session()
