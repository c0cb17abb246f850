"""One job: one input to one output folder, with events, cancel and resume.

This is the layer the CLI, the worker and the farm share. It owns the
guarantees: outputs appear atomically, finished frames are kept, a re-run
with the same input and settings skips what is done (and produces identical
frames), and different settings never mix into one folder.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__, errors
from .convention import canonical, convert
from .errors import Cancelled, NormalCrafterError
from .io.atomic import atomic_write_bytes, remove_stale_temps
from .io.readers import FrameSource, open_source
from .io.writers import FORMATS, NpyWriter, exr_header, frame_path, write_exr, write_png16
from .model.loading import default_model
from .overlap import BackgroundWriter
from .world_space import load_camera_rotations, to_world

MANIFEST = "normalcrafter_job.json"
Event = dict
OnEvent = Callable[[Event], None]


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no frame number


@dataclass
class EstimateSettings:
    model: str | None = None  # None: the default model
    device: str = "auto"
    dtype: str = "auto"
    window: int = 14
    stride: int = 10
    decode_chunk: int = 7
    max_res: int = 1024
    frames: tuple[int, int | None] | None = None
    # Frames of context around ``frames``: a chunk of the whole input that
    # matches one sequential run (chunks.py); chunks of one job share a folder.
    context: int = 0
    format: str = "exr"
    renormalize: bool = False
    convention: str = "opengl"
    model_convention: str | None = None  # override the model's recorded convention
    camera_rotations: str | None = None  # JSON of per-frame camera-to-world rotations
    preview: bool = False
    # torch.compile of the model's blocks: how it runs, not what it computes
    # (results differ by rounding only, so a resume may switch it).
    compile: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> "EstimateSettings":
        """Build from a JSON-like dict (worker requests); unknown keys are refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise NormalCrafterError(errors.BAD_REQUEST, f"unknown setting(s): {', '.join(unknown)}")
        data = dict(data)
        if data.get("frames") is not None:
            fr = data["frames"]
            pair = isinstance(fr, (list, tuple)) and len(fr) == 2
            if not (pair and _whole(fr[0]) and (fr[1] is None or _whole(fr[1]))):
                raise NormalCrafterError(errors.BAD_REQUEST, "frames must be [start, end], whole numbers (end may be null)")
            data["frames"] = (fr[0], fr[1])
        s = cls(**data)
        s.validate()
        return s

    def validate(self) -> None:
        def bad(msg: str) -> NormalCrafterError:
            return NormalCrafterError(errors.BAD_REQUEST, msg)

        for name in ("window", "stride", "decode_chunk", "max_res", "context"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise bad(f"{name} must be an integer")
        if self.window < 1 or not 1 <= self.stride <= self.window:
            raise bad(f"need 1 <= stride <= window (got window {self.window}, stride {self.stride})")
        if self.decode_chunk < 1:
            raise bad("decode chunk must be at least 1")
        if self.max_res < 0:
            raise bad("max resolution must be 0 (no limit) or positive")
        if self.context < 0:
            raise bad("context must be 0 or more frames")
        if self.context and (self.format == "npy" or self.preview):
            raise bad("a chunk (context > 0) writes exr or png frames, without a preview")
        if self.frames is not None:
            start, end = self.frames
            if start < 0 or (end is not None and end <= start):
                raise bad(f"frames {start}:{end}: need 0 <= start < end")
        for name in ("renormalize", "preview", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise bad(f"{name} must be true or false")
        if self.format not in FORMATS:
            raise bad(f"format must be one of {', '.join(FORMATS)}")
        if self.dtype not in ("auto", "fp32", "fp16", "bf16"):
            raise bad("dtype must be auto, fp32, fp16 or bf16")
        for name in ("convention", "model_convention"):
            value = getattr(self, name)
            if value is not None:
                try:
                    canonical(value)
                except ValueError as exc:
                    raise bad(str(exc)) from None

    def identity(self, model: str) -> dict:
        """The settings that change output values: a resume must match them."""
        return {
            "model": model,
            "dtype": self.dtype,
            "window": self.window,
            "stride": self.stride,
            "decode_chunk": self.decode_chunk,
            "max_res": self.max_res,
            # Chunks of one job differ only in their frames and share the folder.
            "frames": list(self.frames) if self.frames and not self.context else None,
            **({"context": self.context} if self.context else {}),
            "format": self.format,
            "renormalize": self.renormalize,
            "convention": canonical(self.convention),
            "model_convention": self.model_convention,
            "camera_rotations": self.camera_rotations,
        }


class PipelineCache:
    """Keeps the last loaded pipeline so queued jobs with the same model,
    device and precision never reload it."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._pipe = None
        self.loads = 0

    def get(self, model: str, device: str, dtype: str, on_event: OnEvent | None = None, compile: bool = False):
        from .accel import Speed
        from .pipeline import NormalCrafterPipeline, resolve_device, resolve_dtype

        dev = resolve_device(device)
        key = (model, str(dev), str(resolve_dtype(dtype, dev)), compile)
        if key == self._key:
            return self._pipe, True
        self.clear()
        if on_event:
            on_event({"type": "stage", "stage": "loading_model", "message": f"loading model {model} on {dev}"})
        self._pipe = NormalCrafterPipeline.from_pretrained(model, device=str(dev), dtype=dtype,
                                                           speed=Speed(compile=compile))
        self._key = key
        self.loads += 1
        return self._pipe, False

    def clear(self) -> None:
        self._pipe, self._key = None, None
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _input_identity(src: FrameSource) -> dict:
    # A sequence is its files: a re-rendered plate must not resume into frames
    # estimated from the old one.
    stats = [f.stat() for f in src.files if f.exists()]
    return {
        "path": str(src.path.resolve()),
        "kind": src.kind,
        "bytes": sum(st.st_size for st in stats) if stats else None,
        "mtime_ns": max(st.st_mtime_ns for st in stats) if stats else None,
        "frames": [src.numbers[0], src.numbers[-1], len(src.numbers)],
        "size": list(src.source_size),
    }


def _prepare_output(folder: Path, src: FrameSource, identity: dict, shared: bool = False) -> dict | None:
    """Create the folder, prove it writable, and check or write the manifest.
    Returns the existing manifest when resuming."""
    if src.kind == "sequence" and folder.resolve() == (src.path if src.path.is_dir() else src.path.parent).resolve():
        raise NormalCrafterError(
            errors.OUTPUT_CONFLICT, f"{folder}: the output folder is the input sequence's folder; choose another"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A fresh, unnamed file: a planted symlink cannot redirect the probe.
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise NormalCrafterError(
            errors.OUTPUT_NOT_WRITABLE, f"{folder}: output folder is not writable ({exc.strerror or exc})"
        ) from None
    if not shared:  # other chunks' writers may be mid-write in a shared folder
        remove_stale_temps(folder)
    manifest_path = folder / MANIFEST
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            old = None
        if not old or old.get("input") != identity["input"] or old.get("settings") != identity["settings"]:
            if not any(folder.glob("normal.*")) and not (folder / "normals.npy").exists():
                # The earlier job failed before its first frame (e.g. a missing
                # model): nothing could mix, so the folder is taken over.
                atomic_write_bytes(manifest_path, (json.dumps(identity, indent=2) + "\n").encode())
                return None
            diff = _describe_difference(old or {}, identity)
            raise NormalCrafterError(
                errors.OUTPUT_CONFLICT,
                f"{folder} holds frames of another job ({diff}); use another output folder or empty this one",
            )
        return old
    if any(folder.glob("normal.*")) or (folder / "normals.npy").exists():
        # Every job writes its manifest before its first frame, so these frames
        # are of unknown origin: counting them as done could mix two jobs.
        raise NormalCrafterError(
            errors.OUTPUT_CONFLICT,
            f"{folder} holds normal frames but no {MANIFEST}; use another output folder or empty this one",
        )
    try:
        atomic_write_bytes(manifest_path, (json.dumps(identity, indent=2) + "\n").encode())
    except OSError as exc:  # a disk that fills up after the probe
        raise NormalCrafterError(
            errors.OUTPUT_NOT_WRITABLE, f"{folder}: cannot write output ({exc.strerror or exc})"
        ) from None
    return None


def _describe_difference(old: dict, new: dict) -> str:
    if old.get("input", {}).get("path") != new["input"]["path"]:
        return f"input {old.get('input', {}).get('path')}"
    if old.get("input") != new["input"]:
        return "the input file changed"
    o, n = old.get("settings", {}), new["settings"]
    keys = [k for k in n if o.get(k) != n[k]]
    return ", ".join(f"{k} {o.get(k)!r} vs {n[k]!r}" for k in keys[:3]) or "unreadable manifest"


def writer_processes(device_type: str) -> int:
    """Processes that write frame files beside a GPU run; 0 writes them in
    the calling thread. OpenEXR's Python binding holds the GIL for a whole
    write (~100 ms at 1024x576), which in this process would starve the
    thread that feeds the GPU; on the CPU the writes are a small share of
    the time and the cores are busy computing."""
    if device_type != "cuda":
        return 0
    return max(1, min(12, (os.cpu_count() or 2) - 4))


def run_estimate(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    settings: EstimateSettings,
    pipelines: PipelineCache | None = None,
    on_event: OnEvent | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> dict:
    """Estimate normals for one input into one folder; see docs/ARCHITECTURE.md."""
    emit = on_event or (lambda ev: None)
    cancelled = should_cancel or (lambda: False)
    settings.validate()
    pipelines = pipelines or PipelineCache()
    model = settings.model or default_model()
    folder = Path(output_dir).expanduser()
    t_start = time.perf_counter()

    emit({"type": "stage", "stage": "reading", "message": f"opening {input_path}"})
    if settings.context:
        from .chunks import open_chunk

        src = open_chunk(input_path, settings.frames, settings.context, settings.max_res,
                         settings.window, settings.stride, settings.decode_chunk)
    else:
        src = open_source(input_path, settings.frames, settings.max_res)
    for note in src.notes:
        emit({"type": "warning", "message": note})
    if src.downscaled:
        emit({
            "type": "warning",
            "message": f"frames downscaled from {src.source_size[1]}x{src.source_size[0]} to "
            f"{src.size[1]}x{src.size[0]} (max resolution {settings.max_res})",
        })
    rotations = None
    if settings.camera_rotations:
        rotations = load_camera_rotations(settings.camera_rotations)
        missing = [n for n in src.numbers if n not in rotations]
        if missing:
            raise NormalCrafterError(
                errors.BAD_REQUEST, f"{settings.camera_rotations}: no camera rotation for frame {missing[0]}"
            )
    whole = src.whole if settings.context else src
    identity = {"version": 1, "input": _input_identity(whole), "settings": settings.identity(model)}
    resumed = _prepare_output(folder, src, identity, shared=bool(settings.context)) is not None
    fmt = settings.format
    done = {i for i, n in enumerate(src.numbers) if fmt != "npy" and frame_path(folder, n, fmt).exists()}
    npy_final = folder / "normals.npy"
    if fmt == "npy" and npy_final.exists():
        done = set(range(len(src)))
    if len(done) == len(src):
        emit({"type": "stage", "stage": "done", "message": "all frames already written"})
        return _result(folder, src, [], 0, len(done), settings, model, None, t_start, pipelines)

    pipe, cached = pipelines.get(model, settings.device, settings.dtype, emit, compile=settings.compile)
    pipe.times = type(pipe.times)()
    model_conv = settings.model_convention or pipe.convention
    out_conv = canonical(settings.convention)
    if not pipe.components.info.convention_verified and not settings.model_convention:
        emit({"type": "warning", "message": f"the axis convention of {model} is unverified; assuming {model_conv}"})
    hdr_settings = {k: v for k, v in identity["settings"].items() if k != "model"}
    emit({
        "type": "stage", "stage": "estimating",
        "message": f"{len(src) - len(done)} of {len(src)} frames at {src.size[1]}x{src.size[0]}"
        + (" (resuming)" if resumed else "") + (" (model already loaded)" if cached else "")
        + (" (compiling first: minutes per new resolution)" if settings.compile else ""),
    })
    files: list[str] = []
    t0 = time.perf_counter()
    written = 0
    todo = len(src) - len(done)
    npy = None
    writer = None

    def finished(number: int | None, path: Path | None) -> None:
        # In frame order, once the frame is on disk under its final name.
        nonlocal written
        if path is not None:
            files.append(str(path))
            emit({"type": "file", "frame": number, "path": str(path)})
        written += 1
        elapsed = time.perf_counter() - t0
        fps = written / elapsed if elapsed > 0 else 0.0
        emit({
            "type": "progress", "done": written, "total": todo, "fps": round(fps, 3),
            "eta_s": round((todo - written) / fps, 1) if fps > 0 else None,
        })

    def write(fn: Callable, number: int, *args) -> None:
        if writer is None:
            finished(number, fn(*args))
        else:
            writer.submit(fn, *args, then=lambda path: finished(number, path))

    try:
        if fmt == "npy":
            npy = NpyWriter(npy_final, len(src), *src.size)
        elif (processes := writer_processes(pipe.device.type)):
            writer = BackgroundWriter(workers=processes, processes=True)
        produced = src.stream(pipe, cancelled, done.__contains__) if settings.context else pipe.stream(
            iter(src), len(src), settings.window, settings.stride, settings.decode_chunk,
            should_stop=cancelled, skip=done.__contains__,
        )
        for i, raw in produced:
            if cancelled():
                raise Cancelled()
            if npy is not None:
                npy.put(i, raw)
            if i in done:
                continue
            number = src.numbers[i]
            normals = convert(raw, model_conv, out_conv)
            if settings.renormalize:
                normals = normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-6)
            if fmt == "exr":
                world = None
                if rotations is not None:
                    world = to_world(convert(normals, out_conv, "RUB"), rotations[number])
                write(write_exr, number, frame_path(folder, number, fmt), normals,
                      exr_header(out_conv, model, hdr_settings, number), world)
            elif fmt == "png":
                write(write_png16, number, frame_path(folder, number, fmt), normals)
            else:
                finished(number, None)
        if writer is not None:
            writer.close()
            writer = None
        if cancelled():
            raise Cancelled()
        if npy is not None:
            files.append(str(npy.finish()))
            npy = None
    except OSError as exc:
        raise NormalCrafterError(
            errors.OUTPUT_NOT_WRITABLE, f"{folder}: cannot write output ({exc.strerror or exc})"
        ) from None
    except ValueError as exc:
        raise NormalCrafterError(errors.INPUT_INVALID, f"{input_path}: {exc}") from None
    except (RuntimeError, MemoryError) as exc:
        # CUDA says "out of memory", the CPU allocator "not enough memory".
        if isinstance(exc, MemoryError) or any(w in str(exc).lower() for w in ("out of memory", "not enough memory")):
            pipelines.clear()
            raise NormalCrafterError(
                errors.OUT_OF_MEMORY,
                f"out of memory at {src.size[1]}x{src.size[0]}: lower --max-res (e.g. 512) or --decode-chunk (e.g. 2)",
            ) from None
        raise
    finally:
        if writer is not None:  # frames being written finish; queued ones are dropped
            writer.abort()
        if npy is not None:
            npy.abort()
    if settings.preview and fmt != "npy":
        from .io.preview import write_preview

        files.append(str(write_preview(src, folder, fmt, fps=src.fps or 24.0)))
    emit({"type": "stage", "stage": "done", "message": f"wrote {len(files)} files to {folder}"})
    return _result(folder, src, files, written, len(done), settings, model, pipe, t_start, pipelines)


def _result(folder, src, files, written, skipped, settings, model, pipe, t_start, pipelines) -> dict:
    return {
        "output_dir": str(folder),
        "frames": written,
        "skipped": skipped,
        "files": files,
        "frame_numbers": [src.numbers[0], src.numbers[-1]],
        "model": model,
        "convention": canonical(settings.convention),
        "timings": {"total_s": round(time.perf_counter() - t_start, 3),
                    **({k: round(v, 3) for k, v in pipe.times.as_dict().items()} if pipe else {})},
        "model_loads": pipelines.loads,
        "version": __version__,
    }
