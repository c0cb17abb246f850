"""Chunks of one clip (chunks.py, estimate --frames A:B --context N) against
one sequential run of the same clip."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from media import moving_clip, write_sequence
from normalcrafter.chunks import chunk_ranges, cut_points, plan_chunk
from normalcrafter.cli import main
from normalcrafter.errors import NormalCrafterError
from normalcrafter.io.writers import read_exr_normals
from normalcrafter.job import EstimateSettings
from normalcrafter.model.loading import load_components
from normalcrafter.pipeline import NormalCrafterPipeline
from normalcrafter.windows import final_frontier, window_schedule

N = 30  # windows [0,14) [10,24) [16,30); the best cut is frame 14


def test_cut_points_are_window_ends_on_the_decode_grid():
    assert cut_points(500) == [14, 84, 154, 224, 294, 364, 434]
    assert chunk_ranges(500, 140) == [(0, 154), (154, 294), (294, 500)]
    assert chunk_ranges(500, 70) == [(0, 84), (84, 154), (154, 224), (224, 294), (294, 364), (364, 434), (434, 500)]
    assert chunk_ranges(100, 500) == [(0, 100)]
    # No window end on the decode grid: cut on the decode grid instead.
    assert cut_points(40, window=13, stride=10, decode_chunk=4) == list(range(4, 40, 4))


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 400), chunk=st.integers(1, 300), window=st.integers(1, 16), stride=st.integers(1, 16),
       dc=st.integers(1, 9))
def test_chunk_ranges_cover_the_clip_once(n, chunk, window, stride, dc):
    stride = min(stride, window)
    ranges = chunk_ranges(n, chunk, window, stride, dc)
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a < b for a, b in ranges) and all(b == a2 for (_, b), (a2, _) in zip(ranges, ranges[1:]))
    assert {a for a, _ in ranges[1:]} <= set(cut_points(n, window, stride, dc))


@settings(max_examples=500, deadline=None)
@given(n=st.integers(1, 300), data=st.data(), window=st.integers(1, 16), stride=st.integers(1, 16),
       dc=st.integers(1, 9), context=st.integers(0, 60))
def test_a_chunk_runs_the_clips_own_windows(n, data, window, stride, dc, context):
    stride = min(stride, window)
    start = data.draw(st.integers(0, n - 1))
    end = data.draw(st.integers(start + 1, n))
    plan = plan_chunk(n, start, end, context, window, stride, dc)
    schedule = window_schedule(n, window, stride)
    first = next(k for k, w in enumerate(schedule) if (w.start, w.end) == (plan.windows[0].start, plan.windows[0].end))
    # The clip's windows, in order; only the first starts from zero latents.
    assert plan.windows[0].overlap == 0
    assert list(plan.windows[1:]) == schedule[first + 1 : first + len(plan.windows)]
    assert list(plan.frontiers) == [final_frontier(schedule, k, n) for k in range(first, first + len(plan.windows))]
    # Every window that can change a decoded frame runs, none after.
    nxt = first + len(plan.windows)
    assert plan.frontiers[-1] >= plan.decode_end and (nxt == len(schedule) or schedule[nxt].start >= plan.decode_end)
    assert plan.windows[0].start <= max(plan.decode_start - context, 0) or \
        schedule[first].end > plan.decode_start  # the context window is also one the chunk needs
    # Decoding and encoding batches sit on the clip's decode grid.
    assert plan.decode_start % dc == 0 and (plan.decode_end % dc == 0 or plan.decode_end == n)
    assert plan.read_start % dc == 0 and plan.read_start <= plan.windows[0].start
    assert plan.read_end >= plan.windows[-1].end and (plan.read_end % dc == 0 or plan.read_end == n)


def test_context_is_a_job_setting():
    s = EstimateSettings.from_dict({"frames": [14, 30], "context": 40})
    assert s.context == 40 and s.identity("m")["context"] == 40 and s.identity("m")["frames"] is None
    assert "context" not in EstimateSettings(frames=(14, 30)).identity("m")  # plain runs keep their identity
    for bad in ({"context": -1}, {"context": "4"}, {"context": 4, "format": "npy"}, {"context": 4, "preview": True}):
        with pytest.raises(NormalCrafterError) as err:
            EstimateSettings.from_dict(bad)
        assert err.value.code == "bad_request"


def test_invalid_chunks_are_refused():
    for args in [(10, 5, 5, 0), (10, 0, 11, 0), (10, -1, 5, 0), (10, 0, 5, -1)]:
        with pytest.raises(ValueError):
            plan_chunk(*args)


@pytest.fixture(scope="module")
def pipe(tiny_model):
    return NormalCrafterPipeline(load_components(str(tiny_model)), "cpu", torch.float32)


@pytest.fixture(scope="module")
def clip():
    return moving_clip(N, 32, 48)  # one 64x64 latent tile after padding: the cheapest size


@pytest.fixture(scope="module")
def sequential(pipe, clip):
    return pipe(clip)


def test_estimate_chunks_share_one_folder_and_equal_a_single_run(tmp_path, tiny_model, clip, sequential):
    """Chunks whose context reaches frame 0 differ from one run in nothing at
    all. 9:30 decodes from frame 7 (the clip's decode grid) and writes from 9."""
    plate = write_sequence(tmp_path / "plate", clip, first=1001)
    common = ["--model", str(tiny_model), "--device", "cpu", "-q"]
    for frames in ("9:30", "0:9"):
        assert main(["estimate", str(plate), "-o", str(tmp_path / "out"), "--frames", frames, "--context", "14",
                     *common]) == 0
    out = np.stack([read_exr_normals(tmp_path / "out" / f"normal.{1001 + i:05d}.exr")[0] for i in range(N)])
    np.testing.assert_array_equal(out, sequential.astype(np.float16).astype(np.float32))
    # A chunk never mixes into a folder of a plain run, nor writes npy.
    assert main(["estimate", str(plate), "-o", str(tmp_path / "seq"), "--frames", "0:14", *common]) == 0
    assert main(["estimate", str(plate), "-o", str(tmp_path / "seq"), "--frames", "0:14", "--context", "4",
                 *common]) == 2
    assert main(["estimate", str(plate), "-o", str(tmp_path / "npy"), "--frames", "0:14", "--context", "4",
                 "--format", "npy", *common]) == 2
