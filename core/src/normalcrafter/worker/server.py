"""The worker's request loop: a job queue run one job at a time.

Threads: the caller of :meth:`Worker.run` (the main thread) runs jobs; a
reader thread calls :meth:`Worker.handle_line` for each request line, so a
cancel or a status request is answered while a job runs. What a job does is
behind the :class:`JobRunner` seam; this module never touches torch.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .. import errors
from ..errors import NormalCrafterError
from .protocol import PROTOCOL_VERSION, ProtocolError, Request, decode_request, encode_event

log = logging.getLogger("normalcrafter.worker")

OnEvent = Callable[[dict], None]


class JobRunner(Protocol):
    """What the worker needs from the engine."""

    def validate(self, kind: str, body: dict) -> object:
        """Check a job request before it is queued; return the parsed job
        parameters or raise NormalCrafterError (``bad_request``, ...)."""

    def run(self, kind: str, params: object, on_event: OnEvent, should_cancel: Callable[[], bool]) -> dict:
        """Run one job to its result dict; raise NormalCrafterError on failure."""

    def failure(self, exc: Exception, kind: str, params: object) -> tuple[str, str, str | None]:
        """(code, message, suggestion) for an exception the job raised."""

    def status(self) -> dict:
        """Engine facts for the hello and status events (model loads, ...)."""

    def system(self) -> dict:
        """Interpreter, torch, devices and free memory for the hello event."""


@dataclass
class Job:
    id: str
    kind: str
    params: object
    submitted: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)


class Worker:
    """Queue, dispatch and event stream of one worker process."""

    def __init__(self, write: Callable[[bytes], None], runner: JobRunner, *, info: dict | None = None) -> None:
        self._write = write
        self._runner = runner
        self._info = info or {}
        self._write_lock = threading.Lock()
        self._broken = False
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._current: Job | None = None
        self._seen: set[str] = set()
        self._ids = itertools.count(1)
        self._stopping = False
        self._drain = False
        self.stop_reason: str | None = None
        self.on_stop: Callable[[bool], None] | None = None  # called once stopping starts, with drain

    # -- events -------------------------------------------------------------
    def emit(self, event: dict) -> None:
        line = encode_event(event)
        with self._write_lock:
            if self._broken:
                return
            try:
                self._write(line)
                return
            except (OSError, ValueError):
                self._broken = True
        # The client is gone: nobody will read results, so stop holding the GPU.
        self.request_shutdown("the client stopped reading events")

    def current_job(self) -> str | None:
        job = self._current
        return job.id if job else None

    def hello(self, request_id: str | None = None) -> dict:
        return {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            **self._info,
            **self._runner.system(),
            **self._runner.status(),
            "request": request_id,
        }

    # -- requests (reader thread) -------------------------------------------
    def handle_line(self, line: bytes) -> None:
        """Act on one request line; every failure is answered with an error event."""
        try:
            req = decode_request(line)
            getattr(self, f"_on_{req.type}")(req)
        except ProtocolError as exc:
            log.info("bad request: %s", exc.message)
            self.emit({"type": "error", "job": exc.job, "code": errors.BAD_REQUEST, "message": exc.message,
                       "request": exc.request_id})
        except Exception as exc:  # a bug must not kill the reader thread: the worker would go deaf
            log.exception("request failed: %r", line[:200])
            self.emit({"type": "error", "code": errors.INTERNAL,
                       "message": f"internal error handling a request: {type(exc).__name__}: {exc}"})

    def _on_hello(self, req: Request) -> None:
        self.emit(self.hello(req.id))

    def _on_status(self, req: Request) -> None:
        with self._cond:
            running = self._current
            queued = [job.id for job in self._queue]
        self.emit({
            "type": "status",
            "running": running.id if running else None,
            "queued": queued,
            "stopping": self._stopping,
            **self._runner.status(),
            "request": req.id,
        })

    def _on_estimate(self, req: Request) -> None:
        self._submit("estimate", req)

    def _on_download(self, req: Request) -> None:
        self._submit("download", req)

    def _submit(self, kind: str, req: Request) -> None:
        with self._cond:
            job_id = req.job or next(f"job-{n}" for n in self._ids if f"job-{n}" not in self._seen)
            self._check_new(job_id, req)
        try:
            params = self._runner.validate(kind, req.body)
        except NormalCrafterError as exc:
            self.emit({"type": "error", "job": job_id, "code": exc.code, "message": exc.message, "request": req.id})
            return
        with self._cond:
            self._check_new(job_id, req)
            self._seen.add(job_id)
            self._queue.append(Job(job_id, kind, params))
            ahead = len(self._queue) - 1 + (self._current is not None)
            # Emitted under the queue lock so "queued" always precedes the job's own events.
            self.emit({"type": "queued", "job": job_id, "kind": kind, "position": ahead, "request": req.id})
            self._cond.notify_all()

    def _check_new(self, job_id: str, req: Request) -> None:
        if job_id in self._seen:
            # Answered without a job id: the earlier job of that id is unaffected.
            raise ProtocolError(f"job id {job_id!r} was already used in this worker", req.id)
        if self._stopping:
            raise ProtocolError("the worker is shutting down and takes no new jobs", req.id, job_id)

    def _on_cancel(self, req: Request) -> None:
        removed = self._cancel(req.job)
        for job in removed:
            self.emit({"type": "error", "job": job.id, "code": errors.CANCELLED, "message": "cancelled before it started"})

    def _cancel(self, job_id: str | None) -> list[Job]:
        """Flag the running job (if it matches) and take matching queued jobs out."""
        with self._cond:
            removed = [job for job in self._queue if job_id is None or job.id == job_id]
            for job in removed:
                self._queue.remove(job)
            if self._current is not None and job_id in (None, self._current.id):
                self._current.cancel.set()
        return removed

    def _on_shutdown(self, req: Request) -> None:
        drain = req.body.get("drain", False)
        if not isinstance(drain, bool):
            raise ProtocolError('"drain" must be true or false', req.id)
        self.request_shutdown("shutdown requested" + (" (after the queued jobs)" if drain else ""), drain=drain)

    # -- lifecycle ----------------------------------------------------------
    def request_shutdown(self, reason: str, drain: bool = False) -> None:
        """Stop taking jobs. Without ``drain`` the running job is cancelled and
        queued ones are dropped; with it they all run first. Safe from any thread."""
        with self._cond:
            if self._stopping and (drain or not self._drain):
                return
            self._stopping, self._drain, self.stop_reason = True, drain, reason
            self._cond.notify_all()
        log.info("stopping: %s", reason)
        if not drain:
            for job in self._cancel(None):
                self.emit({"type": "error", "job": job.id, "code": errors.CANCELLED,
                           "message": f"cancelled before it started: {reason}"})
        if self.on_stop is not None:
            self.on_stop(drain)

    def stdin_closed(self) -> None:
        # After a draining shutdown, closing stdin is the expected next step,
        # not a reason to drop the queue.
        self.request_shutdown("stdin closed", drain=self._stopping and self._drain)

    def run(self) -> int:
        """Run queued jobs until shutdown; returns the process exit status."""
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    break
                job = self._current = self._queue.popleft()
            try:
                self._run_job(job)
            finally:
                with self._cond:
                    self._current = None
        self.emit({"type": "bye", "reason": self.stop_reason})
        return 0

    def _run_job(self, job: Job) -> None:
        started = time.monotonic()
        log.info("job %s (%s) started", job.id, job.kind)

        def on_event(event: dict) -> None:
            self.emit({**event, "job": job.id})

        try:
            result = self._runner.run(job.kind, job.params, on_event, job.cancel.is_set)
        except Exception as exc:  # every failure becomes an error event; the worker lives on
            code, message, suggestion = self._runner.failure(exc, job.kind, job.params)
            if code == errors.INTERNAL:
                log.exception("job %s failed", job.id)
                if self._info.get("log_path"):
                    message += f" (traceback in {self._info['log_path']})"
            else:
                log.info("job %s ended: %s: %s", job.id, code, message)
            event = {"type": "error", "job": job.id, "code": code, "message": message}
            if suggestion:
                event["suggestion"] = suggestion
            self.emit(event)
            return
        finished = time.monotonic()
        log.info("job %s done in %.1f s", job.id, finished - started)
        self.emit({
            "type": "done",
            "job": job.id,
            "kind": job.kind,
            "result": result,
            "timings": {"queued_s": round(started - job.submitted, 3), "run_s": round(finished - started, 3)},
        })
