#!/usr/bin/env python3
"""Soak one warm worker: many short jobs in a row, watching for growth.

    python scripts/soak_worker.py [--jobs 200] [--model PATH] [--device cpu|cuda] [--every 20]

Starts one worker through the standard client and runs ``--jobs`` short
estimate jobs (a small synthetic clip, each into a fresh folder), plus a
failing job every ``--fail-every`` jobs (a missing input: the error path
must not leak either). After every job it samples the worker process: its
resident memory, open files, threads and, on CUDA, the GPU memory it holds
(nvidia-smi). Every ``--every`` jobs it prints one line; at the end, a
summary comparing the first and the last window of jobs after warm-up.
Exits 1 with --check when memory or time grew past the limits.

Without --model a tiny random-weight model is built in a temporary folder
(the speed of the real model is not the point; its loop is the same).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from normalcrafter.worker.client import WorkerClient, WorkerError

MB = 1024 * 1024


def write_exr_clip(folder: Path, frames: int, height: int, width: int) -> Path:
    """A moving square over a gradient as an EXR sequence (needs OpenEXR only)."""
    import OpenEXR

    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(frames):
        img = np.stack([xx / width, yy / height, np.full_like(xx, 0.3)], axis=-1)
        x0 = (i * 3) % max(width - width // 3, 1)
        img[height // 3: 2 * height // 3, x0: x0 + width // 3] = 0.9
        channels = {c: np.ascontiguousarray(img[:, :, k]) for k, c in enumerate("RGB")}
        with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, channels) as f:
            f.write(str(folder / f"plate.{i + 1:04d}.exr"))
    return folder


def gpu_memory_mb(pid: int) -> float | None:
    """GPU memory the process holds, as the driver reports it (None without nvidia-smi)."""
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout
    used = [float(m) for p, m in (line.split(",") for line in out.splitlines() if "," in line) if int(p) == pid]
    return sum(used) if used else 0.0


def sample(proc: psutil.Process) -> dict:
    return {"rss_mb": proc.memory_info().rss / MB, "fds": proc.num_fds(), "threads": proc.num_threads(),
            "gpu_mb": gpu_memory_mb(proc.pid)}


def window_summary(rows: list[dict]) -> dict:
    keys = ("run_s", "rss_mb", "fds", "threads", "gpu_mb")
    out = {}
    for k in keys:
        values = [r[k] for r in rows if r.get(k) is not None]
        if values:
            out[k] = statistics.median(values) if k == "run_s" else max(values)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=200, help="estimate jobs to run (default: 200)")
    p.add_argument("--model", default=None, help="model folder (default: a tiny random model built here)")
    p.add_argument("--device", default="cpu", help="the jobs' device (default: cpu)")
    p.add_argument("--frames", type=int, default=6, help="frames per job (default: 6)")
    p.add_argument("--size", default="64x96", help="frame size HxW (default: 64x96)")
    p.add_argument("--format", default="exr", choices=("exr", "png", "npy"), help="output format (default: exr)")
    p.add_argument("--every", type=int, default=20, help="print a line every N jobs (default: 20)")
    p.add_argument("--fail-every", type=int, default=10, help="also run a failing job every N jobs (default: 10)")
    p.add_argument("--warmup", type=int, default=10, help="jobs before the baseline window (default: 10)")
    p.add_argument("--window", type=int, default=20, help="jobs in the first and last windows compared (default: 20)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the worker")
    p.add_argument("--json", type=Path, default=None, help="also write every sample to this file")
    p.add_argument("--check", action="store_true", help="exit 1 if memory or time grew past the limits")
    p.add_argument("--max-rss-growth-mb", type=float, default=50.0, help="--check limit (default: 50)")
    p.add_argument("--max-slowdown", type=float, default=0.25, help="--check limit, a fraction (default: 0.25)")
    args = p.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))

    work = Path(tempfile.mkdtemp(prefix="normalcrafter-soak-"))
    try:
        model = args.model
        if model is None:
            from normalcrafter.model.build import build_random_model

            model = str(build_random_model(work / "model", "tiny", seed=0))
        clip = write_exr_clip(work / "clip", args.frames, height, width)
        env = {"HF_HUB_OFFLINE": "1", "NORMALCRAFTER_LOG_DIR": str(work / "logs")}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        client = WorkerClient(sys.executable, env=env)
        hello = client.start()
        proc = psutil.Process(hello["pid"])
        rows = [{"job": 0, "run_s": None, **sample(proc)}]
        print(f"worker {hello['pid']} on {args.device}: {args.jobs} jobs of {args.frames} frames at "
              f"{height}x{width}; at start {rows[0]['rss_mb']:.0f} MB resident", flush=True)
        print(f"{'job':>5} {'run_s':>7} {'median':>7} {'rss_MB':>8} {'gpu_MB':>7} {'fds':>4} {'threads':>7} "
              f"{'loads':>5}", flush=True)
        base = {"input": str(clip), "model": model, "device": args.device, "format": args.format,
                "window": 4, "stride": 3, "decode_chunk": 2, "max_res": max(height, width)}
        started = time.monotonic()
        failures = 0
        try:
            for i in range(1, args.jobs + 1):
                out = work / "out" / f"job{i:04d}"
                done = client.wait(client.submit({**base, "output_dir": str(out)}), timeout=600)
                if done["result"]["frames"] != args.frames:
                    raise SystemExit(f"job {i} wrote {done['result']['frames']} frames, not {args.frames}")
                shutil.rmtree(out)
                if args.fail_every and i % args.fail_every == 0:
                    try:
                        client.wait(client.submit({**base, "input": str(work / "missing.mp4"),
                                                   "output_dir": str(work / "out" / "failed")}), timeout=60)
                        raise SystemExit("a job with a missing input succeeded")
                    except WorkerError as exc:
                        assert exc.code == "input_unreadable", exc.message
                        failures += 1
                rows.append({"job": i, "run_s": done["timings"]["run_s"],
                             "loads": done["result"]["model_loads"], **sample(proc)})
                if i % args.every == 0 or i == args.jobs:
                    recent = [r["run_s"] for r in rows[-args.every:] if r["run_s"] is not None]
                    r = rows[-1]
                    gpu = "-" if r["gpu_mb"] is None else f"{r['gpu_mb']:.0f}"
                    print(f"{i:>5} {r['run_s']:>7.3f} {statistics.median(recent):>7.3f} {r['rss_mb']:>8.1f} "
                          f"{gpu:>7} {r['fds']:>4} {r['threads']:>7} {r['loads']:>5}", flush=True)
        finally:
            client.stop()
        total = time.monotonic() - started
        first = window_summary(rows[1 + args.warmup: 1 + args.warmup + args.window])
        last = window_summary(rows[-args.window:])
        print(f"\n{args.jobs} jobs and {failures} failing jobs in {total:.0f} s; one model load: "
              f"{rows[-1]['loads'] == 1}")
        for k in first:
            print(f"  {k:>8}: jobs {args.warmup + 1}-{args.warmup + args.window}: {first[k]:.3f}   "
                  f"last {args.window}: {last[k]:.3f}   change {last[k] - first[k]:+.3f}")
        if args.json:
            args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows,
                                             "first": first, "last": last}, indent=1, default=str))
        grew = last["rss_mb"] - first["rss_mb"] > args.max_rss_growth_mb
        slower = last["run_s"] > first["run_s"] * (1 + args.max_slowdown)
        leaked = last["fds"] > first["fds"] or last["threads"] > first["threads"] or rows[-1]["loads"] != 1
        gpu_grew = "gpu_mb" in first and last["gpu_mb"] - first["gpu_mb"] > args.max_rss_growth_mb
        verdict = [name for name, bad in (("resident memory grew", grew), ("jobs got slower", slower),
                                          ("files, threads or model loads grew", leaked),
                                          ("GPU memory grew", gpu_grew)) if bad]
        print("verdict:", "; ".join(verdict) if verdict else "no growth")
        return 1 if args.check and verdict else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
