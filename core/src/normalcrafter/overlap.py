"""Overlap of host work (reading, copying, writing files) with device work.

``background`` runs a producer generator in a worker thread a few items
ahead of its consumer; ``BackgroundWriter`` runs file writes on a small
thread pool. Both keep a bounded number of items in flight, so memory does
not grow with the clip, and both re-raise a worker's error in the caller.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def background(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield what ``items`` yields, computed in a worker thread up to ``depth``
    items ahead. Closing the returned generator stops the worker and closes
    ``items`` in the worker's own thread (a generator must be closed where it runs)."""
    if depth < 1:
        raise ValueError("depth must be at least 1")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failure(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=run, name="normalcrafter-producer", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join()


class BackgroundWriter:
    """Run ``fn(*args)`` write jobs on ``workers`` threads or processes, at
    most ``pending`` queued at once. Each job's ``then(result)`` callback runs
    in the caller's thread, in submission order, once the job is done; the
    first failed job re-raises its error from ``submit`` or ``close``.

    Use processes for writers that hold the GIL: OpenEXR's Python binding
    does for the whole of a write (~100 ms at 1024x576, measured), which in
    a thread starves the thread that feeds the GPU. Process jobs need a
    module-level ``fn`` and picklable arguments (numpy arrays are)."""

    def __init__(self, workers: int = 2, pending: int | None = None, processes: bool = False) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._pool: Executor
        if processes:
            import multiprocessing

            # spawn: never fork a process that holds CUDA and worker threads.
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        else:
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="normalcrafter-writer")
        self._pending: deque[tuple[Future, Callable[[Any], None] | None]] = deque()
        self._limit = pending if pending is not None else 2 * workers

    def submit(self, fn: Callable[..., Any], *args: Any, then: Callable[[Any], None] | None = None) -> None:
        self._finish(until=self._limit - 1)
        self._pending.append((self._pool.submit(fn, *args), then))
        self._finish(until=None)

    def _finish(self, until: int | None) -> None:
        """Complete jobs in order: all finished ones, and while more than
        ``until`` are pending, wait for the oldest."""
        while self._pending:
            fut, then = self._pending[0]
            if not fut.done() and (until is None or len(self._pending) <= until):
                return
            self._pending.popleft()
            result = fut.result()
            if then is not None:
                then(result)

    def wait(self) -> None:
        """Wait for every job submitted so far (the pool stays up); re-raise
        the first error."""
        self._finish(until=0)

    def close(self) -> None:
        """Wait for every job; re-raise the first error."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Drop jobs not yet started and wait for running ones, ignoring their errors."""
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
