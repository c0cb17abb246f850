"""Overlap of host work (reading, copying, writing files) with device work.

``background`` runs a producer generator in a worker thread a few items
ahead of its consumer; ``BackgroundWriter`` runs file writes on a small
pool of threads or processes. Both keep a bounded number of items in
flight, so memory does not grow with the clip, and both re-raise a worker's
error in the caller.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing.shared_memory import SharedMemory
from typing import Any, TypeVar

import numpy as np

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


# Arrays this large go to writer processes through shared memory: pickled
# through the pool's pipe, a 1024x576 frame (7 MB) took milliseconds of the
# parent's one feeding thread, and the last chunk's frames reached their
# files a fifth of a second after the GPU was done (H200, docs/performance.md).
SHARED_MIN_BYTES = 1 << 20


def _large(a: object) -> bool:
    return isinstance(a, np.ndarray) and a.nbytes >= SHARED_MIN_BYTES and not a.dtype.hasobject


class _Shared:
    """A picklable handle to an array in a shared memory block."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: str) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


# A writer process's attached blocks, by name: the parent reuses its blocks.
_attached: dict[str, SharedMemory] = {}


def _call_shared(fn: Callable[..., Any], args: tuple) -> Any:
    """``fn(*args)`` in a writer process, each ``_Shared`` as its array (a
    view, valid while the parent holds the block for this job)."""
    def array(h: _Shared) -> np.ndarray:
        block = _attached.get(h.name)
        if block is None:
            block = _attached[h.name] = SharedMemory(h.name)
        return np.ndarray(h.shape, np.dtype(h.dtype), buffer=block.buf)

    return fn(*(array(a) if isinstance(a, _Shared) else a for a in args))


class _Blocks:
    """The parent's shared memory blocks, reused by size. Where a block cannot
    be had (a small /dev/shm, as in containers), the array is pickled."""

    def __init__(self) -> None:
        # By the size asked for (Windows reports a block's size in pages).
        self._free: dict[int, list[SharedMemory]] = {}
        self._all: list[SharedMemory] = []

    def put(self, a: np.ndarray) -> tuple[_Shared, tuple[int, SharedMemory]] | None:
        """The array copied into a free block: its handle, and what to give
        back once the job is done; None where no block can be had."""
        free = self._free.get(a.nbytes)
        block = free.pop() if free else self._new(a.nbytes)
        if block is None:
            return None
        np.ndarray(a.shape, a.dtype, buffer=block.buf)[...] = a
        return _Shared(block.name, a.shape, a.dtype.str), (a.nbytes, block)

    def _new(self, size: int) -> SharedMemory | None:
        # A block past /dev/shm's free space is created without complaint
        # and kills the process (SIGBUS) when written.
        if sys.platform.startswith("linux"):
            try:
                st = os.statvfs("/dev/shm")
            except OSError:
                return None
            if st.f_bavail * st.f_frsize < 2 * size:
                return None
        try:
            block = SharedMemory(create=True, size=size)
        except OSError:
            return None
        self._all.append(block)
        return block

    def give_back(self, held: list[tuple[int, SharedMemory]]) -> None:
        for size, block in held:
            self._free.setdefault(size, []).append(block)

    def close(self) -> None:
        for block in self._all:
            block.close()
            block.unlink()
        self._all.clear()
        self._free.clear()


class BackgroundWriter:
    """Run ``fn(*args)`` write jobs on ``workers`` threads or processes, at
    most ``pending`` queued at once. Each job's ``then(result)`` callback runs
    in the caller's thread, in submission order, once the job is done; the
    first failed job re-raises its error from ``submit`` or ``close``.

    Use processes for writers that hold the GIL: OpenEXR's Python binding
    does for the whole of a write (~100 ms at 1024x576, measured), which in
    a thread starves the thread that feeds the GPU. Process jobs need a
    module-level ``fn`` and picklable arguments; numpy arguments of
    ``SHARED_MIN_BYTES`` or more reach the process through shared memory
    (one copy, no pickling), and ``fn`` must not keep them past its return."""

    def __init__(self, workers: int = 2, pending: int | None = None, processes: bool = False) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._pool: Executor
        self._blocks: _Blocks | None = None
        if processes:
            import multiprocessing

            # spawn: never fork a process that holds CUDA and worker threads.
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
            self._blocks = _Blocks()
        else:
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="normalcrafter-writer")
        self._pending: deque[tuple[Future, Callable[[Any], None] | None, list[tuple[int, SharedMemory]]]] = deque()
        self._limit = pending if pending is not None else 2 * workers

    def submit(self, fn: Callable[..., Any], *args: Any, then: Callable[[Any], None] | None = None) -> None:
        self._finish(until=self._limit - 1)
        held: list[tuple[int, SharedMemory]] = []
        if self._blocks is not None:
            args = tuple(self._share(a, held) for a in args)
        future = self._pool.submit(_call_shared, fn, args) if held else self._pool.submit(fn, *args)
        self._pending.append((future, then, held))
        self._finish(until=None)

    def _share(self, a: Any, held: list[tuple[int, SharedMemory]]) -> Any:
        """``a``, or its handle in a shared memory block (added to ``held``)."""
        put = self._blocks.put(a) if _large(a) else None
        if put is None:
            return a
        held.append(put[1])
        return put[0]

    def _finish(self, until: int | None) -> None:
        """Complete jobs in order: all finished ones, and while more than
        ``until`` are pending, wait for the oldest."""
        while self._pending:
            fut, then, held = self._pending[0]
            if not fut.done() and (until is None or len(self._pending) <= until):
                return
            self._pending.popleft()
            try:
                result = fut.result()
            finally:
                if self._blocks is not None:
                    self._blocks.give_back(held)
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
            self._shutdown()

    def abort(self) -> None:
        """Drop jobs not yet started and wait for running ones, ignoring their errors."""
        self._pending.clear()
        self._shutdown()

    def _shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._blocks is not None:  # no job can read them any more
            self._blocks.close()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
