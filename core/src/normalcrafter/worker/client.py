"""Drive a NormalCrafter worker process from any Python 3.10+ host.

Standard library only, and nothing from the ``normalcrafter`` package: this
file is copied into the Blender extension and runs under Blender's Python,
which has no torch. The worker itself runs in another interpreter (the one
``python`` names) and speaks the protocol in docs/protocol.md.

    c = WorkerClient("/path/to/venv/bin/python")
    hello = c.start()
    job = c.submit({"input": "shot.mp4", "output_dir": "normals/", "max_res": 512})
    result = c.wait(job, on_event=print)      # or c.poll() from a UI timer
    c.stop()
"""
from __future__ import annotations

import collections
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid

PROTOCOL_VERSION = 1
FINAL_EVENTS = ("done", "error")


class WorkerError(Exception):
    """A failure with a stable ``code`` (a worker error code, or one of
    ``worker_unavailable``, ``worker_died``, ``timeout``, ``bad_request``)
    and a one-line human ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


def _child_env(extra: dict | None) -> dict:
    env = dict(os.environ)
    # A host's embedded Python may set PYTHONHOME for itself; another
    # interpreter started with it would load the host's standard library.
    env.pop("PYTHONHOME", None)
    env["PYTHONIOENCODING"] = "utf-8"
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    return env


class WorkerClient:
    """One worker process: start it, submit jobs, read events, stop it."""

    def __init__(self, python: str, args: list[str] | None = None, env: dict | None = None,
                 log_path: str | None = None) -> None:
        self.python = python
        self.args = list(args or [])
        self.env = env
        self.log_path = log_path
        self.hello: dict | None = None
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._send_lock = threading.Lock()
        self._state = threading.Condition()
        self._pending: set[str] = set()  # submitted jobs without a final event yet
        self._finals: dict[str, dict] = {}  # job id -> its done or error event
        self._stderr = collections.deque(maxlen=50)
        self._started = threading.Event()  # set on hello or on exit
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # -- lifecycle ----------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The worker's exit status once it has exited, else None."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def stderr_tail(self) -> list[str]:
        """The worker's last lines on stderr (for error reports)."""
        return list(self._stderr)

    def start(self, timeout: float = 120.0) -> dict:
        """Start the worker and return its hello event (see docs/protocol.md)."""
        if self.alive and self.hello is not None:
            return self.hello
        cmd = [self.python, "-m", "normalcrafter.worker", "--parent-pid", str(os.getpid()), *self.args]
        if self.log_path:
            cmd += ["--log-file", str(self.log_path)]
        flags = subprocess.CREATE_NO_WINDOW if sys.platform == "win32" else 0  # no console window pops up
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env=_child_env(self.env), creationflags=flags)
        except FileNotFoundError:
            raise WorkerError("worker_unavailable", f"no Python interpreter at {self.python}") from None
        except OSError as exc:
            raise WorkerError("worker_unavailable", f"cannot run {self.python}: {exc.strerror or exc}") from None
        self.hello = None
        self._stopping = False
        self._started.clear()
        self._stderr.clear()
        stderr = threading.Thread(target=self._read_stderr, args=(self._proc,), name="worker-stderr", daemon=True)
        events = threading.Thread(target=self._read_events, args=(self._proc, stderr), name="worker-events",
                                  daemon=True)
        self._threads = [stderr, events]
        for t in self._threads:
            t.start()
        if not self._started.wait(timeout) and self.hello is None:
            self._kill()
            raise WorkerError("worker_unavailable", f"the worker did not answer within {timeout:.0f} s"
                              + (f" (last output: {self._stderr[-1]})" if self._stderr else ""))
        if self.hello is None:
            raise WorkerError("worker_unavailable", self._exit_reason())
        theirs = self.hello.get("protocol")
        if theirs != PROTOCOL_VERSION:
            self.stop()
            raise WorkerError("worker_unavailable", f"the worker speaks protocol {theirs}, this client "
                              f"{PROTOCOL_VERSION}: install matching versions of the add-on and the worker")
        return self.hello

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to exit (cancelling its jobs); terminate, then kill
        it if it has not exited after ``timeout`` seconds."""
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        if proc.poll() is None:
            try:
                self._send({"type": "shutdown"})
            except WorkerError:
                pass
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        for t in self._threads:
            t.join(5)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass

    def _kill(self) -> None:
        proc = self._proc
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # -- jobs -----------------------------------------------------------------
    def submit(self, job: dict) -> str:
        """Queue a job and return its id. ``job`` holds the request fields
        (docs/protocol.md): an estimate by default, ``{"type": "download",
        ...}`` for a model download; ``"job"`` may set the id."""
        fields = dict(job)
        kind = fields.pop("type", "estimate")
        job_id = str(fields.pop("job", None) or uuid.uuid4().hex[:12])
        with self._state:
            self._pending.add(job_id)
        try:
            self._send({"type": kind, "job": job_id, **fields})
        except WorkerError:
            with self._state:
                self._pending.discard(job_id)
            raise
        return job_id

    def download(self, model: str | None = None, folder: str | None = None) -> str:
        """Queue a download of ``model`` (default: the published weights) into
        the hub cache, or into ``folder``; returns the job id."""
        return self.submit({"type": "download", "model": model, "dir": folder})

    def cancel(self, job_id: str | None = None) -> None:
        """Cancel one job, or (None) the running job and every queued one."""
        self._send({"type": "cancel", "job": job_id})

    def poll(self) -> list[dict]:
        """Every event received since the last call; never blocks."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def wait(self, job_id: str, timeout: float | None = None, on_event=None) -> dict:
        """Block until ``job_id`` ends; pass each event (of any job) taken
        meanwhile to ``on_event``. Returns the job's ``done`` event; raises
        WorkerError for its ``error`` event, or when the worker dies."""
        with self._state:
            if job_id not in self._pending and job_id not in self._finals:
                raise WorkerError("bad_request", f"no job {job_id!r} was submitted to this worker")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                event = self._events.get(timeout=0.1)
            except queue.Empty:
                with self._state:
                    final = self._finals.get(job_id)
                if final is not None:  # another caller took the final event through poll()
                    return self._outcome(final)
                if deadline is not None and time.monotonic() > deadline:
                    raise WorkerError("timeout", f"job {job_id} did not finish within {timeout:.0f} s") from None
                continue
            if on_event is not None:
                on_event(event)
            if event.get("job") == job_id and event.get("type") in FINAL_EVENTS:
                return self._outcome(event)

    @staticmethod
    def _outcome(event: dict) -> dict:
        if event["type"] == "done":
            return event
        message = event.get("message") or "the job failed"
        if event.get("suggestion"):
            message += f" (suggestion: {event['suggestion']})"
        raise WorkerError(event.get("code") or "internal", message)

    # -- plumbing -----------------------------------------------------------
    def _send(self, message: dict) -> None:
        line = (json.dumps(message, ensure_ascii=True, default=str) + "\n").encode("ascii")
        with self._send_lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                raise WorkerError("worker_died", "the worker is not running" if proc is None else self._exit_reason())
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (OSError, ValueError):
                raise WorkerError("worker_died", self._exit_reason()) from None

    def _read_events(self, proc: subprocess.Popen, stderr: threading.Thread) -> None:
        for raw in proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                event = None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                event = {"type": "log", "job": None, "level": "WARNING",
                         "message": f"unreadable line from the worker: {raw[:200]!r}"}
            event.setdefault("job", None)
            if event["type"] == "hello" and self.hello is None:
                self.hello = event
                self._started.set()
                continue
            if event["type"] in FINAL_EVENTS and event["job"] is not None:
                with self._state:
                    self._pending.discard(event["job"])
                    self._finals[event["job"]] = event
            self._events.put(event)
        self._on_exit(proc, stderr)

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr.append(line)

    def _on_exit(self, proc: subprocess.Popen, stderr: threading.Thread) -> None:
        """The worker closed its event stream: every job still pending gets a
        ``worker_died`` error event, so no waiter or UI waits forever."""
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        stderr.join(2)  # the stderr tail explains the exit
        reason = "the worker was stopped" if self._stopping else self._exit_reason()
        with self._state:
            orphans = sorted(self._pending)
            self._pending.clear()
            for job_id in orphans:
                event = {"type": "error", "job": job_id, "code": "worker_died", "message": reason}
                self._finals[job_id] = event
                self._events.put(event)
            if not self._stopping and self.hello is not None:
                self._events.put({"type": "error", "job": None, "code": "worker_died", "message": reason})
        self._started.set()

    def _exit_reason(self) -> str:
        """One line saying why the worker is gone, from its exit status and stderr."""
        proc = self._proc
        status = proc.poll() if proc is not None else None
        last = next((line for line in reversed(self._stderr) if not line.startswith("  ")), "")
        if "No module named" in last and "normalcrafter" in last:
            return f"normalcrafter is not installed for {self.python} ({last})"
        where = f"the worker ({self.python})"
        if status is None:
            return f"{where} closed its output" + (f": {last}" if last else "")
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        return f"{where} {how}" + (f": {last}" if last else " without a message")
