"""``normalcrafter train``: run a training config, or write synthetic clips
in the dataset format (for inspection, or as a fixed dataset)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import errors
from ..errors import NormalCrafterError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="training config (.toml or .json); see docs/training.md")
    parser.add_argument("--resume", action="store_true", help="continue the run in the config's output folder")
    parser.add_argument("--output-dir", help="override the config's output_dir")
    parser.add_argument("--init", help="override the config's model.init (random:<size> or a model folder)")
    parser.add_argument("--write-synthetic", metavar="DIR", help="write procedural clips to DIR instead of training")
    parser.add_argument("--clips", type=int, default=4, help="with --write-synthetic: number of clips")
    parser.add_argument("--frames", type=int, default=14, help="with --write-synthetic: frames per clip")
    parser.add_argument("--height", type=int, default=256, help="with --write-synthetic: frame height")
    parser.add_argument("--width", type=int, default=256, help="with --write-synthetic: frame width")
    parser.add_argument("--seed", type=int, default=0, help="with --write-synthetic: scene seed")


def _write_synthetic(args: argparse.Namespace) -> int:
    import torch

    from .dataset import write_clip
    from .synthetic import render_clips

    if min(args.clips, args.frames, args.height, args.width) < 1:
        raise NormalCrafterError(errors.INPUT_INVALID, "--clips, --frames, --height and --width must be positive")
    gen = torch.Generator().manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for i in range(args.clips):
        clips = render_clips(1, args.frames, args.height, args.width, device, generator=gen)
        rgb = (clips.rgb[0] * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        normal = clips.normal[0].permute(0, 2, 3, 1).cpu().numpy()
        folder = write_clip(Path(args.write_synthetic) / f"clip_{i:04d}", rgb, normal, "opengl")
        print(folder)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.write_synthetic:
        return _write_synthetic(args)
    if not args.config:
        raise NormalCrafterError(errors.BAD_REQUEST, "give a training config file (or --write-synthetic DIR)")
    from .config import load_config
    from .trainer import Trainer

    cfg = load_config(args.config)
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.init:
        cfg.model.init = args.init
    final = Trainer(cfg, resume=args.resume).run()
    print(f"model written to {final}")
    return 0
