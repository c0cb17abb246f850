"""Window schedule, blend weights and padding, including property-based checks."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from normalcrafter.preprocess import pad_frame, padding_for, unpad
from normalcrafter.windows import blend, blend_weights, final_frontier, window_schedule


def spans(f, w=14, s=10):
    return [(x.start, x.end, x.overlap) for x in window_schedule(f, w, s)]


def test_release_examples():
    assert spans(25) == [(0, 14, 0), (10, 24, 4), (11, 25, 13)]
    assert spans(27) == [(0, 14, 0), (10, 24, 4), (13, 27, 11)]
    assert spans(14) == [(0, 14, 0)]
    assert spans(24) == [(0, 14, 0), (10, 24, 4)]
    assert spans(70) == [(0, 14, 0), (10, 24, 4), (20, 34, 4), (30, 44, 4), (40, 54, 4), (50, 64, 4), (56, 70, 8)]


@pytest.mark.parametrize("f", [1, 2, 5, 13])
def test_short_clips_are_one_window(f):
    assert spans(f) == [(0, f, 0)]


def test_stride_equal_to_window_feeds_nothing_forward():
    assert spans(20, 10, 10) == [(0, 10, 0), (10, 20, 0)]
    assert spans(25, 10, 10) == [(0, 10, 0), (10, 20, 0), (15, 25, 0)]


def test_invalid_arguments():
    for args in [(0, 14, 10), (10, 14, 15), (10, 0, 1), (10, 14, 0)]:
        with pytest.raises(ValueError):
            window_schedule(*args)


@settings(max_examples=300, deadline=None)
@given(f=st.integers(1, 400), w=st.integers(1, 30), data=st.data())
def test_schedule_properties(f, w, data):
    s = data.draw(st.integers(1, w))
    ws = window_schedule(f, w, s)
    size = min(w, f)
    covered = set()
    for i, win in enumerate(ws):
        assert win.size == size and 0 <= win.start and win.end <= f
        covered.update(range(win.start, win.end))
        if i:
            assert win.start > ws[i - 1].start  # monotone, so streaming works
            expected = 0 if s == w else ws[i - 1].end - win.start
            assert win.overlap == max(expected, 0) or (s == w and win.overlap == 0)
        # every frame below the frontier is final: no later window touches it
        frontier = final_frontier(ws, i, f)
        assert all(later.start >= frontier for later in ws[i + 1 :])
    assert covered == set(range(f)) and ws[-1].end == f


def test_blend_weights_match_release():
    assert torch.allclose(blend_weights(4), torch.tensor([0.8, 0.6, 0.4, 0.2]))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 20))
def test_blend_is_a_convex_crossfade(n):
    prev, cur = torch.zeros(1, n, 2), torch.ones(1, n, 2)
    out = blend(prev, cur)[0, :, 0]
    w = blend_weights(n)
    assert torch.allclose(out, 1 - w)
    assert torch.all(out[1:] > out[:-1])  # moves monotonically from old to new
    assert torch.all((out > 0) & (out < 1))


@settings(max_examples=200, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300))
def test_padding_round_trip(h, w):
    frame = np.random.default_rng(h * 1000 + w).integers(0, 255, (h, w, 3), dtype=np.uint8)
    pad = padding_for(h, w)
    padded = pad_frame(frame, pad)
    assert padded.shape[0] % 64 == 0 and padded.shape[1] % 64 == 0
    assert padded.shape[0] - h < 64 and padded.shape[1] - w < 64
    assert abs(pad.top - pad.bottom) <= 1 and pad.bottom >= pad.top
    border = np.ones(padded.shape[:2], bool)
    border[pad.top : pad.top + h, pad.left : pad.left + w] = False
    assert np.all(padded[border] == 255)
    back = unpad(np.moveaxis(padded, -1, 0), pad)
    assert np.array_equal(np.moveaxis(back, 0, -1), frame)
