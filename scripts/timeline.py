#!/usr/bin/env python3
"""Where an end-to-end GPU run spends the time that is not GPU work.

Builds the full-size random model as bench.py does, warms one mode up at
one size, and then, section by section while ``--budget-s`` lasts:

* times the clip three times in a row (a clip's short tail, a last decode
  chunk of fewer frames, runs uncaptured the first time, is captured the
  second, and is replayed from then on), without the writer processes,
  synchronised at stage ends (the stage split), and a long clip
  (``--long``);
* for each of these, times each model call and output copy on the GPU's
  clock (CUDA events around it: its work, plus any time the GPU waited
  inside it for the host);
* with ``--trace``, records a torch.profiler trace of a clip with the
  pipeline's calls annotated and reads it as a timeline: how long the GPU
  is busy and idle, the idle gaps by length, and for each gap whether the
  next work was launched late (then: what the launching thread was doing)
  or was queued and waited on the device;
* with ``--tail-profile``, runs the first two decodes of each short last
  chunk (uncaptured, then captured) under cProfile: where the first
  clip's extra time goes (Triton builds, cuDNN plans, Python launches);
* with ``--stats-shapes``, times the GroupNorm statistics kernel on every
  shape the model gives it with 4 and 8 warps (the timings behind
  ``groupnorm.stats_warps``).

Results go to ``OUT/timeline_WxH.json`` and a readable ``.txt`` beside it.
Needs a CUDA GPU.

    python scripts/timeline.py --res 1024x576 --mode fast --frames 300 --out DIR
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import dataclasses
import functools
import io
import json
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402
from normalcrafter import groupnorm  # noqa: E402
from normalcrafter import pipeline as pipeline_module  # noqa: E402

DEVICE_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}
LAUNCH_CATS = {"cuda_runtime", "cuda_driver"}
GAP_BINS_US = (10, 100, 1000, 10000)


# -- annotating and timing the pipeline's steps ------------------------------
def _annotated(name: str, fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with torch.profiler.record_function(name):
            return fn(*args, **kwargs)
    return run


def annotate(pipe: bench.NormalCrafterPipeline, writer) -> None:
    """Name the pipeline's steps, and the consumer's file submissions, in traces."""
    for name in ("encode_frames", "predict_window", "decode_chunk", "_to_host"):
        setattr(pipe, name, _annotated(f"nc:{name}", getattr(pipe, name)))
    pipeline_module.take_padded = _annotated("nc:take_padded", pipeline_module.take_padded)
    annotate_producers()
    if writer is not None:
        writer.submit = _annotated("nc:submit", writer.submit)


def annotate_producers() -> None:
    """Name the producer threads' work (the clip loop's steps, the frame
    reader's frames): the rest of their time they wait for their consumer."""
    original = pipeline_module.background

    def steps(items, name):
        try:
            while True:
                with torch.profiler.record_function(name):
                    try:
                        item = next(items)
                    except StopIteration:
                        return
                yield item
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def background(items, depth=2):
        return original(steps(items, f"nc:produce(depth {depth})"), depth)

    pipeline_module.background = background


class DeviceTimes:
    """CUDA events around each model call and each output copy: the GPU's
    own time per step, whatever the host does meanwhile."""

    CALLS = ("_clip_call", "_encode_call", "_unet_call", "_decode_call")

    def __init__(self) -> None:
        self.pairs: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = collections.defaultdict(list)

    def wrap(self, pipe: bench.NormalCrafterPipeline, copies: bool = True) -> None:
        for name in self.CALLS:
            setattr(pipe, name, self._timed(name.strip("_").removesuffix("_call"), getattr(pipe, name)))
        if copies:
            pipe._to_host = self._timed("to_host", pipe._to_host)

    def _timed(self, name: str, fn):
        def run(*args, **kwargs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn(*args, **kwargs)
            end.record()
            self.pairs[name].append((start, end))
            return out
        return run

    def take(self, frames: int) -> dict[str, float]:
        """ms per frame of each step since the last ``take``, and their sum."""
        torch.cuda.synchronize()
        out = {k: sum(s.elapsed_time(e) for s, e in v) / frames for k, v in self.pairs.items()}
        out["sum"] = sum(out.values())
        self.pairs.clear()
        return out


class TailProfile:
    """cProfile of the first two decodes of each chunk length but the full
    one, in whichever thread runs them (the clip loop's, with overlap). From
    Python 3.12 cProfile counts every thread's calls while it runs (the
    benchmark's memory sampler shows as ``time.sleep``)."""

    def __init__(self, pipe: bench.NormalCrafterPipeline, chunk: int = 7, lines: int = 45) -> None:
        self.chunk, self.lines = chunk, lines
        self.texts: list[str] = []
        self._seen: collections.Counter = collections.Counter()
        self._inner = pipe.decode_chunk
        pipe.decode_chunk = self._run

    def _run(self, latents: torch.Tensor) -> torch.Tensor:
        n = latents.shape[0]
        if n == self.chunk or self._seen[n] >= 2:
            return self._inner(latents)
        self._seen[n] += 1
        prof = cProfile.Profile()
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = prof.runcall(self._inner, latents)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
        text = io.StringIO()
        stats = pstats.Stats(prof, stream=text)
        stats.sort_stats("cumulative").print_stats(self.lines)
        stats.sort_stats("tottime").print_stats(25)
        self.texts.append(f"decode of a {n}-frame chunk, call {self._seen[n]}: {wall:.3f} s (profiled)\n"
                          + text.getvalue())
        return out


# -- reading a trace ---------------------------------------------------------
def read_timeline(events: list[dict], top: int = 15) -> dict:
    """Busy and idle time of the GPU in a Chrome trace, its idle gaps by
    length, and what came before each long gap."""
    dev = sorted((e for e in events if e.get("ph") == "X" and e.get("cat") in DEVICE_CATS), key=lambda e: e["ts"])
    if not dev:
        return {"error": "no device events in the trace"}
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") in LAUNCH_CATS and "correlation" in e.get("args", {})}
    notes = [e for e in events if e.get("ph") == "X" and e.get("cat") == "user_annotation"
             and e.get("name", "").startswith("nc:")]
    gaps = []
    busy = 0.0
    start, end, last = dev[0]["ts"], dev[0]["ts"] + dev[0]["dur"], dev[0]
    for e in dev[1:]:
        if e["ts"] > end:
            busy += end - start
            gaps.append((end, e["ts"], last, e))
            start = e["ts"]
        if e["ts"] + e["dur"] >= end:
            end, last = e["ts"] + e["dur"], e
    busy += end - start
    span = end - dev[0]["ts"]

    def inside(tid, t0, t1) -> str:
        """The innermost annotation of thread ``tid`` among those overlapping
        [t0, t1] most."""
        best, name = (-1e-9, 0.0), "(outside the pipeline's calls)"
        for n in notes:
            if n["tid"] != tid:
                continue
            key = (round(min(t1, n["ts"] + n["dur"]) - max(t0, n["ts"])), -n["dur"])
            if key > best:
                best, name = key, n["name"]
        return name

    bins = collections.Counter()
    causes: dict[str, float] = collections.Counter()
    detail = []
    for g0, g1, before, after in gaps:
        us = g1 - g0
        bins[next((f"<{b} us" for b in GAP_BINS_US if us < b), f">={GAP_BINS_US[-1]} us")] += us
        if us < GAP_BINS_US[0]:
            continue  # launch latency between kernels of one graph
        launch = launches.get(after.get("args", {}).get("correlation"))
        if launch is None:
            cause = "unknown launch"
        elif launch["ts"] + launch.get("dur", 0) > g0:
            cause = f"late: {launch['name']} from {inside(launch['tid'], launch['ts'], launch['ts'])}; " \
                    f"the thread was in {inside(launch['tid'], g0, launch['ts'])}"
        else:
            cause = f"queued: {launch['name']} from {inside(launch['tid'], launch['ts'], launch['ts'])}"
        causes[cause] += us
        detail.append((us, cause, before["name"][:60], after["name"][:60]))
    detail.sort(reverse=True)
    return {
        "span_ms": span / 1e3, "busy_ms": busy / 1e3, "idle_ms": (span - busy) / 1e3, "gaps": len(gaps),
        "idle_by_gap_length_ms": {k: v / 1e3 for k, v in sorted(bins.items())},
        "idle_by_cause_ms": {k: v / 1e3 for k, v in causes.most_common(12)},
        "longest": [{"us": round(us, 1), "cause": c, "after": b, "before": a} for us, c, b, a in detail[:top]],
    }


def all_threads():
    """The profiler's setting that records every thread (the clip loop and
    the frame reader run in threads of their own), where this PyTorch has it."""
    try:
        return torch.profiler._ExperimentalConfig(profile_all_threads=True)
    except TypeError:
        return None


def stats_time_by_grid(events: list[dict]) -> dict[str, float]:
    """Device microseconds of the GroupNorm statistics kernel per launch grid."""
    out: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("cat") == "kernel" and e.get("name") == "stats":
            out[str(e["args"].get("grid"))] += e["dur"]
    return dict(out)


# -- GroupNorm statistics shapes --------------------------------------------
_ORIGINAL_STATS = groupnorm.rows_scale_shift


def record_stats_shapes() -> set[tuple[int, int, int, int]]:
    """Note each (N, pixels, C, groups) the statistics see from now on."""
    shapes: set[tuple[int, int, int, int]] = set()

    def recording(x, groups, weight, bias, eps, **kw):
        n, p, c = groupnorm._rows(x)
        shapes.add((n, p, c, groups))
        return _ORIGINAL_STATS(x, groups, weight, bias, eps, **kw)

    groupnorm.rows_scale_shift = recording
    return shapes


def stats_grid(n: int, p: int, c: int) -> str:
    """The statistics kernel's launch grid, as the trace writes it."""
    return str([n, groupnorm.stats_layout(p, c)[3], 1])


def time_stats_shapes(shapes, trace_us: dict[str, float], frames: int) -> list[dict]:
    from triton.testing import do_bench_cudagraph

    rows = []
    for n, p, c, groups in sorted(shapes):
        x = torch.randn(n, p, c, device="cuda", dtype=torch.float16).permute(0, 2, 1)
        grid = stats_grid(n, p, c)
        row = {"shape": [n, p, c], "grid": grid, "trace_us_per_frame": trace_us.get(grid, 0.0) / frames}
        for warps in (4, 8):
            row[f"us_{warps}w"] = 1e3 * do_bench_cudagraph(
                lambda: _ORIGINAL_STATS(x, groups, None, None, 1e-6, num_warps=warps), rep=20)
        rows.append(row)
        del x
    return rows


# -- the run -----------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--res", default="1024x576")
    p.add_argument("--mode", default="fast", choices=tuple(bench.MODES))
    p.add_argument("--frames", type=int, default=300, help="frames of each end-to-end run")
    p.add_argument("--long", type=int, default=0, metavar="N", help="also time an N-frame clip")
    p.add_argument("--decode-split", type=int, default=None, help="the mode with this Speed.decode_split")
    p.add_argument("--trace", action="store_true", help="record and read a profiler timeline")
    p.add_argument("--trace-frames", type=int, default=70)
    p.add_argument("--stats-shapes", action="store_true", help="time the GroupNorm statistics per shape")
    p.add_argument("--tail-profile", action="store_true", help="cProfile the first decodes of a short last chunk")
    p.add_argument("--writers", type=int, default=12)
    p.add_argument("--budget-s", type=float, default=1e9, help="seconds for the sections after the warm-up")
    p.add_argument("--wait-for", default=None, metavar="FILE", help="warm up, then wait for FILE before timing")
    p.add_argument("--wait-max-s", type=float, default=600)
    p.add_argument("--warm-signal", default=None, metavar="FILE", help="create FILE once warmed up")
    p.add_argument("--signal", default=None, metavar="FILE", help="create FILE when done")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        run(a)
    finally:
        for flag in (a.warm_signal, a.signal):
            if flag:
                Path(flag).touch()
    return 0


def run(a: argparse.Namespace) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    h, w = bench.parse_res(a.res)
    mode = bench.MODES[a.mode]
    tag = ""
    if a.decode_split is not None:
        mode = dataclasses.replace(mode, speed=dataclasses.replace(mode.speed, decode_split=a.decode_split))
        tag = f"_split{a.decode_split}"
    dev = torch.device("cuda")
    results: dict = {"args": vars(a), "environment": bench.environment(dev), "runs": {}}
    stem = out / f"timeline_{w}x{h}{tag}"
    report: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        report.append(line)

    def save() -> None:
        stem.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        stem.with_suffix(".txt").write_text("\n".join(report) + "\n")

    def left() -> float:
        return a.budget_s - (time.perf_counter() - t_start)

    writer = bench.writer_pool(a.writers)
    master = bench.build_master("full", dev)
    pipe = bench.make_pipeline(master, mode, dev)
    annotate(pipe, writer)
    device_times = DeviceTimes()
    device_times.wrap(pipe)
    shapes = record_stats_shapes() if a.stats_shapes else set()
    warm = bench.warmup_frames(argparse.Namespace(window=14, stride=10, frames=a.frames))
    t = time.perf_counter()
    bench.run_clip(pipe, mode, warm, h, w, writer)
    warm_s = time.perf_counter() - t
    env = results["environment"]
    say(f"# {env.get('card')} {a.mode}{tag} {w}x{h}, commit {env.get('commit')}; warm-up {warm_s:.0f} s")
    groupnorm.rows_scale_shift = _ORIGINAL_STATS
    if a.warm_signal:
        Path(a.warm_signal).touch()
    t = time.perf_counter()
    while a.wait_for and not Path(a.wait_for).exists() and time.perf_counter() - t < a.wait_max_s:
        time.sleep(0.5)
    t_start = time.perf_counter()

    def timed(name: str, n: int | None = None, with_writer: bool = True, profile: bool = False) -> None:
        n = n or a.frames
        if left() < n * 0.06 + 15:
            say(f"{name}: skipped, {left():.0f} s left")
            return
        device_times.take(1)
        r = bench.run_clip(pipe, mode, n, h, w, writer if with_writer else None, profile=profile)
        r["device_ms_per_frame"] = device_times.take(n)
        results["runs"][name] = r
        host = " ".join(f"{k} {v:.1f}" for k, v in r["stage_ms_per_frame"].items())
        gpu = " ".join(f"{k} {v:.1f}" for k, v in r["device_ms_per_frame"].items())
        memory = f"{r.get('gpu_peak_allocated_gb', 0):.2f} / {r.get('gpu_peak_reserved_gb', 0):.2f} GB"
        say(f"{name}: {n} frames {r['ms_per_frame']:.2f} ms/frame; GPU memory {memory}\n"
            f"    host in stages: {host}\n    GPU per step: {gpu}")
        save()

    tail = TailProfile(pipe) if a.tail_profile else None
    timed("base: the tail's first clip")
    timed("base: the tail's second clip")
    if tail is not None:
        results["tail_profile"] = tail.texts
        stem.with_name(stem.name + "_tail_profile.txt").write_text("\n\n".join(tail.texts))
        say(f"tail profile: {len(tail.texts)} decodes, in {stem.name}_tail_profile.txt")
    timed("base: the tail's third clip")
    timed("base, no files", with_writer=False)
    timed("base, stages synchronised", profile=True)
    if a.long:
        timed(f"base, {a.long} frames", n=a.long)
    trace_us: dict[str, float] = {}
    if a.trace and left() > 60:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
        with profile(activities=acts, experimental_config=all_threads()) as prof:
            r = bench.run_clip(pipe, mode, a.trace_frames, h, w, writer)
        path = Path("/tmp") / f"trace_{w}x{h}{tag}.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
        tl = read_timeline(events)
        tl["ms_per_frame_traced"] = r["ms_per_frame"]
        results["timeline"] = tl
        trace_us = stats_time_by_grid(events)
        say(f"trace of {a.trace_frames} frames ({r['ms_per_frame']:.1f} ms/frame traced): GPU busy "
            f"{tl['busy_ms']:.0f} of {tl['span_ms']:.0f} ms, idle {tl['idle_ms']:.0f} ms in {tl['gaps']} gaps")
        by_length = {k: round(v, 1) for k, v in tl["idle_by_gap_length_ms"].items()}
        say(f"  idle by gap length (ms): {json.dumps(by_length)}")
        for cause, ms in tl["idle_by_cause_ms"].items():
            say(f"  {ms:8.1f} ms  {cause}")
        for g in tl["longest"]:
            say(f"  gap {g['us']:9.1f} us  {g['cause']}  | after {g['after']} | before {g['before']}")
        save()
        del events, prof
    if shapes and left() > 30:
        rows = time_stats_shapes(shapes, trace_us, a.trace_frames)
        results["stats_shapes"] = rows
        say("statistics per shape (N, pixels, C): us with 4 / 8 warps; trace us/frame")
        for r in rows:
            say(f"  {tuple(r['shape'])}: {r['us_4w']:7.1f} / {r['us_8w']:7.1f}; {r['trace_us_per_frame']:7.1f}")
    save()
    if writer is not None:
        writer.close()


if __name__ == "__main__":
    sys.exit(main())
