#!/usr/bin/env python3
"""The GroupNorm statistics and merge kernels (groupnorm.py) as they are,
not specialised on pixel counts and loop lengths, against the same kernels
specialised as Triton does by default (and with the loop length a
constexpr, as before run 27): microseconds per call on the model's shapes
at 512x288 and 1024x576, each replayed from a CUDA graph, the two kinds in
turn. The specialised ones build a kernel per new loop length, which a
clip's short last chunk asks for (docs/performance.md, runs 26-29). Needs a
CUDA GPU.

    python scripts/gn_specialize_probe.py
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "src"))

from normalcrafter import groupnorm  # noqa: E402

# (N, pixels, C): the decoder's levels per frame or chunk and over time, the
# UNet's per frame and over time.
SHAPES = {
    "512x288": [(7, 2560, 512), (7, 10240, 512), (7, 40960, 256), (7, 163840, 128), (1, 7 * 10240, 512),
                (1, 7 * 40960, 256), (1, 7 * 163840, 128), (14, 2560, 320), (14, 640, 640), (14, 160, 1280),
                (1, 14 * 2560, 320)],
    "1024x576": [(1, 9216, 512), (1, 36864, 512), (1, 147456, 256), (1, 589824, 128), (1, 7 * 36864, 512),
                 (1, 7 * 147456, 256), (1, 7 * 589824, 128), (14, 9216, 320), (14, 2304, 640), (14, 576, 1280),
                 (1, 14 * 9216, 320)],
}


def specialised(kernel, constexpr: tuple[str, ...] = ()):
    """The kernel's function jitted anew with Triton's default specialisation,
    ``constexpr`` parameters made compile-time constants."""
    import triton

    fn = kernel.fn
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__annotations__ = {**fn.__annotations__, **{name: "tl.constexpr" for name in constexpr}}
    return triton.jit(copy)


def main() -> int:
    from triton.testing import do_bench_cudagraph

    kinds = {"as is": groupnorm._kernels()}
    stats, merge, apply = kinds["as is"]
    kinds["specialised"] = (specialised(stats, ("ITERS",)), specialised(merge), apply)
    iters = [p.is_constexpr for p in kinds["specialised"][0].params if p.name == "ITERS"]
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}; us per statistics + merge; "
          f"specialised ITERS constexpr: {iters}")
    print("size | (N, pixels, C) | as is | specialised")
    totals = {k: 0.0 for k in kinds}
    for size, shapes in SHAPES.items():
        for n, p, c in shapes:
            x = torch.randn(n, c, p, 1, device="cuda", dtype=torch.float16).contiguous(
                memory_format=torch.channels_last)
            best = {k: float("inf") for k in kinds}
            for _ in range(3):
                for name, kernels in kinds.items():
                    groupnorm._kernels = lambda kernels=kernels: kernels
                    best[name] = min(best[name], 1e3 * do_bench_cudagraph(
                        lambda: groupnorm.rows_scale_shift(x, 32, None, None, 1e-6), rep=30))
            for k in kinds:
                totals[k] += best[k]
            print(f"{size} | {(n, p, c)} | {best['as is']:7.1f} | {best['specialised']:7.1f}")
            del x
    print(f"sum | | {totals['as is']:7.1f} | {totals['specialised']:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
