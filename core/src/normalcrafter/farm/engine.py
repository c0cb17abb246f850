"""Runs a planned farm job on a Ray cluster.

One long-lived worker actor per GPU (or per group of CPU cores) keeps its
model loaded and takes chunks from Ray's actor pool; a chunk is one
``run_estimate`` call with ``frames`` and ``context``, writing its frames
atomically into the shot's folder. Actors rather than plain tasks: Ray starts
a fresh process for every GPU task (``max_calls=1``), which would reload a
multi-GB model per chunk, and a reused task process could be handed a GPU
other than the one its CUDA context was made on. An actor's GPU is fixed for
its life.

A worker that dies (killed, node lost, out of host memory) is restarted by
Ray and its chunk retried (``max_restarts`` / ``max_task_retries``); the
retry skips the frames that chunk already wrote. Failures of the job itself
(bad input, conflicting folder) come back as data and stop the job with the
worker's one-line message.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import errors
from ..errors import NormalCrafterError
from ..io.atomic import atomic_write_bytes, remove_stale_temps
from ..job import EstimateSettings
from .plan import Chunk, Shot

FARM_RECORD = "normalcrafter_farm.json"


@dataclass
class ChunkState:
    worker: str = ""  # host:pid of the latest attempt
    attempts: int = 0
    written: int = 0  # frames written by any attempt
    done: bool = False


@dataclass
class Progress:
    """The whole job as the driver sees it, handed to ``on_update``."""

    total: int  # frames of all shots
    done: int  # frames on disk
    chunks: dict[str, ChunkState] = field(default_factory=dict)
    shots_done: int = 0
    shots: int = 0
    workers: int = 0
    elapsed_s: float = 0.0

    @property
    def running(self) -> int:
        return sum(1 for c in self.chunks.values() if c.attempts and not c.done)

    @property
    def retries(self) -> int:
        return sum(max(c.attempts - 1, 0) for c in self.chunks.values())


@dataclass
class FarmOptions:
    address: str | None = None  # None: start a local cluster on this machine
    num_cpus: int | None = None  # local cluster only
    workers: int | None = None  # None: one per GPU, else one per cpus_per_worker cores
    cpus_per_worker: int = 1
    max_retries: int = 3
    poll_s: float = 0.5


def connect(options: FarmOptions) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "log_to_driver": False}
    if options.address:
        ray.init(address=options.address, **kwargs)
    else:
        ray.init(num_cpus=options.num_cpus, **kwargs)


def _worker_classes():
    """The actors, defined when Ray is first needed (``import ray`` costs
    seconds, which ``normalcrafter --help`` should not pay)."""
    import ray

    @ray.remote(num_cpus=0)
    class Board:
        """Where workers report, so the driver sees frames while chunks run."""

        def __init__(self) -> None:
            self.chunks: dict[str, dict] = {}

        def started(self, key: str, worker: str) -> None:
            c = self.chunks.setdefault(key, {"worker": "", "attempts": 0, "frames": set(), "done": False})
            c["worker"], c["attempts"] = worker, c["attempts"] + 1

        def wrote(self, key: str, frame: int) -> None:
            self.chunks[key]["frames"].add(frame)

        def finished(self, key: str) -> None:
            self.chunks[key]["done"] = True

        def snapshot(self) -> dict[str, dict]:
            return {k: {"worker": c["worker"], "attempts": c["attempts"], "written": len(c["frames"]),
                        "done": c["done"]} for k, c in self.chunks.items()}

    @ray.remote
    class ChunkWorker:
        def __init__(self, board, threads: int) -> None:
            import torch

            from ..job import PipelineCache

            if threads:
                torch.set_num_threads(threads)
            self.board = board
            self.pipelines = PipelineCache()
            self.name = f"{socket.gethostname()}:{os.getpid()}"

        def run(self, key: str, input_path: str, output: str, settings: dict) -> dict:
            from ..job import run_estimate

            self.board.started.remote(key, self.name)

            def on_event(ev: dict) -> None:
                if ev["type"] == "file":
                    self.board.wrote.remote(key, ev["frame"])

            try:
                result = run_estimate(input_path, output, EstimateSettings.from_dict(settings),
                                      pipelines=self.pipelines, on_event=on_event)
            except NormalCrafterError as exc:
                return {"key": key, "error": {"code": exc.code, "message": exc.message}}
            self.board.finished.remote(key)
            return {"key": key, "frames": result["frames"]}

    return Board, ChunkWorker


def worker_plan(cluster: dict[str, float], options: FarmOptions, chunks: int) -> tuple[int, dict]:
    """How many workers and what each holds: one GPU each when the cluster
    has GPUs (all of them, on every node), else ``cpus_per_worker`` cores;
    never more workers than chunks."""
    gpus = int(cluster.get("GPU", 0))
    if gpus:
        # More GPU workers than GPUs would wait for a GPU forever.
        count = min(options.workers or gpus, gpus)
        resources = {"num_gpus": 1, "num_cpus": options.cpus_per_worker}
    else:
        count = options.workers or max(1, int(cluster.get("CPU", 1)) // options.cpus_per_worker)
        resources = {"num_cpus": options.cpus_per_worker}
    return min(count, chunks), resources


def chunk_settings(settings: EstimateSettings, chunk: Chunk) -> dict:
    data = dataclasses.asdict(settings)
    data["frames"] = [chunk.start, chunk.end]
    return data


def run_farm(
    shots: list[Shot],
    settings: EstimateSettings,
    options: FarmOptions,
    on_update: Callable[[Progress], None] | None = None,
) -> Progress:
    """Run every chunk not yet on disk; returns the final progress. Raises
    ``NormalCrafterError`` when a chunk fails or a worker keeps dying."""
    import ray
    from ray.util import ActorPool

    if settings.context < 1:
        raise NormalCrafterError(errors.BAD_REQUEST, "farm chunks need a context of at least 1 frame")
    settings.validate()
    connect(options)
    for shot in shots:
        if shot.output.is_dir():
            remove_stale_temps(shot.output)  # nothing writes there yet
    todo = [c for shot in shots for c in shot.chunks if shot.missing(c)]
    pending = {i: {c.key for c in todo if c.shot == i} for i in range(len(shots))}
    shot_of = {c.key: c.shot for c in todo}
    progress = Progress(total=sum(len(s.numbers) for s in shots), done=sum(len(s.done) for s in shots),
                        shots=len(shots))
    t0 = time.perf_counter()
    for i, keys in pending.items():
        if not keys:
            _assemble(shots[i], settings)
            progress.shots_done += 1
    if todo:
        Board, ChunkWorker = _worker_classes()
        board = Board.remote()
        count, resources = worker_plan(ray.cluster_resources(), options, len(todo))
        actors = [
            ChunkWorker.options(**resources, max_restarts=options.max_retries, max_task_retries=options.max_retries)
            .remote(board, 0 if resources.get("num_gpus") else options.cpus_per_worker)
            for _ in range(count)
        ]
        progress.workers = count
        pool = ActorPool(actors)
        for c in todo:
            task = (c.key, shots[c.shot].input, str(shots[c.shot].output), chunk_settings(settings, c))
            pool.submit(lambda actor, task: actor.run.remote(*task), task)
        base = progress.done
        try:
            while pool.has_next():
                try:
                    result = pool.get_next_unordered(timeout=options.poll_s)
                except TimeoutError:
                    result = None
                except ray.exceptions.RayActorError as exc:
                    raise NormalCrafterError(
                        errors.INTERNAL, f"a farm worker died {options.max_retries + 1} times; last: {exc}"
                    ) from None
                if result is not None and "error" in result:
                    raise NormalCrafterError(result["error"]["code"], result["error"]["message"])
                if result is not None:
                    # A shot is assembled as soon as its last chunk is in, not at the end of the job.
                    i = shot_of[result["key"]]
                    pending[i].discard(result["key"])
                    if not pending[i]:
                        _assemble(shots[i], settings)
                        progress.shots_done += 1
                _refresh(progress, ray.get(board.snapshot.remote()), base, t0)
                if on_update:
                    on_update(progress)
        finally:
            for a in actors:
                ray.kill(a)
            ray.kill(board)
    progress.done = progress.total
    progress.elapsed_s = time.perf_counter() - t0
    if on_update:
        on_update(progress)
    return progress


def _refresh(progress: Progress, snapshot: dict[str, dict], base: int, t0: float) -> None:
    progress.chunks = {k: ChunkState(**v) for k, v in snapshot.items()}
    progress.done = base + sum(c.written for c in progress.chunks.values())
    progress.elapsed_s = time.perf_counter() - t0


def _assemble(shot: Shot, settings: EstimateSettings) -> None:
    """Check that every frame of the shot is on disk, clear temporary files
    of killed attempts, and record the job; the record's presence says the
    shot is complete."""
    from ..io.writers import frame_path

    missing = [n for n in shot.numbers if not frame_path(shot.output, n, settings.format).exists()]
    if missing:
        raise NormalCrafterError(
            errors.INTERNAL, f"{shot.output}: {len(missing)} frames missing after all chunks ran (first: {missing[0]})"
        )
    remove_stale_temps(shot.output)
    record = {
        "input": shot.input,
        "frames": [shot.numbers[0], shot.numbers[-1], len(shot.numbers)],
        "chunks": [[c.start, c.end] for c in shot.chunks],
        "context": settings.context,
    }
    atomic_write_bytes(shot.output / FARM_RECORD, (json.dumps(record, indent=2) + "\n").encode())
