"""``normalcrafter demo``: the main job end to end on the bundled sample clip."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .estimate_cli import ConsoleReporter, describe_model
from .job import EstimateSettings, PipelineCache, run_estimate

SAMPLE = Path(__file__).resolve().parent / "data" / "sample" / "big_buck_bunny_40f.mp4"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--model", default=None, help="model folder or hub id (default: the bundled small model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--max-res", type=int, default=512, help="longest side in pixels (default: 512)")


def run(args: argparse.Namespace) -> int:
    print(f"sample: {SAMPLE.name} (Big Buck Bunny, (c) Blender Foundation, CC-BY 3.0)", file=sys.stderr)
    print(describe_model(args.model), file=sys.stderr)
    reporter = ConsoleReporter(quiet=False)
    settings = EstimateSettings(model=args.model, device=args.device, max_res=args.max_res, preview=True)
    try:
        r = run_estimate(SAMPLE, args.output, settings, PipelineCache(), on_event=reporter)
    finally:
        reporter.close()
    print(f"done: {r['frames'] + r['skipped']} EXR frames (channels N.X/N.Y/N.Z, convention {r['convention']}: "
          f"+X right, +Y up, +Z toward the camera) and preview.mp4 in {Path(args.output)}", file=sys.stderr)
    return 0
