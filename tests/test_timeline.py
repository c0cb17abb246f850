"""scripts/timeline.py's reading of a profiler trace (the rest of the script
needs a CUDA GPU): busy and idle time of the device, and whether the work
after each gap was launched late by the host or was queued and waited."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import timeline  # noqa: E402


def kernel(name, ts, dur, corr):
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "args": {"correlation": corr}}


def launch(name, ts, dur, corr, tid=7):
    return {"ph": "X", "cat": "cuda_runtime", "name": name, "ts": ts, "dur": dur, "tid": tid,
            "args": {"correlation": corr}}


def note(name, ts, dur, tid=7):
    return {"ph": "X", "cat": "user_annotation", "name": name, "ts": ts, "dur": dur, "tid": tid}


def test_gaps_are_told_apart_by_when_their_work_was_launched():
    events = [
        kernel("a", 0, 10, 1), launch("cudaLaunchKernel", -5, 2, 1),
        # 40 us idle: the graph after it was launched only at 30, while the
        # thread was decoding.
        kernel("b", 50, 10, 2), launch("cudaGraphLaunch", 30, 5, 2),
        # 15 us idle, but its kernel had been queued since 1: a device wait.
        kernel("c", 75, 10, 3), launch("cudaLaunchKernel", 1, 5, 3),
        # 2 us: launch latency inside a graph, counted but not analysed.
        kernel("d", 87, 3, 4), launch("cudaLaunchKernel", 2, 1, 4),
        # Both cover the first gap: the innermost one names it.
        note("nc:decode_chunk", 5, 35), note("nc:produce(depth 2)", 0, 100),
    ]
    t = timeline.read_timeline(events)
    assert t["span_ms"] * 1e3 == 90 and t["busy_ms"] * 1e3 == 33 and t["gaps"] == 3
    assert t["idle_by_gap_length_ms"] == {"<10 us": 0.002, "<100 us": 0.055}
    late, queued = t["longest"]
    assert late["us"] == 40 and late["after"] == "a" and late["before"] == "b"
    assert late["cause"] == ("late: cudaGraphLaunch from nc:decode_chunk; "
                             "the thread was in nc:decode_chunk")
    assert queued["us"] == 15 and queued["cause"].startswith("queued: cudaLaunchKernel")


def test_a_trace_without_device_work_says_so():
    assert "error" in timeline.read_timeline([note("nc:decode_chunk", 0, 5)])
