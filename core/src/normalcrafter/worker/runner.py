"""The engine behind the worker: estimate jobs through the shared job layer
(``normalcrafter.job``) with one model cache for the whole process, and
model downloads."""
from __future__ import annotations

import dataclasses
import gc
import traceback
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import errors
from ..errors import NormalCrafterError
from ..job import EstimateSettings, PipelineCache, run_estimate
from .download import DownloadRequest, download_model
from .system import describe_system

OnEvent = Callable[[dict], None]


@dataclass
class EstimateRequest:
    input: str
    output_dir: str
    settings: EstimateSettings


def _bad(message: str) -> NormalCrafterError:
    return NormalCrafterError(errors.BAD_REQUEST, message)


def _json_types(hint) -> tuple[type, ...]:
    """The JSON value types a settings field accepts, from its annotation."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _json_types(arg))
    if hint is type(None):
        return (type(None),)
    if typing.get_origin(hint) is tuple:
        return (list,)
    return (hint,)


_SETTING_TYPES = {name: _json_types(hint) for name, hint in typing.get_type_hints(EstimateSettings).items()}


def _check_types(body: dict) -> None:
    for name, value in body.items():
        allowed = _SETTING_TYPES.get(name)
        if allowed is None:
            continue  # EstimateSettings.from_dict names unknown settings
        # JSON true is no integer here, and 3 is no boolean.
        ok = any(isinstance(value, t) and (t is bool or not isinstance(value, bool)) for t in allowed)
        if not ok:
            names = " or ".join("null" if t is type(None) else "list" if t is list else t.__name__ for t in allowed)
            raise _bad(f'"{name}" must be {names}, not {_json_name(value)}')


def _json_name(value) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _check_device(device: str) -> None:
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise _bad(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (dev.index or 0) >= count:
            raise _bad(f"device {device} is not available to this worker (it sees {count} CUDA device(s))")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise _bad("device mps is not available to this worker")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise _bad(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")


def parse_estimate(body: dict) -> EstimateRequest:
    body = dict(body)
    paths = {}
    for key in ("input", "output_dir"):
        value = body.pop(key, None)
        if not isinstance(value, str) or not value:
            raise _bad(f'an estimate request needs "{key}", a non-empty path string')
        paths[key] = value
    _check_types(body)
    frames = body.get("frames")
    if frames is not None and not (
        len(frames) == 2 and type(frames[0]) is int and (frames[1] is None or type(frames[1]) is int)
    ):
        raise _bad(f'"frames" must be [start, end] with whole numbers (end may be null), not {frames!r}')
    settings = EstimateSettings.from_dict(body)
    _check_device(settings.device)
    return EstimateRequest(paths["input"], paths["output_dir"], settings)


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _memory_suggestion(params: object) -> str | None:
    if not isinstance(params, EstimateRequest):
        return None
    s = params.settings
    tips = []
    if s.max_res == 0 or s.max_res > 256:
        now, target = ("no limit", 512) if s.max_res == 0 else (s.max_res, max(256, s.max_res // 2))
        tips.append(f"lower the max resolution (now {now}; try {target})")
    if s.decode_chunk > 1:
        tips.append(f"lower the decode chunk (now {s.decode_chunk}; try {max(1, s.decode_chunk // 2)})")
    if s.window > 8:
        tips.append(f"lower the window (now {s.window}) with a smaller stride")
    if s.dtype == "fp32":
        tips.append("use fp16 precision")
    return "; ".join(tips) if tips else "close other programs that use the GPU"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def free_memory(exc: BaseException) -> None:
    """Drop the failed job's tensors (held by the traceback's frames) and hand
    cached blocks back, so the next job starts with the GPU memory it had."""
    if exc.__traceback__ is not None:
        traceback.clear_frames(exc.__traceback__)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class CoreRunner:
    """Runs worker jobs; the model cache lives as long as the process."""

    def __init__(self) -> None:
        self.pipelines = PipelineCache()

    def validate(self, kind: str, body: dict) -> object:
        if kind == "estimate":
            return parse_estimate(body)
        return DownloadRequest.from_body(body)

    def run(self, kind: str, params: object, on_event: OnEvent, should_cancel: Callable[[], bool]) -> dict:
        if isinstance(params, EstimateRequest):
            return run_estimate(params.input, params.output_dir, params.settings, pipelines=self.pipelines,
                                on_event=on_event, should_cancel=should_cancel)
        return download_model(params, on_event, should_cancel)

    def failure(self, exc: Exception, kind: str, params: object) -> tuple[str, str, str | None]:
        if isinstance(exc, NormalCrafterError) and exc.code != errors.OUT_OF_MEMORY:
            return exc.code, exc.message, None
        if isinstance(exc, NormalCrafterError) or _is_out_of_memory(exc):
            message = exc.message if isinstance(exc, NormalCrafterError) else f"out of memory: {_first_line(exc)}"
            free_memory(exc)
            return errors.OUT_OF_MEMORY, message, _memory_suggestion(params)
        return errors.INTERNAL, f"internal error in the {kind} job: {type(exc).__name__}: {_first_line(exc)}", None

    def status(self) -> dict:
        return {"model_loads": self.pipelines.loads}

    def system(self) -> dict:
        return {**describe_system(), "estimate_defaults": dataclasses.asdict(EstimateSettings())}
