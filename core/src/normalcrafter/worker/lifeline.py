"""Keep the worker from outliving its client: a parent-process watchdog and
a deadline for a shutdown that a busy job delays."""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import psutil

log = logging.getLogger("normalcrafter.worker")


def parent_checker(pid: int) -> Callable[[], bool]:
    """A function telling whether process ``pid`` (as it is now) still runs.
    The start time is compared so a recycled pid does not count as alive."""
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        return lambda: False

    def alive() -> bool:
        try:
            proc = psutil.Process(pid)
            return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    return alive


def watch_parent(pid: int, on_gone: Callable[[], None], interval: float = 1.0) -> threading.Thread:
    """Call ``on_gone`` once when process ``pid`` exits. Closed stdin catches
    most client deaths; this also catches a client whose pipe lives on in a
    grandchild that inherited it."""
    alive = parent_checker(pid)

    def loop() -> None:
        while alive():
            time.sleep(interval)
        on_gone()

    thread = threading.Thread(target=loop, name="parent-watchdog", daemon=True)
    thread.start()
    return thread


def exit_after(seconds: float, status: int = 0) -> threading.Timer:
    """Hard-exit the process after ``seconds``: a job stuck in a long GPU call
    or a model load cannot check its cancel flag, and its memory must be freed
    anyway. Outputs are written atomically, so nothing half-written remains."""

    def bail() -> None:
        log.warning("the running job did not stop within %.0f s of shutdown; exiting now", seconds)
        logging.shutdown()
        os._exit(status)

    timer = threading.Timer(seconds, bail)
    timer.daemon = True
    timer.start()
    return timer
