"""CUDA graph replay of the model calls (graphs.py): the same kernels as
without graphs, so the same bits. GPU only: CUDA graphs have no CPU form."""
import numpy as np
import pytest
import torch

from normalcrafter.accel import Speed
from normalcrafter.graphs import GraphedCall, GraphPool
from normalcrafter.model.loading import load_components
from normalcrafter.pipeline import NormalCrafterPipeline

pytestmark = pytest.mark.gpu


def test_second_call_captures_and_later_calls_replay():
    calls = []

    def fn(x, scale=2.0):
        calls.append(x.shape)
        return {"y": torch.relu(x) * scale, "n": x.shape[0]}

    g = GraphedCall(fn, GraphPool())
    a = torch.randn(4, 8, device="cuda")
    assert torch.equal(g(a)["y"], torch.relu(a) * 2)
    assert len(calls) == 1 and not g.graphs
    b = torch.randn(4, 8, device="cuda")
    assert torch.equal(g(b)["y"], torch.relu(b) * 2)  # warm-up and capture: two runs of fn
    assert len(calls) == 3 and len(g.graphs) == 1
    c = torch.randn(4, 8, device="cuda")
    first = g(c)
    d = torch.randn(4, 8, device="cuda")
    second = g(d)
    assert len(calls) == 3  # replayed, fn not run
    # Results are copies: the next replay does not overwrite them.
    assert torch.equal(first["y"], torch.relu(c) * 2) and torch.equal(second["y"], torch.relu(d) * 2)
    assert first["n"] == 4
    # Another shape, or another keyword value, is another signature.
    e = torch.randn(3, 8, device="cuda")
    assert torch.equal(g(e, scale=3.0)["y"], torch.relu(e) * 3)
    assert len(calls) == 4


def test_capture_failure_falls_back_for_good():
    """A call that cannot be captured warns once; it and every other call of
    the pool then run as is, correctly."""
    pool = GraphPool()

    def bad(x):
        return x * float(x.sum())  # a host sync: not capturable

    g, other = GraphedCall(bad, pool), GraphedCall(torch.neg, pool)
    x = torch.ones(3, device="cuda")
    g(x)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
        assert torch.equal(g(x), x * 3)
    assert pool.failure is not None
    for _ in range(3):
        assert torch.equal(g(x), x * 3) and torch.equal(other(x), -x)
    assert not other.graphs


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pipeline_with_graphs_gives_the_same_bits(tiny_model, dtype, monkeypatch):
    """Two clips through one pipeline (the second replays the graphs captured
    during the first, and captures its short tail chunk's) against a
    pipeline without graphs. With cuDNN's timed algorithm search off, both
    run the same kernels."""
    frames = np.random.default_rng(0).integers(0, 256, (23, 40, 72, 3), dtype=np.uint8)
    plain = NormalCrafterPipeline(load_components(str(tiny_model)), "cuda", dtype, Speed(cuda_graphs=False))
    graphed = NormalCrafterPipeline(load_components(str(tiny_model)), "cuda", dtype, Speed())
    assert graphed.speed.cuda_graphs and not plain.speed.cuda_graphs
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    ref = plain(frames, window=8, stride=6, decode_chunk=5)
    for _ in range(2):
        out = graphed(frames, window=8, stride=6, decode_chunk=5)
        assert np.array_equal(out, ref), f"max difference {np.abs(out - ref).max()}"
    for call in (graphed._clip_call, graphed._encode_call, graphed._unet_call, graphed._decode_call):
        assert call.graphs
    assert graphed._unet_call.pool.failure is None
