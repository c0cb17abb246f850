"""``python -m normalcrafter.worker``: the long-lived job process.

Requests arrive on stdin and events leave on stdout, one JSON object per
line (docs/protocol.md). Everything else the process prints (libraries,
progress bars, crash dumps) goes to stderr and the log file.
"""
from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import threading
from typing import BinaryIO

from .protocol import MAX_LINE_BYTES

log = logging.getLogger("normalcrafter.worker")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m normalcrafter.worker", description=__doc__.splitlines()[0])
    p.add_argument("--log-file", default=None, help="log file (default: a new file in the per-user log folder)")
    p.add_argument("--parent-pid", type=int, default=None,
                   help="exit when this process exits (default: the process that started the worker)")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds a cancelled job gets to stop when the worker shuts down (default: 10)")
    p.add_argument("--gpu-memory-fraction", type=float, default=None,
                   help="cap this process's share of each GPU's memory (0-1), e.g. on a shared GPU")
    return p.parse_args(argv)


def claim_stdio() -> tuple[BinaryIO, BinaryIO]:
    """Take the real stdin/stdout for the protocol and point file descriptors
    0 and 1 elsewhere, so no library print or progress bar (written to fd 1)
    can corrupt the event stream, and none can read a request."""
    sys.stdout.flush()
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


def read_requests(stream: BinaryIO, worker) -> None:
    """Feed request lines to the worker until stdin closes, then stop it."""
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            break
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            rest = line
            while rest and not rest.endswith(b"\n"):  # drop the remainder of the over-long line
                rest = stream.readline(MAX_LINE_BYTES + 1)
        if line.strip():
            worker.handle_line(line)
    worker.stdin_closed()


def main(argv: list[str] | None = None) -> int:
    """Run the worker; returns only on a start-up failure (the status to exit with)."""
    args = parse_args(argv)
    proto_in, proto_out = claim_stdio()
    faulthandler.enable(sys.stderr)
    slot: dict = {}

    def forward(record: logging.LogRecord) -> None:
        worker = slot.get("worker")
        if worker is not None:
            worker.emit({"type": "log", "job": worker.current_job(), "level": record.levelname,
                         "logger": record.name, "message": record.getMessage()})

    from .logs import setup_logging

    log_path = setup_logging(args.log_file, forward)
    try:
        from .lifeline import exit_after, watch_parent
        from .runner import CoreRunner
        from .server import Worker
    except ImportError as exc:
        log.error("cannot start the worker: %s (is normalcrafter installed with its requirements in %s?)",
                  exc, sys.executable)
        return 3

    def write(line: bytes) -> None:
        proto_out.write(line)
        proto_out.flush()

    worker = Worker(write, CoreRunner(), info={"log_path": str(log_path) if log_path else None})
    slot["worker"] = worker
    if args.gpu_memory_fraction is not None:
        import torch

        for i in range(torch.cuda.device_count()):
            torch.cuda.set_per_process_memory_fraction(args.gpu_memory_fraction, i)
    worker.on_stop = lambda drain: None if drain else exit_after(args.grace)

    def on_signal(signum, frame) -> None:
        # Handlers run on the main thread, possibly inside emit's lock: hand off.
        name = signal.Signals(signum).name
        threading.Thread(target=worker.request_shutdown, args=(f"received {name}",), daemon=True).start()

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    parent = args.parent_pid if args.parent_pid is not None else os.getppid()
    watch_parent(parent, lambda: worker.request_shutdown(f"the client process {parent} exited"))

    worker.emit(worker.hello())
    log.info("worker %s ready (log %s)", os.getpid(), log_path)
    threading.Thread(target=read_requests, args=(proto_in, worker), name="requests", daemon=True).start()
    status = worker.run()
    logging.shutdown()
    try:
        proto_out.flush()
    except OSError:  # the client closed the event pipe: there is no one left to tell
        pass
    # Everything the worker owes is on disk or sent; skip the interpreter's
    # teardown of torch and the model, which takes seconds a quitting host
    # would wait for.
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
