"""``normalcrafter estimate``: one input to one output folder, with a progress bar."""
from __future__ import annotations

import argparse
import sys

from .job import EstimateSettings, PipelineCache, run_estimate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="video file (mp4, mov, mkv, avi), image sequence (folder, frame.%%04d.png or "
                   "frame.####.png) or a single image")
    p.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    p.add_argument("--model", default=None, help="local model folder, or a hub id such as Yanrui95/NormalCrafter "
                   "(default: $NORMALCRAFTER_MODEL, else the small model shipped with the package)")
    p.add_argument("--format", choices=("exr", "png", "npy"), default="exr",
                   help="exr: half-float EXR per frame, channels N.X/N.Y/N.Z; png: 16-bit preview per frame; "
                   "npy: one (F,H,W,3) float32 array of the raw model output (default: exr)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="precision; auto is fp16 on CUDA and fp32 on the CPU (default: auto)")
    p.add_argument("--compile", action="store_true", help="compile the model's blocks with torch.compile "
                   "first (GPU: about 3 minutes per resolution, then 1.3-1.5x faster on an H100; worth it for "
                   "thousands of frames at one size; docs/performance.md)")
    p.add_argument("--window", type=int, default=14, help="frames per UNet call (default: 14)")
    p.add_argument("--stride", type=int, default=10, help="frames between window starts; window-stride frames "
                   "overlap and are blended (default: 10)")
    p.add_argument("--decode-chunk", type=int, default=7, help="frames decoded together by the temporal VAE "
                   "decoder; lower it to save memory (default: 7)")
    p.add_argument("--max-res", type=int, default=1024, help="downscale so the longest side is at most this; "
                   "0 keeps the input size (default: 1024)")
    p.add_argument("--frames", default=None, metavar="A:B", help="input frames A (inclusive) to B (exclusive), "
                   "counted from 0 like a Python slice; A: runs to the end")
    p.add_argument("--context", type=int, default=0, metavar="N", help="compute --frames A:B as one chunk of the "
                   "whole input, with at least N frames of context before it, so that chunks run on different "
                   "machines into one folder match a single run (docs/farm.md; 40 recommended)")
    p.add_argument("--renormalize", action="store_true", help="rescale every normal to unit length "
                   "(the model's raw output is not exactly unit length)")
    p.add_argument("--convention", default="opengl", help="axis convention written: opengl/blender (+X right, "
                   "+Y up, +Z toward the camera), opencv (+X right, +Y down, +Z forward) or a code such as RUB "
                   "(default: opengl)")
    p.add_argument("--model-convention", default=None, help="override the axis convention recorded for the model")
    p.add_argument("--camera-rotations", default=None, metavar="JSON", help="per-frame camera-to-world rotations; "
                   "adds world-space normals (channels Nworld.X/Y/Z) to each EXR")
    p.add_argument("--preview", action="store_true", help="also write preview.mp4: input and normals side by side")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def settings_from_args(args: argparse.Namespace) -> EstimateSettings:
    from .io.readers import parse_range

    return EstimateSettings(
        model=args.model, device=args.device, dtype=args.dtype, window=args.window, stride=args.stride,
        decode_chunk=args.decode_chunk, max_res=args.max_res,
        frames=parse_range(args.frames) if args.frames else None, context=args.context, format=args.format,
        renormalize=args.renormalize, convention=args.convention, model_convention=args.model_convention,
        camera_rotations=args.camera_rotations, preview=args.preview, compile=args.compile,
    )


class ConsoleReporter:
    """Events to a tqdm bar and one-line messages on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None

    def __call__(self, ev: dict) -> None:
        kind = ev["type"]
        if kind == "progress" and not self.quiet:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=ev["total"], unit="frame", file=sys.stderr, dynamic_ncols=True)
            self.bar.update(ev["done"] - self.bar.n)
        elif kind == "warning":
            self._print(f"warning: {ev['message']}")
        elif kind == "stage" and not self.quiet and ev.get("message"):
            self._print(ev["message"])

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def describe_model(model: str | None) -> str:
    from .model.loading import bundled_model_dir, default_model

    chosen = model or default_model()
    if chosen == str(bundled_model_dir()):
        return (f"model: the small model shipped with normalcrafter ({chosen}); for full quality use the "
                f"published weights: --model Yanrui95/NormalCrafter (see README)")
    return f"model: {chosen}"


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    settings.validate()
    print(describe_model(settings.model), file=sys.stderr)
    reporter = ConsoleReporter(args.quiet)
    try:
        result = run_estimate(args.input, args.output, settings, PipelineCache(), on_event=reporter)
    finally:
        reporter.close()
    t = result["timings"]
    print(f"wrote {result['frames']} frame(s) to {result['output_dir']}"
          + (f" ({result['skipped']} already done)" if result["skipped"] else "")
          + f" in {t['total_s']:.1f} s; convention {result['convention']}", file=sys.stderr)
    return 0
