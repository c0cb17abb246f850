"""``normalcrafter download``: fetch the published weights (resumable) into the
hub cache or into one folder in the combined layout ``--model PATH`` takes."""
from __future__ import annotations

import argparse
import sys

from .model.loading import PUBLISHED_UNET_REPO


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=PUBLISHED_UNET_REPO,
                   help=f"hub id (default: {PUBLISHED_UNET_REPO}, whose image encoder, feature extractor and "
                   "scheduler come from the gated stabilityai/stable-video-diffusion-img2vid-xt: accept its "
                   "licence and log in with `hf auth login` first)")
    p.add_argument("--to", default=None, metavar="DIR",
                   help="write one folder in the combined layout (default: the standard hub cache)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .worker.download import DownloadRequest, download_model

    bars: dict[str, tqdm] = {}

    def on_event(ev: dict) -> None:
        if ev["type"] == "progress":
            bar = bars.get(ev["repo"])
            if bar is None:
                bar = bars[ev["repo"]] = tqdm(total=ev["total"], unit="B", unit_scale=True, desc=ev["repo"],
                                              file=sys.stderr)
            bar.update(ev["done"] - bar.n)
        elif ev["type"] == "stage":
            print(ev["message"], file=sys.stderr)

    try:
        result = download_model(DownloadRequest.from_body({"model": args.model, "dir": args.to}), on_event,
                                lambda: False)
    finally:
        for bar in bars.values():
            bar.close()
    print(f"use it with: normalcrafter estimate INPUT -o OUT --model {result['source']}", file=sys.stderr)
    return 0
