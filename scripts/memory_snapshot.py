#!/usr/bin/env python3
"""Where a pipeline run's GPU memory goes: PyTorch's allocator history over
a whole run (warm-up and graph captures included), replayed to find the
moment of peak allocated memory, and the live blocks then, largest first,
with the Python lines that allocated them.

    python scripts/memory_snapshot.py --mode eager --res 1024x576 --frames 28 --out memory.txt

Full-size architecture with random weights (as scripts/bench.py); needs a
CUDA GPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import MODES, build_master, make_pipeline, parse_res, run_clip  # noqa: E402

# Frames of these files say nothing about which model call allocated.
_PLUMBING = ("torch/nn/modules/module.py", "torch/_dynamo", "torch/_inductor", "contextlib.py", "threading.py",
             "torch/utils/_contextlib.py", "/graphs.py", "/overlap.py", "torch/cuda/graphs.py", "torch/_ops.py",
             "torch/_library", "torch/_compile.py")


def where(frames: list[dict], depth: int = 4) -> str:
    """The innermost ``depth`` frames of a block's stack that are not plumbing."""
    picked = [f"{Path(f['filename']).name}:{f['line']} {f['name']}" for f in frames
              if f.get("filename") and not any(p in f["filename"] for p in _PLUMBING)]
    return " < ".join(picked[:depth]) or "(no Python frame)"


def peak_blocks(snapshot: dict) -> tuple[int, int, list[tuple[int, str]]]:
    """(peak allocated bytes, reserved bytes then, [(size, where)] live then)."""
    live: dict[int, tuple[int, list]] = {}
    now = reserved = peak = peak_reserved = 0
    at_peak: list[tuple[int, str]] = []
    for trace in snapshot["device_traces"]:
        for e in trace:
            action, addr, size = e["action"], e["addr"], e["size"]
            if action == "alloc":
                live[addr] = (size, e.get("frames", []))
                now += size
                if now > peak:
                    peak, peak_reserved = now, reserved
                    at_peak = [(s, where(fr)) for s, fr in live.values()]
            elif action == "free_completed" and addr in live:
                now -= live.pop(addr)[0]
            elif action in ("segment_alloc", "segment_map"):  # map: expandable segments
                reserved += size
            elif action in ("segment_free", "segment_unmap"):
                reserved -= size
    at_peak.sort(key=lambda x: -x[0])
    return peak, peak_reserved, at_peak


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="eager", choices=sorted(MODES))
    p.add_argument("--res", default="1024x576")
    p.add_argument("--frames", type=int, default=28)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    device = torch.device("cuda")
    height, width = parse_res(a.res)
    mode = MODES[a.mode]
    master = build_master("full", device)
    # From before the weights reach the GPU, so that they count too.
    torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")
    pipe = make_pipeline(master, mode, device)
    run_clip(pipe, mode, a.frames, height, width, None)
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    peak, reserved, blocks = peak_blocks(snapshot)
    gb = 1e9
    lines = [f"# {a.mode} {a.res}, {a.frames} frames; torch {torch.__version__}, {torch.cuda.get_device_name()}",
             f"peak allocated {peak / gb:.2f} GB (torch.cuda: {torch.cuda.max_memory_allocated() / gb:.2f}), "
             f"reserved then {reserved / gb:.2f} GB, peak reserved {torch.cuda.max_memory_reserved() / gb:.2f} GB",
             f"live blocks at the peak: {len(blocks)}; the {a.top} largest:"]
    lines += [f"{s / gb:8.3f} GB  {w}" for s, w in blocks[: a.top]]
    rest = sum(s for s, _ in blocks[a.top:])
    lines.append(f"{rest / gb:8.3f} GB  in the other {max(0, len(blocks) - a.top)} blocks")
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
