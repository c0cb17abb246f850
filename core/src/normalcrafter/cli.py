"""The ``normalcrafter`` command: a thin dispatcher to subcommand modules.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their subcommand runs, so ``normalcrafter
--help`` stays fast and a heavy import (torch, bpy) costs only its own command.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import NormalCrafterError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "estimate": ("normalcrafter.estimate_cli", "estimate normals for a video, image sequence or image"),
    "eval": ("normalcrafter.evaluation.cli", "score predicted normals against ground truth (accuracy, flicker, pictures)"),
    "train": ("normalcrafter.training.cli", "train a NormalCrafter model (paper recipe: SFR + two stages)"),
    "farm": ("normalcrafter.farm.cli", "estimate many shots or long clips in chunks on a Ray cluster (all GPUs)"),
    "demo": ("normalcrafter.demo_cli", "run the bundled sample clip through the bundled model"),
    "download": ("normalcrafter.download_cli", "fetch the published weights into the hub cache or a folder"),
}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="normalcrafter",
        description="Temporally stable surface normals from video (NormalCrafter, ICCV 2025).",
    )
    parser.add_argument("--version", action="version", version=f"normalcrafter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == chosen:
            # Only the chosen subcommand imports its module (and its dependencies).
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except NormalCrafterError as exc:
        print(f"normalcrafter {args.command}: error: {exc.message}", file=sys.stderr)
        return 2 if exc.code != "cancelled" else 130
    except KeyboardInterrupt:
        print(f"normalcrafter {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
