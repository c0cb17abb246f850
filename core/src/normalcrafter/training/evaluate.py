"""Held-out evaluation on procedural clips: angular accuracy and temporal
stability of one or more models, as JSON and a markdown table.

    python -m normalcrafter.training.evaluate --model full=runs/a/model \\
        --model per-frame=runs/a/model@1 --clips 8 --frames 24 --out results.json

``NAME=PATH@WINDOW`` runs the pipeline with that window (stride = window
when WINDOW < 14, i.e. independent windows; window 1 is per-frame inference,
its decoder chunk is 1 frame too). Metrics come from
``normalcrafter.evaluation``: DSINE-protocol angular error (mean, median, %
under 11.25/22.5/30 degrees) and motion-compensated flicker, here along the
renderer's exact flow (no flow estimation): 0 for a prediction whose
frame-to-frame change matches the ground truth's, growing with flicker.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import convention
from ..evaluation.flicker import FlickerStats, pair_flicker
from ..evaluation.metrics import ErrorStats, angular_error, valid_mask
from ..pipeline import NormalCrafterPipeline
from .synthetic import render_clips

HELDOUT_SEED = 20250415  # never a training seed: training draws from torch's global RNG


def heldout_clips(clips: int, frames: int, height: int, width: int, seed: int = HELDOUT_SEED,
                  device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, F, H, W, 3) uint8 RGB, float32 RUB normals and (N, F-1, H, W, 2)
    flow, fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    rgbs, normals, flows = [], [], []
    for _ in range(clips):
        c = render_clips(1, frames, height, width, device, generator=gen, with_flow=True)
        rgbs.append((c.rgb[0] * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy())
        normals.append(c.normal[0].permute(0, 2, 3, 1).cpu().numpy())
        flows.append(c.flow[0].cpu().numpy())
    return np.stack(rgbs), np.stack(normals), np.stack(flows)


def evaluate_predictions(preds: list[np.ndarray], gts: list[np.ndarray], flows: list[np.ndarray]) -> dict[str, float]:
    """Pooled angular statistics and flicker over clips of (F, H, W, 3) normals."""
    errors, flicker = ErrorStats(), FlickerStats()
    for pred, gt, flow in zip(preds, gts, flows):
        mask = valid_mask(gt)
        errors.add(angular_error(pred[mask], gt[mask]))
        for t in range(len(flow)):
            flicker.add(pair_flicker(pred[t], pred[t + 1], gt[t], gt[t + 1], flow[t]))
    temporal = {("flicker_" + k if k in ("pixels", "pairs") else k): v for k, v in flicker.summary().items()}
    return {**errors.summary(), **temporal}


def predict(pipe: NormalCrafterPipeline, rgb: np.ndarray, window: int) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, H, W, 3) float32 normals in RUB."""
    stride = 10 if window >= 14 else window
    out = pipe(rgb, window=window, stride=stride, decode_chunk=min(7, window))
    return convention.convert(out, pipe.convention, "RUB")


def _parse_model(spec: str) -> tuple[str, str, int]:
    name, _, rest = spec.partition("=")
    path, _, window = rest.partition("@")
    if not name or not path:
        raise SystemExit(f"--model wants NAME=PATH[@WINDOW], got {spec!r}")
    return name, path, int(window or 14)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH[@WINDOW] (repeatable)")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--seed", type=int, default=HELDOUT_SEED)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--out", help="write results JSON here")
    args = ap.parse_args(argv)

    # Scenes are drawn on the CPU, so the clips are the same on any device.
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    rgb, gt, flow = heldout_clips(args.clips, args.frames, args.height, args.width, args.seed, device)
    constant = [np.broadcast_to(np.float32([0, 0, 1]), g.shape) for g in gt]
    results: dict[str, dict] = {"constant (0,0,1)": evaluate_predictions(constant, list(gt), list(flow))}
    pipes: dict[str, NormalCrafterPipeline] = {}
    for spec in args.model:
        name, path, window = _parse_model(spec)
        if path not in pipes:
            pipes[path] = NormalCrafterPipeline.from_pretrained(path, device=args.device, dtype=args.dtype)
        t0 = time.time()
        preds = [predict(pipes[path], clip, window) for clip in rgb]
        results[name] = {**evaluate_predictions(preds, list(gt), list(flow)), "window": window, "model": path,
                         "seconds": round(time.time() - t0, 2)}
    report = {"heldout": {"clips": args.clips, "frames": args.frames, "height": args.height, "width": args.width,
                          "seed": args.seed}, "results": results}
    print(markdown_table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def markdown_table(results: dict[str, dict]) -> str:
    lines = ["| run | mean | median | <11.25 | <22.5 | <30 | flicker | pred change |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['mean']:.2f} | {r['median']:.2f} | {r['within_11.25']:.1f} | "
                     f"{r['within_22.5']:.1f} | {r['within_30']:.1f} | {r['flicker']:.3f} | {r['pred_change']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
