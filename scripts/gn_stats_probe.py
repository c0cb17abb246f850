#!/usr/bin/env python3
"""Read bandwidth of the Triton GroupNorm statistics (groupnorm.py) on the
model's largest tensors at 1024x576, for several shapes of its kernel:
blocks loaded together per loop step (unroll), warps, elements per block.
The statistics read each tensor once, so bytes / time is the figure to
compare with the card's memory bandwidth (each call also launches the
merge kernel from Python, so the smallest shapes show launch costs). Needs
a CUDA GPU.

    python scripts/gn_stats_probe.py
"""
from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "src"))

from normalcrafter.groupnorm import rows_scale_shift  # noqa: E402

# (N, C, T, H, W): the decoder's last level (a chunk, and one frame), its
# level before, and the UNet's first level (temporal, and per frame).
SHAPES = [(1, 128, 7, 576, 1024), (1, 128, 1, 576, 1024), (1, 256, 7, 288, 512), (1, 320, 14, 72, 128),
          (14, 320, 1, 72, 128), (14, 1280, 1, 18, 32)]


def main() -> int:
    torch.manual_seed(0)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("shape | unroll | warps | elements | us | GB/s")
    for shape in SHAPES:
        x = torch.randn(shape, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last_3d)
        if shape[2] == 1:
            x = x[:, :, 0]
        gb = x.numel() * 2 / 1e9
        for unroll, warps, elements in itertools.product((1, 2, 4, 8), (4, 8), (4096, 8192)):
            def run():
                return rows_scale_shift(x, 32, None, None, 1e-6, unroll=unroll, num_warps=warps, elements=elements)
            run()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                run()
            torch.cuda.synchronize()
            s = (time.perf_counter() - t0) / 20
            print(f"{tuple(x.shape)} | {unroll} | {warps} | {elements} | {s * 1e6:8.1f} | {gb / s:7.0f}")
        del x
    return 0


if __name__ == "__main__":
    sys.exit(main())
