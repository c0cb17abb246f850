"""Replaying a model call's GPU work from a captured CUDA graph.

Why: an eager or regionally compiled call of the UNet or the VAE decoder
launches thousands of kernels, and launching them from Python took about as
long as the GPU took to run them (host time 59 ms/frame against 76-100 ms
of GPU work at 1024x576, and host-bound outright at 512x288;
docs/performance.md). A CUDA graph launches the same kernels in one call.

``GraphedCall`` wraps one callable. A call with a new input signature
(shapes, strides, dtypes of the tensor arguments, values of the others) runs
as is: that run also warms up everything a capture must not do for the
first time (cuDNN's algorithm search, Triton's and inductor's compilation).
The second call with that signature captures the graph, and later calls
copy their inputs into the graph's own input tensors and replay it. Results
are copied out of the graph's memory, so a result stays valid after the
next replay.

Memory: the graphs of a pipeline, and its calls that run as is (the first
of each signature, a clip's short tail), all take their temporaries from
one pool (``GraphPool``), on one stream. They never run at the same time
and nothing of theirs outlives a call but copied results, so they share
that memory: peak memory stays what one call needs, as without graphs.
Otherwise each graph would keep its own temporaries, and an uncaptured
call would need its own beside them.

The kernels are the ones the callable launches anyway, so results are the
same bits as without the graph (tests/test_graphs.py, on a GPU).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map


def _signature(args: tuple, kwargs: dict) -> tuple:
    leaves, spec = tree_flatten((args, kwargs))
    return (spec, tuple(
        (tuple(x.shape), x.stride(), x.dtype, x.device) if isinstance(x, torch.Tensor) else x for x in leaves
    ))


def _clone_like(x: Any) -> Any:
    """A copy with the same strides (a channels-last input stays one)."""
    if not isinstance(x, torch.Tensor):
        return x
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device).copy_(x)


def _copy_out(tree: Any) -> Any:
    return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree)


class GraphPool:
    """The memory pool and stream that a pipeline's graphs and uncaptured
    calls share. ``failure`` says why capturing was given up, if it was."""

    def __init__(self) -> None:
        self.pool = torch.cuda.MemPool()
        self.stream = torch.cuda.Stream()
        self.failure: str | None = None

    def run(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        """``fn`` as is, its memory from the pool; the result copied out."""
        if self.failure is not None:
            return fn(*args, **kwargs)
        current = torch.cuda.current_stream()
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream), torch.cuda.use_mem_pool(self.pool):
            out = fn(*args, **kwargs)
        current.wait_stream(self.stream)
        # The pool's blocks are reused only by later work on the pool's
        # stream, which first waits for this stream: the copy is safe.
        return _copy_out(out)

    def give_up(self, exc: Exception) -> None:
        """After a failed capture the allocator still routes the pool's
        stream to the pool (PyTorch ends that only with a successful
        capture): from now on every call runs as is, off the pool."""
        self.failure = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        warnings.warn(f"CUDA graph capture failed, running without graphs: {self.failure}", RuntimeWarning,
                      stacklevel=3)


class _Graph:
    def __init__(self, fn: Callable, args: tuple, kwargs: dict, pool: GraphPool) -> None:
        self.inputs = tree_map(_clone_like, (args, kwargs))
        # One run on the capture stream before capturing, as PyTorch asks:
        # libraries set up per-stream and per-thread state (handles,
        # workspaces) on first use. The signature's first call does not
        # count: it may have run in an earlier clip's loop thread (without
        # this run, captures failed on the H100, commit 4ad6f22).
        pool.run(fn, *self.inputs)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the pipeline's reader and consumer threads keep using
        # CUDA (pinned copies, event waits) while this thread captures.
        current = torch.cuda.current_stream()
        pool.stream.wait_stream(current)
        with torch.cuda.graph(self.graph, pool=pool.pool.id, stream=pool.stream, capture_error_mode="thread_local"):
            self.outputs = fn(*self.inputs[0], **self.inputs[1])
        current.wait_stream(pool.stream)

    def __call__(self, args: tuple, kwargs: dict) -> Any:
        for static, x in zip(tree_flatten(self.inputs)[0], tree_flatten((args, kwargs))[0]):
            if isinstance(static, torch.Tensor):
                static.copy_(x)
        self.graph.replay()
        return _copy_out(self.outputs)


class GraphedCall:
    """``fn`` with its CUDA work replayed from graphs, one per input
    signature, for up to ``max_graphs`` signatures (a clip has one per
    model call, plus its short tail; later signatures run as is). If a
    capture fails (an operation that cannot be captured), every call of the
    pool runs as is from then on, after one warning: slower, never wrong."""

    def __init__(self, fn: Callable, pool: GraphPool, max_graphs: int = 2) -> None:
        self.fn = fn
        self.pool = pool
        self.max_graphs = max_graphs
        self.graphs: dict[tuple, _Graph] = {}
        self._seen: set[tuple] = set()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.pool.failure is not None:
            return self.fn(*args, **kwargs)
        key = _signature(args, kwargs)
        graph = self.graphs.get(key)
        if graph is None:
            if key not in self._seen or len(self.graphs) >= self.max_graphs:
                self._seen.add(key)
                return self.pool.run(self.fn, args, kwargs)
            try:
                graph = _Graph(self.fn, args, kwargs, self.pool)
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever cannot be captured runs as is
                self.pool.give_up(exc)
                return self.fn(*args, **kwargs)
            self.graphs[key] = graph
        return graph(args, kwargs)
