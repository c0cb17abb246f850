"""``normalcrafter eval PRED GT``: accuracy and flicker of predicted normals, as a
table, a JSON report and (with --plots) pictures. See docs/evaluation.md."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .. import errors
from ..errors import NormalCrafterError
from ..io.atomic import atomic_write_bytes
from .clips import Clip
from .evaluate import FLOW_CHOICES, InputFrames, PlotOptions, evaluate
from .loaders import BENCHMARKS, open_benchmark
from .loaders.blender import is_blender_clip
from .normal_files import open_normal_clips


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", type=Path, help="predicted normals: a folder of EXR/PNG/NPY frames, an (F,H,W,3) .npy, "
                   "or a folder of clip folders")
    p.add_argument("gt", type=Path, help="ground truth: the same kinds, a Blender ground-truth clip, or a "
                   "benchmark folder (with --benchmark)")
    p.add_argument("--benchmark", choices=BENCHMARKS, help="read GT as this benchmark's download layout")
    p.add_argument("--pred-convention", help="axis convention of the prediction (opengl, opencv or a code like "
                   "RUB); default: the EXR header's, else opengl")
    p.add_argument("--gt-convention", help="axis convention of plain ground-truth files (as --pred-convention)")
    p.add_argument("--frames", type=Path, help="the input video or image sequence (for flow and pictures when "
                   "the ground truth has no RGB)")
    p.add_argument("--flow", choices=FLOW_CHOICES, default="auto",
                   help="flow for the flicker metric: the ground truth's, OpenCV DIS or Farneback on the input "
                   "frames, or none (auto: ground truth's if any, else DIS)")
    p.add_argument("--out", type=Path, help="report folder (default: ./eval-<PRED name>)")
    p.add_argument("--plots", action="store_true", help="also draw a contact sheet and a temporal profile per clip")
    p.add_argument("--profile-column", type=float, default=0.5, metavar="FRACTION",
                   help="image column of the temporal profile, as a fraction of the width (default 0.5)")
    p.add_argument("--sintel-pass", choices=("final", "clean"), default="final")
    p.add_argument("--scannet-step", type=int, default=1, help="use every n-th ScanNet frame")
    p.add_argument("--max-frames", type=int, help="at most this many ScanNet frames per scene")


def _ground_truth(args: argparse.Namespace) -> tuple[list[Clip], list[str]]:
    if args.benchmark or is_blender_clip(args.gt) or _holds_blender_clips(args.gt):
        if args.gt_convention:
            raise NormalCrafterError(errors.BAD_REQUEST,
                                     "--gt-convention is for plain normal files; benchmark loaders know theirs")
        name = args.benchmark or "blender"
        return open_benchmark(name, args.gt, sintel_pass=args.sintel_pass, scannet_step=args.scannet_step,
                              max_frames=args.max_frames), []
    if _looks_like_benchmark(args.gt):
        raise NormalCrafterError(errors.BAD_REQUEST, f"{args.gt} looks like a benchmark download (DSINE package, "
                                 "MPI-Sintel or ScanNet export): pass --benchmark sintel|scannet|nyuv2|ibims")
    return open_normal_clips(args.gt, args.gt_convention)


def _looks_like_benchmark(path: Path) -> bool:
    """Image files next to the normals would be read as normals: refuse them."""
    if not path.is_dir():
        return False
    if (path / "training").is_dir() or any(path.glob("*_img.*")) or any(path.glob("*/*_img.*")):
        return True
    return any((q / "depth").is_dir() and (q / "color").is_dir() for q in path.iterdir() if q.is_dir())


def _holds_blender_clips(path: Path) -> bool:
    return path.is_dir() and any(q.is_dir() and is_blender_clip(q) for q in path.iterdir())


def _input_frames(path: Path) -> InputFrames:
    from ..io.readers import MAX_SIDE, open_source

    src = open_source(path, max_res=MAX_SIDE)
    frames = iter(src)
    state = {"pos": -1, "frame": None}

    def read(i: int):  # type: ignore[no-untyped-def]
        # Video frames decode in order only; the evaluation asks for each once, in order.
        if i < state["pos"]:
            raise NormalCrafterError(errors.INTERNAL, "input frames requested out of order")
        while state["pos"] < i:
            state["frame"], state["pos"] = next(frames), state["pos"] + 1
        return state["frame"]

    return InputFrames(list(src.numbers), read)


def _fmt(v: object, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


HEADER = ("clip", "frames", "mean", "median", "<11.25", "<22.5", "<30", "flicker")


def _row(name: str, e: dict) -> tuple[str, ...]:
    fl = e.get("flicker")
    return (name, str(e["frames"]), _fmt(e["mean"]), _fmt(e["median"]), _fmt(e["within_11.25"], 1),
            _fmt(e["within_22.5"], 1), _fmt(e["within_30"], 1), _fmt(fl["flicker"] if fl else None))


def format_table(report: dict) -> str:
    rows = [HEADER] + [_row(c["name"], c) for c in report["clips"]] + [_row("overall", report["overall"])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n(angles in degrees, <t: % of pixels within t degrees, flicker: see docs/evaluation.md)"


def run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.profile_column <= 1.0:
        raise NormalCrafterError(errors.BAD_REQUEST, "--profile-column must be between 0 and 1")
    preds, pred_warnings = open_normal_clips(args.pred, args.pred_convention)
    gts, gt_warnings = _ground_truth(args)
    rgb = _input_frames(args.frames) if args.frames else None
    out = args.out or Path(f"eval-{args.pred.resolve().name}")
    plots = PlotOptions(out / "plots", column=args.profile_column) if args.plots else None
    report = evaluate(preds, gts, flow=args.flow, plots=plots, rgb=rgb,
                      on_clip=lambda e: print(f"{e['name']}: {e['frames']} frames, mean {_fmt(e['mean'])} deg",
                                              flush=True))
    report["warnings"] = pred_warnings + gt_warnings + report["warnings"]
    report["prediction"], report["ground_truth"] = str(args.pred), str(args.gt)
    out.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_bytes(out / "metrics.json", json.dumps(_clean(report), indent=1).encode())
    for w in report["warnings"]:
        print(f"warning: {w}")
    print(format_table(report))
    print(f"report: {json_path}")
    if plots:
        print(f"pictures: {plots.folder}")
    return 0


def _clean(v: object) -> object:
    """NaN is not JSON: write null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v
