"""The streaming pipeline against a plain whole-clip reference, and its memory bound."""
import numpy as np
import pytest
import torch

from normalcrafter.model.loading import load_components
from normalcrafter.pipeline import NormalCrafterPipeline
from reference_algorithm import reference_normals


@pytest.fixture(scope="module")
def pipe(tiny_model):
    return NormalCrafterPipeline(load_components(str(tiny_model)), "cpu", torch.float32)


def clip(n, h=40, w=72, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("n,window,stride,chunk", [(1, 14, 10, 7), (5, 14, 10, 7), (14, 14, 10, 7),
                                                     (31, 14, 10, 7), (23, 6, 4, 3), (20, 8, 8, 5)])
def test_streaming_equals_whole_clip_reference(pipe, n, window, stride, chunk):
    frames = clip(n, seed=n)
    out = pipe(frames, window=window, stride=stride, decode_chunk=chunk)
    ref = reference_normals(pipe.components, frames, window, stride, chunk)
    assert out.shape == (n, 40, 72, 3)
    assert np.abs(out - ref).max() < 1e-5
    assert out.min() >= -1 and out.max() <= 1


def test_frames_held_at_once_do_not_grow_with_length(pipe):
    """A long clip is read and written incrementally: the lag between frames
    read and frames yielded is bounded by window + decode chunk, whatever the
    length (a 2,000-frame clip holds no more frames than a 100-frame one)."""

    def max_lag(n):
        read = 0
        lag = 0

        def source():
            nonlocal read
            rng = np.random.default_rng(0)
            for _ in range(n):
                read += 1
                yield rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)

        for i, _ in pipe.stream(source(), n, 14, 10, 7):
            lag = max(lag, read - i)
        return lag

    short, long = max_lag(100), max_lag(400)
    assert short == long <= 14 + 7


def test_reduced_precision_runs_close_to_fp32(tiny_model):
    frames = clip(16)
    ref = NormalCrafterPipeline(load_components(str(tiny_model)), "cpu", torch.float32)(frames)
    out = NormalCrafterPipeline(load_components(str(tiny_model)), "cpu", torch.bfloat16)(frames)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert np.abs(out - ref).mean() < 0.05


def test_stop_request_ends_the_stream(pipe):
    calls = []
    out = list(pipe.stream(iter(clip(40)), 40, 14, 10, 7, should_stop=lambda: len(calls.append(1) or calls) > 2))
    assert 0 < len(out) < 40


def test_skip_decodes_only_unfinished_chunks(pipe):
    frames = clip(30)
    full = dict(pipe.stream(iter(frames), 30, 14, 10, 7))
    part = dict(pipe.stream(iter(frames), 30, 14, 10, 7, skip=lambda i: i < 14))
    assert sorted(part) == list(range(14, 30))
    for i in part:
        assert np.array_equal(part[i], full[i])
