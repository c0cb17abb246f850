#!/usr/bin/env python3
"""Time and workspace of the model's convolutions under cuDNN's algorithm
search and without it, and of the temporal (3, 1, 1) convolution in three
formulations: Conv3d, Conv2d over (frames, pixels), and three matrix
products. Shapes are the full-size model's at 1024x576 (fp16,
channels-last). Workspace = peak allocated during the call less the inputs
and the output. One process per setting of the search (PyTorch caches the
algorithm chosen per shape). Needs a CUDA GPU.

    python scripts/conv_probe.py --search on; python scripts/conv_probe.py --search off
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

GB = 1e9


def measure(fn, *args) -> tuple[float, float]:
    """(ms per call after warm-up, workspace GB of the first call)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn(*args)
    torch.cuda.synchronize()
    workspace = (torch.cuda.max_memory_allocated() - before - out.numel() * out.element_size()) / GB
    del out
    for _ in range(3):
        fn(*args)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        fn(*args)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 100, workspace


def conv3d(x5: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv3d(x5, w, padding=(1, 0, 0))


def conv2d_frames(x5: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    b, c, t, h, wd = x5.shape
    return F.conv2d(x5.reshape(b, c, t, h * wd), w.squeeze(-1), padding=(1, 0)).view(b, -1, t, h, wd)


def three_products(x5: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    b, c, t, h, wd = x5.shape
    rows = x5.permute(0, 2, 3, 4, 1).reshape(t, h * wd, c)  # channels-last: a view
    taps = [w[:, :, k, 0, 0].t() for k in range(3)]
    out = torch.matmul(rows, taps[1])
    out[1:] += torch.matmul(rows[:-1], taps[0])
    out[:-1] += torch.matmul(rows[1:], taps[2])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--search", choices=("on", "off"), required=True)
    search = p.parse_args(argv).search == "on"
    torch.backends.cudnn.benchmark = search
    torch.manual_seed(0)
    dev, dt = torch.device("cuda"), torch.float16
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"algorithm search {'on' if search else 'off'}")
    temporal = [(512, 7, 72, 128), (512, 7, 144, 256), (256, 7, 288, 512), (128, 7, 576, 1024),
                (320, 14, 72, 128), (1280, 14, 18, 32)]
    print("temporal (3,1,1) convolution: C, frames, H, W | formulation | ms | workspace GB")
    for c, t, h, wd in temporal:
        x5 = torch.randn(1, c, t, h, wd, device=dev, dtype=dt).contiguous(memory_format=torch.channels_last_3d)
        w = (torch.randn(c, c, 3, 1, 1, device=dev, dtype=dt) * c ** -0.5).contiguous(
            memory_format=torch.channels_last_3d)
        for name, fn in (("conv3d", conv3d), ("conv2d", conv2d_frames), ("matmul", three_products)):
            ms, ws = measure(fn, x5, w)
            print(f"  {c:5d} {t:3d} {h:4d} {wd:5d} | {name:7s} | {ms:8.3f} | {ws:6.3f}")
        del x5, w
        torch.cuda.empty_cache()
    spatial = [(1, 128, 128, 576, 1024), (1, 256, 128, 576, 1024), (7, 512, 512, 144, 256), (14, 320, 320, 72, 128),
               (14, 640, 640, 36, 64)]
    print("3x3 convolution: N, C_in, C_out, H, W | ms | workspace GB")
    for n, ci, co, h, wd in spatial:
        x = torch.randn(n, ci, h, wd, device=dev, dtype=dt).contiguous(memory_format=torch.channels_last)
        w = (torch.randn(co, ci, 3, 3, device=dev, dtype=dt) * ci ** -0.5).contiguous(
            memory_format=torch.channels_last)
        ms, ws = measure(lambda a, b: F.conv2d(a, b, padding=1), x, w)
        print(f"  {n:3d} {ci:4d} {co:4d} {h:4d} {wd:5d} | {ms:8.3f} | {ws:6.3f}")
        del x, w
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
