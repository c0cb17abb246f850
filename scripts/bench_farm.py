"""Farm benchmark: seam error of chunked runs, and multi-GPU scaling.

  python scripts/bench_farm.py seams [--size tiny] [--frames 160] [--contexts 0 10 20 40]
      In one process (no Ray): one sequential run against chunked runs cut at
      the clip's cut points, per context. Prints, per context, the angle
      between chunked and sequential normals (max and mean, degrees, over
      pixels whose sequential normal is longer than 0.5, as DSINE counts
      valid pixels) and the largest component difference.

  python scripts/bench_farm.py scale [--frames 1000 --height 576 --width 1024 --size full]
      On every GPU of this machine: the plain sequential estimate on one GPU
      (the baseline), then `normalcrafter farm` on all GPUs; prints fps of
      both, speed-up and scaling efficiency, and the stitched-vs-sequential
      angle (both written as half-float EXR, whose rounding alone is about
      0.02 degrees).

Weights are random (full size unless --model names a real model): speed
does not depend on the weight values, the seam error does (see docs/farm.md).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def synthetic_clip(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    from media import moving_clip

    return moving_clip(n, h, w, seed)


def model_path(args: argparse.Namespace, work: Path) -> str:
    if args.model:
        return args.model
    from normalcrafter.model.build import build_random_model

    return str(build_random_model(work / f"model-{args.size}", args.size, seed=0))


def seam_stats(chunked: np.ndarray, sequential: np.ndarray) -> dict:
    from normalcrafter.evaluation.metrics import angular_error

    valid = np.linalg.norm(sequential, axis=-1) > 0.5
    err = angular_error(chunked, sequential)[valid]
    return {"max_deg": float(err.max()) if err.size else 0.0, "mean_deg": float(err.mean()) if err.size else 0.0,
            "max_abs": float(np.abs(chunked - sequential).max()), "valid_fraction": float(valid.mean())}


def cmd_seams(args: argparse.Namespace) -> None:
    import torch

    from normalcrafter.chunks import chunk_ranges, plan_chunk, stream_chunk
    from normalcrafter.pipeline import NormalCrafterPipeline

    work = Path(tempfile.mkdtemp(prefix="bench_farm_"))
    pipe = NormalCrafterPipeline.from_pretrained(model_path(args, work), device=args.device, dtype=args.dtype)
    torch.manual_seed(0)
    frames = synthetic_clip(args.frames, args.height, args.width)
    t0 = time.perf_counter()
    sequential = pipe(frames)
    print(f"sequential: {args.frames} frames in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    ranges = chunk_ranges(args.frames, args.chunk)
    later = [(a, b) for a, b in ranges if a > 0]  # the first chunk is the sequential run's own start
    rows = []
    for context in args.contexts:
        out = np.empty_like(sequential[later[0][0] :]) if later else None
        for a, b in later:
            plan = plan_chunk(args.frames, a, b, context)
            for i, normals in stream_chunk(pipe, frames[plan.read_start : plan.read_end], plan):
                out[a + i - later[0][0]] = normals
        seams = seam_stats(out, sequential[later[0][0] :])
        rows.append({"context": context, "chunks": ranges, **seams})
        print(json.dumps(rows[-1]), flush=True)
    restarted = np.concatenate([pipe(frames[a:b]) for a, b in later])
    print(json.dumps({"context": "restart (plain --frames A:B per chunk)", **seam_stats(restarted, sequential[later[0][0] :])}))
    shutil.rmtree(work, ignore_errors=True)


def cmd_scale(args: argparse.Namespace) -> None:
    import ray
    import torch

    from media import write_sequence
    from normalcrafter.evaluation.metrics import angular_error
    from normalcrafter.farm.engine import FarmOptions, run_farm
    from normalcrafter.farm.plan import plan_job
    from normalcrafter.io.writers import read_exr_normals
    from normalcrafter.job import EstimateSettings, run_estimate

    gpus = torch.cuda.device_count()
    if gpus < 1:
        sys.exit("scale needs CUDA GPUs; use 'seams' on the CPU")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_farm_"))
    model = model_path(args, work)
    plate = write_sequence(work / "plate", synthetic_clip(args.frames, args.height, args.width), "plate.{:05d}.png", 0)
    base = EstimateSettings(model=model, dtype=args.dtype, max_res=0)
    t0 = time.perf_counter()
    run_estimate(plate, work / "sequential", base)  # one GPU, one process: the reference and the baseline
    t_seq = time.perf_counter() - t0
    farm = EstimateSettings(model=model, dtype=args.dtype, max_res=0, context=args.context)
    shots = plan_job([str(plate)], work / "farm", farm, args.chunk)
    ray.init(include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    progress = run_farm(shots, farm, FarmOptions())
    t_farm = time.perf_counter() - t0
    errs = [angular_error(read_exr_normals(work / "farm" / f"normal.{i:05d}.exr")[0],
                          read_exr_normals(work / "sequential" / f"normal.{i:05d}.exr")[0])
            for i in range(args.frames)]
    err = np.concatenate([e.ravel() for e in errs])
    report = {
        "gpus": gpus, "workers": progress.workers, "frames": args.frames, "size": [args.width, args.height],
        "chunk": args.chunk, "context": args.context, "chunks": len(shots[0].chunks),
        "fps_1gpu_sequential": args.frames / t_seq, "fps_farm": args.frames / t_farm,
        "speedup": t_seq / t_farm, "efficiency": t_seq / t_farm / gpus,
        "seam_max_deg": float(err.max()), "seam_mean_deg": float(err.mean()),
        "note": "farm time includes Ray start-up, model loads on every GPU and the context frames",
    }
    print(json.dumps(report, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    seams = sub.add_parser("seams", help="seam error per context, in one process")
    seams.add_argument("--frames", type=int, default=160)
    seams.add_argument("--height", type=int, default=64)
    seams.add_argument("--width", type=int, default=96)
    seams.add_argument("--chunk", type=int, default=70)
    seams.add_argument("--contexts", type=int, nargs="+", default=[0, 10, 20, 30, 40, 60])
    seams.add_argument("--size", default="tiny", help="random model size: tiny, small, compact, full")
    seams.add_argument("--device", default="auto")
    scale = sub.add_parser("scale", help="all GPUs of this machine against one")
    scale.add_argument("--frames", type=int, default=1000)
    scale.add_argument("--height", type=int, default=576)
    scale.add_argument("--width", type=int, default=1024)
    scale.add_argument("--chunk", type=int, default=210)
    scale.add_argument("--context", type=int, default=40)
    scale.add_argument("--size", default="full")
    scale.add_argument("--work", default=None, help="keep inputs and outputs in this folder")
    for p in (seams, scale):
        p.add_argument("--model", default=None, help="a real model folder instead of random weights")
        p.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    cmd_seams(args) if args.mode == "seams" else cmd_scale(args)


if __name__ == "__main__":
    main()
