#!/usr/bin/env python3
"""Speed and memory of the NormalCrafter pipeline, stage by stage.

Builds the published architecture (``--size full``: UNet 1.52 B, VAE, CLIP
ViT-H) with random weights in memory, since speed does not depend on weight
values, and runs synthetic clips through ``NormalCrafterPipeline.stream``
with EXR writing (``.npy`` where OpenEXR is missing), in several modes:

* ``reference``: the published code's choices: fp16, VAE encoder in fp32,
  NCHW, no compilation, whole clip in memory, files written at the end;
* ``fast``: fp16 (VAE encoder bf16), channels-last, the Triton GroupNorm's
  statistics (groupnorm.py), regional torch.compile (its compile time is
  reported apart), split decoder, model calls replayed from CUDA graphs,
  frames read in a thread of their own, the clip loop a few chunks ahead of
  writer processes;
* ``eager``: ``fast`` without compilation (the whole GroupNorm in Triton);
  ``bf16``: the same all in bf16; ``eager-nchw``: NCHW with PyTorch's
  GroupNorm, no graphs; ``fast-inductor-gn``: ``fast`` with inductor's own
  GroupNorm; ``eager-nograph``, ``fast-nograph``: without CUDA graphs;
* ``lowmem``: ``eager`` with UNet and CLIP weights offloaded to host memory;
* ``fp32``: exact fp32 (TF32 off), the baseline of the angular differences.

Per stage it reports ms per frame (from a run synchronised at stage ends),
the end-to-end ms per frame and fps (an unsynchronised run), peak device
memory (allocated and reserved) and peak host memory; plus the counted
floating-point work per frame and a torch.profiler summary. Sections run in
order of importance and are skipped once ``--budget-s`` is spent; results
are written to ``--json`` after every section.

    python scripts/bench.py --size tiny --device cpu --frames 16 --res 128x72   # smoke test
    python scripts/bench.py --size full --device cuda --json out.json           # the real thing
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "src"))

from normalcrafter.accel import Speed  # noqa: E402
from normalcrafter.model.build import build_components  # noqa: E402
from normalcrafter.model.loading import Components, ModelInfo  # noqa: E402
from normalcrafter.overlap import BackgroundWriter  # noqa: E402
from normalcrafter.pipeline import NormalCrafterPipeline  # noqa: E402
from normalcrafter.windows import window_schedule  # noqa: E402

STAGES = ("clip", "vae_encode", "unet", "vae_decode", "io")


@dataclass(frozen=True)
class Mode:
    name: str
    dtype: torch.dtype
    speed: Speed
    in_memory: bool = False  # the release's way: all frames in, all outputs kept, files written at the end


MODES = {
    "reference": Mode("reference", torch.float16, Speed(channels_last=False, encoder_dtype="fp32", overlap=False,
                                                       decode_split=0, cudnn_benchmark=False, cuda_graphs=False,
                                                       nhwc_group_norm=False, full_batches=False,
                                                       one_token_cross_attention=False),
                      in_memory=True),
    "fast": Mode("fast", torch.float16, Speed(compile=True)),
    "eager": Mode("eager", torch.float16, Speed()),
    "eager-nchw": Mode("eager-nchw", torch.float16, Speed(channels_last=False, nhwc_group_norm=False,
                                                         cuda_graphs=False)),
    "eager-nograph": Mode("eager-nograph", torch.float16, Speed(cuda_graphs=False)),
    "fast-nograph": Mode("fast-nograph", torch.float16, Speed(compile=True, cuda_graphs=False)),
    "fast-inductor-gn": Mode("fast-inductor-gn", torch.float16, Speed(compile=True, nhwc_group_norm=False)),
    "bf16": Mode("bf16", torch.bfloat16, Speed()),
    "lowmem": Mode("lowmem", torch.float16, Speed(offload=True)),
    "fp32": Mode("fp32", torch.float32, Speed(overlap=False), in_memory=True),
}


# -- measuring -------------------------------------------------------------
class HostPeak:
    """Peak resident memory of this process while active (sampled every 5 ms)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def __enter__(self) -> "HostPeak":
        self.start = self.rss()
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def synthetic_frames(n: int, height: int, width: int, seed: int = 0):
    """A moving, textured RGB clip generated frame by frame (never all in memory)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height + n, width + n, 3), dtype=np.uint8)
    for i in range(n):
        yield base[i : i + height, i : i + width]


def write_frame(folder: str, fmt: str, i: int, normals: np.ndarray) -> float:
    """Write one frame as the job layer does (EXR, else .npy where OpenEXR is
    missing), then delete it to keep the disk flat on long clips. Returns
    the seconds the write took."""
    t0 = time.perf_counter()
    if fmt == "exr":
        from normalcrafter.io.writers import write_exr

        path = write_exr(Path(folder) / f"normal.{i:05d}.exr", normals, {"normalcrafter_frame": str(i)})
    else:
        path = Path(folder) / f"normal.{i:05d}.npy"
        np.save(path, normals)
    path.unlink()
    return time.perf_counter() - t0


def have_openexr() -> bool:
    try:
        import OpenEXR  # noqa: F401

        return True
    except ImportError:
        return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def writer_pool(processes: int) -> BackgroundWriter | None:
    """Writer processes, started before any timing: a spawned process imports
    this script (torch included) before its first write."""
    if processes < 1:
        return None
    pool = BackgroundWriter(workers=processes, processes=True)
    for _ in range(processes):
        pool.submit(time.sleep, 0.5)
    pool.wait()
    return pool


def run_clip(pipe: NormalCrafterPipeline, mode: Mode, n: int, height: int, width: int,
             writer: BackgroundWriter | None, profile: bool = False, keep: bool = False, window: int = 14,
             stride: int = 10, chunk: int = 7) -> dict:
    """One clip end to end: synthetic frames in, files out (through ``writer``,
    or none when it is None). Returns timings."""
    dev = pipe.device
    pipe.profile = profile
    pipe.times = type(pipe.times)()
    folder = tempfile.mkdtemp(prefix="ncbench-")
    fmt = "exr" if have_openexr() else "npy"
    io_s = [0.0]
    kept: list[np.ndarray] = []
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    sync(dev)
    with HostPeak() as host:
        t0 = time.perf_counter()
        if mode.in_memory:
            frames = list(synthetic_frames(n, height, width))
            outs = [o for _, o in pipe.stream(frames, n, window, stride, chunk)]
            t_compute = time.perf_counter() - t0
            for i, o in enumerate(outs):
                io_s[0] += write_frame(folder, fmt, i, o) if writer is not None else 0.0
            if keep:
                kept = outs
            del outs, frames
        else:
            # Processes: OpenEXR holds the GIL while it writes (see overlap.py).
            for i, o in pipe.stream(synthetic_frames(n, height, width), n, window, stride, chunk):
                if keep:
                    kept.append(o.copy())
                if writer is not None:
                    writer.submit(write_frame, folder, fmt, i, o, then=lambda s: io_s.__setitem__(0, io_s[0] + s))
            t_compute = time.perf_counter() - t0
            if writer is not None:
                writer.wait()
        sync(dev)
        wall = time.perf_counter() - t0
    shutil.rmtree(folder, ignore_errors=True)
    times = pipe.times.as_dict()
    per = {k: 1e3 * times[k] / n for k in ("clip", "vae_encode", "unet", "vae_decode")}
    per["io"] = 1e3 * (io_s[0] + times["read"]) / n
    out = {
        "frames": n, "height": height, "width": width, "profiled": profile,
        "file_format": fmt if writer is not None else None,
        "wall_s": wall, "ms_per_frame": 1e3 * wall / n, "fps": n / wall,
        "compute_ms_per_frame": 1e3 * t_compute / n,
        "stage_ms_per_frame": per,
        "host_rss_start_gb": host.start / 1e9, "host_rss_peak_gb": host.peak / 1e9,
    }
    if dev.type == "cuda":
        out["gpu_peak_allocated_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
        out["gpu_peak_reserved_gb"] = torch.cuda.max_memory_reserved(dev) / 1e9
    if keep:
        out["_outputs"] = kept
    return out


def angular_error(a: np.ndarray, b: np.ndarray) -> dict:
    """Per-pixel angle between two normal fields, in degrees."""
    a = a.reshape(-1, 3).astype(np.float64)
    b = b.reshape(-1, 3).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = (na > 1e-3) & (nb > 1e-3)
    cos = np.clip((a[ok] * b[ok]).sum(1) / (na[ok] * nb[ok]), -1.0, 1.0)
    ang = np.degrees(np.arccos(cos))
    return {
        "mean_deg": float(ang.mean()), "median_deg": float(np.median(ang)),
        "p99_deg": float(np.percentile(ang, 99)), "max_deg": float(ang.max()),
        "rel_l2": float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)),
        "max_abs": float(np.abs(a - b).max()), "pixels_compared": int(ok.sum()),
    }


# -- floating-point work -----------------------------------------------------
def count_flops(size: str, height: int, width: int, window: int, stride: int, chunk: int, frames: int) -> dict:
    """FLOPs per output frame, counted by torch's FlopCounterMode on the meta
    device (no memory, no time): matmuls, convolutions and attention."""
    from accelerate import init_empty_weights
    from torch.utils.flop_counter import FlopCounterMode

    from normalcrafter.context_attention import use_one_token_cross_attention
    from normalcrafter.pipeline import ADDED_TIME_IDS

    # Parameters are born on the meta device (no memory, no init time); the
    # few buffers are moved there after (the scheduler must stay real).
    with init_empty_weights():
        unet, vae, clip, _, _ = build_components(size)
    for m in (unet, vae, clip):
        m.to("meta")
    # The work the pipeline does: cross-attention to the one CLIP token is the
    # token's projected value (context_attention.py), not attention over every query.
    use_one_token_cross_attention(unet)
    h, w = -(-height // 64) * 64, -(-width // 64) * 64

    def flops(fn) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        return counter.get_total_flops()

    m = torch.device("meta")
    d = clip.config.projection_dim
    f_unet = flops(lambda: unet(torch.zeros(1, window, 8, h // 8, w // 8, device=m), torch.tensor(1.0, device=m),
                                encoder_hidden_states=torch.zeros(window, 1, d, device=m),
                                added_time_ids=torch.tensor([ADDED_TIME_IDS], device=m)))
    f_enc = flops(lambda: vae.quant_conv(vae.encoder(torch.zeros(chunk, 3, h, w, device=m))))
    f_dec = flops(lambda: vae.decode(torch.zeros(chunk, 4, h // 8, w // 8, device=m), num_frames=chunk))
    size_c = clip.config.image_size
    f_clip = flops(lambda: clip(torch.zeros(chunk, 3, size_c, size_c, device=m)))
    n_windows = len(window_schedule(frames, window, stride))
    per = {
        "unet": f_unet * n_windows / frames, "vae_encode": f_enc / chunk, "vae_decode": f_dec / chunk,
        "clip": f_clip / chunk,
    }
    per["total"] = sum(per.values())
    return {"padded_size": [h, w], "windows": n_windows, "unet_per_window": f_unet, "per_frame": per}


def matmul_rate(device: torch.device) -> float | None:
    """Measured bf16 matrix-product rate (FLOP/s) on random data."""
    if device.type != "cuda":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    sync(device)
    return 2 * n**3 * 10 / (start.elapsed_time(end) / 1e3)


# -- the pieces ---------------------------------------------------------------
def environment(device: torch.device) -> dict:
    import diffusers
    import transformers

    env = {
        "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "commit": os.environ.get("NORMALCRAFTER_COMMIT") or _git_commit(),
    }
    if device.type == "cuda":
        env["card"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def attention_report(pipe: NormalCrafterPipeline) -> dict:
    """Which attention implementation each model uses (SDPA is PyTorch's
    fused flash / memory-efficient attention)."""
    procs: dict[str, int] = {}
    for model in (pipe.unet, pipe.vae):
        for name, p in getattr(model, "attn_processors", {}).items():
            procs[type(p).__name__] = procs.get(type(p).__name__, 0) + 1
    return {"diffusers_processors": procs,
            "clip_attn_implementation": getattr(pipe.image_encoder.config, "_attn_implementation", None)}


def build_master(size: str, device: torch.device) -> Components:
    """Random full-precision components, built on the device (fast), kept on the host."""
    with torch.device(device):
        unet, vae, clip, fe, sched = build_components(size)
    sched = type(sched).from_config(sched.config)  # the scheduler's tables belong on the host
    for m in (unet, vae, clip):
        m.eval().requires_grad_(False).to("cpu")
    return Components(unet, vae, clip, fe, sched, ModelInfo(source=f"random-{size}"))


def make_pipeline(master: Components, mode: Mode, device: torch.device) -> NormalCrafterPipeline:
    c = Components(copy.deepcopy(master.unet), copy.deepcopy(master.vae), copy.deepcopy(master.image_encoder),
                   master.feature_extractor, copy.deepcopy(master.scheduler), master.info)
    return NormalCrafterPipeline(c, device, mode.dtype, mode.speed)


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def profile_summary(pipe: NormalCrafterPipeline, mode: Mode, n: int, height: int, width: int, path: Path,
                    writer: BackgroundWriter | None) -> None:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if pipe.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        run_clip(pipe, mode, n, height, width, writer)
    key = "cuda_time_total" if pipe.device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70)
    path.write_text(f"# {mode.name} {width}x{height}, {n} frames\n{table}\n")


def warmup_frames(a: argparse.Namespace) -> int:
    """Two windows: the warm-up compiles, picks convolution algorithms and
    captures every CUDA graph (a signature is captured on its second call)."""
    return min(a.window + a.stride, a.frames)


def parse_res(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(h), int(w)


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        f"Card: {env.get('card', 'CPU ' + str(env.get('cpu')))}; driver {env.get('driver', '-')}; "
        f"torch {env['torch']} (CUDA {env.get('cuda', '-')}); diffusers {env['diffusers']}; commit {env['commit']}; "
        f"model: random weights, size `{results['args']['size']}`; window 14, stride 10, decode chunk 7.",
        "",
        "| mode | size | frames | CLIP | VAE enc | UNet | VAE dec | I/O | sum of stages | end-to-end ms/frame | fps "
        "| GPU peak alloc / reserved GB | host peak GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        st = r.get("stages") or {}
        stages = [f"{st[k]:.1f}" if k in st else "-" for k in STAGES]
        total = f"{sum(st.values()):.1f}" if st else "-"
        gpu = (f"{r['gpu_peak_allocated_gb']:.2f} / {r['gpu_peak_reserved_gb']:.2f}"
               if "gpu_peak_allocated_gb" in r else "-")
        lines.append(f"| {r['mode']} | {r['width']}x{r['height']} | {r['frames']} | " + " | ".join(stages)
                     + f" | {total} | {r['ms_per_frame']:.1f} | {r['fps']:.2f} | {gpu} | {r['host_rss_peak_gb']:.2f} |")
    return "\n".join(lines) + "\n"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.t0 = time.perf_counter()
        self.out_dir = Path(args.out_dir) if args.out_dir else None
        self.results: dict = {"args": vars(args), "environment": environment(self.device), "runs": [],
                              "compile_s": {}, "angles_vs_fp32": {}, "skipped": [], "errors": {}}
        self.kept: dict[str, np.ndarray] = {}
        self.writer = writer_pool(args.writers)

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def save(self) -> None:
        Path(self.args.json).write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        if self.args.markdown:
            Path(self.args.markdown).write_text(markdown(self.results))

    @contextlib.contextmanager
    def section(self, name: str, needs_s: float = 0.0):
        """Run a section if the budget allows; record, never propagate, its failure."""
        if self.left() < needs_s:
            self.results["skipped"].append(name)
            print(f"[skip] {name}: {self.left():.0f} s left, needs {needs_s:.0f}", flush=True)
            yield False
            return
        t = time.perf_counter()
        print(f"[run ] {name} ({self.left():.0f} s left)", flush=True)
        try:
            yield True
        except Exception as exc:  # noqa: BLE001 - a benchmark reports what broke and goes on
            import traceback

            self.results["errors"][name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            print(f"[done] {name} in {time.perf_counter() - t:.1f} s", flush=True)
            self.save()

    def record(self, mode: Mode, r: dict, stages_from: dict | None = None, note: str = "") -> dict:
        row = {k: v for k, v in r.items() if k != "_outputs"}
        row["mode"] = mode.name
        row["stages"] = (stages_from or r)["stage_ms_per_frame"]
        if note:
            row["note"] = note
        self.results["runs"].append(row)
        print(f"  {mode.name:9s} {r['width']}x{r['height']} x{r['frames']}: {r['ms_per_frame']:.1f} ms/frame "
              f"({r['fps']:.2f} fps), stages {json.dumps({k: round(v, 1) for k, v in row['stages'].items()})}, "
              f"GPU {r.get('gpu_peak_allocated_gb', 0):.2f}/{r.get('gpu_peak_reserved_gb', 0):.2f} GB, "
              f"host {r['host_rss_peak_gb']:.2f} GB", flush=True)
        return row

    def measure(self, pipe: NormalCrafterPipeline, mode: Mode, res: tuple[int, int], keep_key: str | None = None):
        """Warm-up, a synchronised run for the stage split, an unsynchronised
        run (or the median of --repeat) for the end-to-end figures."""
        h, w = res
        a = self.args
        t = time.perf_counter()
        run_clip(pipe, mode, warmup_frames(a), h, w, self.writer)
        warm = time.perf_counter() - t
        staged = run_clip(pipe, mode, a.frames, h, w, self.writer, profile=True, keep=keep_key is not None)
        if keep_key is not None:
            self.kept[keep_key] = np.stack(staged.pop("_outputs"))
            if a.keep_dir:
                Path(a.keep_dir).mkdir(parents=True, exist_ok=True)
                np.save(Path(a.keep_dir) / f"{keep_key}.npy", self.kept[keep_key])
        if mode.speed.overlap is False or mode.in_memory:
            best = staged  # nothing overlaps: the synchronised run is the real one
        else:
            runs = [run_clip(pipe, mode, a.frames, h, w, self.writer) for _ in range(a.repeat)]
            best = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
        row = self.record(mode, best, staged)
        row["warmup_s"] = warm
        return row

    def run(self) -> None:
        a = self.args
        res_list = [parse_res(r) for r in a.res]
        with self.section("flops", needs_s=0 if a.flops else float("inf")):
            self.results["flops"] = {f"{w}x{h}": count_flops(a.size, h, w, a.window, a.stride, a.chunk, a.frames)
                                     for h, w in res_list}
            rate = matmul_rate(self.device)
            self.results["bf16_matmul_flops_per_s"] = rate
            if rate:
                for key, f in self.results["flops"].items():
                    f["floor_ms_per_frame"] = 1e3 * f["per_frame"]["total"] / rate
        master = None
        with self.section("build"):
            t = time.perf_counter()
            master = build_master(a.size, self.device)
            self.results["build_s"] = time.perf_counter() - t
        if master is None:
            return
        for name in a.modes:
            # Global switches: the release runs with PyTorch's defaults, and
            # the fp32 baseline with TF32 off (true fp32 products).
            saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
                     torch.backends.cuda.matmul.allow_tf32)
            torch.backends.cudnn.benchmark = False
            if name == "fp32":
                torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            try:
                self._run_mode(master, MODES[name], res_list)
            finally:
                free()
                (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
                 torch.backends.cuda.matmul.allow_tf32) = saved
            if name == "fp32":
                for key in list(self.kept):
                    self._angles(key)

    def _run_mode(self, master: Components, mode: Mode, res_list: list[tuple[int, int]]) -> None:
        a = self.args
        pipe = None
        with self.section(f"{mode.name}: build", needs_s=a.section_s) as ok:
            if ok:
                pipe = make_pipeline(master, mode, self.device)
                self.results.setdefault("attention", attention_report(pipe))
        if pipe is None:
            return
        # fp32 is only the baseline of the angles (last size); the low-memory
        # mode matters at the largest size.
        sizes = res_list[-1:] if mode.name == "fp32" else res_list[:1] if mode.name == "lowmem" else res_list
        if a.wait_for:
            # Compile now, while another process times the other modes; time
            # only once it is done (its flag file appears).
            for h, w in sizes:
                with self.section(f"{mode.name}: warm-up {w}x{h}") as ok:
                    if ok:
                        t = time.perf_counter()
                        run_clip(pipe, mode, warmup_frames(a), h, w, self.writer)
                        self.results["compile_s"][f"{w}x{h}"] = time.perf_counter() - t
            t = time.perf_counter()
            while not Path(a.wait_for).exists() and time.perf_counter() - t < a.wait_max_s:
                time.sleep(0.5)
            self.results["waited_s"] = time.perf_counter() - t
            self.t0 += self.results["waited_s"]  # the budget counts working time only
            a.wait_for = None
        for i, (h, w) in enumerate(sizes):
            warm = f"{w}x{h}" in self.results["compile_s"]  # compiled during --wait-for
            needs = a.section_s + (300 if mode.speed.compile and not warm else 0)
            with self.section(f"{mode.name}: {w}x{h}", needs_s=needs) as ok:
                if not ok:
                    continue
                keep = f"{mode.name}@{w}x{h}" if a.angles and (h, w) == res_list[-1] else None
                row = self.measure(pipe, mode, (h, w), keep)
                if mode.speed.compile:
                    self.results["compile_s"].setdefault(f"{w}x{h}", row["warmup_s"])
                if keep:
                    self._angles(keep)
        if mode.name == next((m for m in a.modes if not MODES[m].in_memory), None):
            self._memory_runs(pipe, mode)
        if self.out_dir is not None and mode.name in ("fast", "eager", "reference"):
            h, w = res_list[0]
            with self.section(f"{mode.name}: profile", needs_s=a.section_s / 2) as ok:
                if ok:
                    profile_summary(pipe, mode, min(2 * a.window, a.frames), h, w,
                                    self.out_dir / f"profile_{mode.name}_{w}x{h}.txt", self.writer)

    def _angles(self, key: str) -> None:
        ref_key = "fp32@" + key.split("@")[1]
        ref = self.kept.get(ref_key)
        stored = Path(self.args.keep_dir or ".") / f"{ref_key}.npy"
        if ref is None and self.args.keep_dir and stored.exists():
            ref = np.load(stored)
        if ref is None or key.startswith("fp32@") or key not in self.kept:
            return
        self.results["angles_vs_fp32"][key] = angular_error(self.kept[key], ref)
        print(f"  angle {key} vs fp32: {json.dumps(self.results['angles_vs_fp32'][key])}", flush=True)

    def _memory_runs(self, pipe: NormalCrafterPipeline, mode: Mode) -> None:
        a = self.args
        for spec in a.long:
            n, res = spec.split("@")
            h, w = parse_res(res)
            n = int(n)
            per_frame = next((r["ms_per_frame"] for r in self.results["runs"]
                              if r["mode"] == mode.name and (r["width"], r["height"]) == (w, h)), 50.0)
            with self.section(f"{mode.name}: {n} frames @ {w}x{h}", needs_s=n * per_frame / 1e3 * 1.3 + 10) as ok:
                if ok:
                    self.record(mode, run_clip(pipe, mode, n, h, w, self.writer), note="memory vs clip length")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="full", choices=("tiny", "small", "compact", "full"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--res", nargs="+", default=["1024x576", "512x288"], help="WxH sizes (multiples of 64 or padded)")
    p.add_argument("--frames", type=int, default=70)
    p.add_argument("--window", type=int, default=14)
    p.add_argument("--stride", type=int, default=10)
    p.add_argument("--chunk", type=int, default=7, help="decode chunk")
    p.add_argument("--modes", nargs="+", default=["fast", "reference", "fp32", "bf16", "lowmem", "eager"],
                   choices=tuple(MODES))
    p.add_argument("--repeat", type=int, default=1, help="unsynchronised runs per size (median)")
    p.add_argument("--writers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 4)),
                   help="writer processes; 0 writes no files (compute only)")
    p.add_argument("--long", nargs="*", default=[], metavar="N@WxH", help="extra memory runs of the first streaming mode")
    p.add_argument("--angles", action="store_true", help="angular difference of each mode against fp32 (last size)")
    p.add_argument("--section-s", type=float, default=60, help="time a mode's size needs to be started")
    p.add_argument("--budget-s", type=float, default=1e9, help="skip sections once this much time is spent")
    p.add_argument("--wait-for", default=None, metavar="FILE",
                   help="warm up (compile) first, then wait for FILE before timing (another process times the "
                   "other modes meanwhile)")
    p.add_argument("--wait-max-s", type=float, default=600)
    p.add_argument("--signal", default=None, metavar="FILE", help="create FILE when done")
    p.add_argument("--keep-dir", default=None, help="save the outputs compared for angles here, and look for "
                   "the fp32 baseline here (for runs split over processes)")
    p.add_argument("--no-flops", dest="flops", action="store_false", help="skip counting FLOPs")
    p.add_argument("--json", default="bench.json")
    p.add_argument("--markdown", default=None, help="also write the results table here")
    p.add_argument("--out-dir", default=None, help="where torch.profiler summaries go")
    args = p.parse_args(argv)
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    print(json.dumps(bench.results["environment"]), flush=True)
    try:
        bench.run()
    finally:
        bench.save()
        if bench.writer is not None:
            bench.writer.close()
        if args.signal:
            Path(args.signal).touch()
    print(markdown(bench.results))
    if bench.results["angles_vs_fp32"]:
        for k, v in bench.results["angles_vs_fp32"].items():
            print(f"angle vs fp32 {k}: mean {v['mean_deg']:.3f} deg, p99 {v['p99_deg']:.3f}, max {v['max_deg']:.3f}")
    for k, v in bench.results["flops"].items() if "flops" in bench.results else ():
        pf = v["per_frame"]
        print(f"flops/frame {k}: " + ", ".join(f"{s} {pf[s] / 1e12:.2f} T" for s in pf)
              + (f"; floor {v['floor_ms_per_frame']:.1f} ms/frame" if "floor_ms_per_frame" in v else ""))
    if bench.results["errors"]:
        print("errors:", json.dumps(bench.results["errors"], indent=1))
    return 1 if bench.results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
