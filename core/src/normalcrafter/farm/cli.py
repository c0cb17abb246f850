"""``normalcrafter farm``: many inputs and long clips, cut into chunks and run
on every GPU of a Ray cluster (or of this machine), with one progress bar."""
from __future__ import annotations

import argparse
import sys

from ..job import EstimateSettings
from .engine import FarmOptions, Progress, run_farm
from .plan import plan_job

DEFAULT_CHUNK = 210
DEFAULT_CONTEXT = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="videos or image sequences (folder, plate.%%04d.exr, plate.####.exr)")
    p.add_argument("-o", "--output", required=True, help="output folder; with several inputs, one subfolder "
                   "per input, named after it")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="frames per chunk, about; chunks are cut "
                   f"where seams are smallest, every 70 frames at the default window settings (default: {DEFAULT_CHUNK})")
    p.add_argument("--context", type=int, default=DEFAULT_CONTEXT, help="frames of context run before each "
                   f"chunk (docs/farm.md has the seam error per context; default: {DEFAULT_CONTEXT})")
    p.add_argument("--address", default=None, help="Ray cluster to use, e.g. auto or ray://head:10001 "
                   "(default: $RAY_ADDRESS, else a cluster on this machine using all its GPUs)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPU cores of the cluster started on this machine")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per GPU of the "
                   "cluster; without GPUs one per --cpus-per-worker cores)")
    p.add_argument("--cpus-per-worker", type=int, default=1, help="CPU cores per worker (default: 1)")
    p.add_argument("--max-retries", type=int, default=3, help="times a chunk is retried after its worker dies "
                   "(default: 3)")
    p.add_argument("--plan", action="store_true", help="print the chunks as 'input A:B' lines and exit "
                   "(for other farm managers: run normalcrafter estimate --frames A:B --context N per line)")
    p.add_argument("--model", default=None, help="model folder readable on every node, or a hub id cached there "
                   "(default: as normalcrafter estimate)")
    p.add_argument("--format", choices=("exr", "png"), default="exr", help="output format (default: exr)")
    p.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="precision; auto is fp16 on CUDA and fp32 on the CPU (default: auto)")
    p.add_argument("--window", type=int, default=14, help="frames per UNet call (default: 14)")
    p.add_argument("--stride", type=int, default=10, help="frames between window starts (default: 10)")
    p.add_argument("--decode-chunk", type=int, default=7, help="frames decoded together (default: 7)")
    p.add_argument("--max-res", type=int, default=1024, help="longest side processed; 0 keeps the input size "
                   "(default: 1024)")
    p.add_argument("--renormalize", action="store_true", help="rescale every normal to unit length")
    p.add_argument("--convention", default="opengl", help="axis convention written (default: opengl)")
    p.add_argument("--model-convention", default=None, help="override the axis convention recorded for the model")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def settings_from_args(args: argparse.Namespace) -> EstimateSettings:
    settings = EstimateSettings(
        model=args.model, dtype=args.dtype, window=args.window, stride=args.stride, decode_chunk=args.decode_chunk,
        max_res=args.max_res, context=args.context, format=args.format, renormalize=args.renormalize,
        convention=args.convention, model_convention=args.model_convention,
    )
    settings.validate()
    return settings


class FarmDisplay:
    """One bar for all frames of all shots, with the state of the workers."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=p.total, initial=p.done, unit="frame", file=sys.stderr, dynamic_ncols=True)
        self.bar.update(p.done - self.bar.n)
        self.bar.set_postfix_str(
            f"shots {p.shots_done}/{p.shots}, {p.running}/{p.workers} workers busy"
            + (f", {p.retries} retried" if p.retries else ""), refresh=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    shots = plan_job(args.inputs, args.output, settings, args.chunk)
    if args.plan:
        for shot in shots:
            for c in shot.chunks:
                print(f"{shot.input} {c.start}:{c.end}")
        return 0
    options = FarmOptions(address=args.address, num_cpus=args.num_cpus, workers=args.workers,
                          cpus_per_worker=args.cpus_per_worker, max_retries=args.max_retries)
    todo = sum(len(s.missing(c)) for s in shots for c in s.chunks)
    print(f"{len(shots)} shot(s), {sum(len(s.chunks) for s in shots)} chunks, {todo} frames to do", file=sys.stderr)
    display = FarmDisplay(args.quiet)
    try:
        progress = run_farm(shots, settings, options, on_update=display)
    finally:
        display.close()
    fps = todo / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
    print(f"done: {progress.total} frames of {len(shots)} shot(s) in {progress.elapsed_s:.1f} s "
          f"({fps:.2f} frames/s on {progress.workers} workers"
          + (f", {progress.retries} chunk(s) retried" if progress.retries else "") + ")", file=sys.stderr)
    return 0
