"""Training configuration: a TOML (or JSON) file read into dataclasses.

Unknown keys are refused, so a typo never silently falls back to a default.
See ``configs/compact.toml`` for the recipe that trained the bundled model
and docs/training.md for every key.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import errors
from ..errors import NormalCrafterError

STAGE_KINDS = ("vae_pretrain", "vae_decoder", "stage1", "stage2")


@dataclass
class ModelConfig:
    # "random:<size>" (a preset of model/build.py) or a model folder.
    init: str = "random:compact"


@dataclass
class DataConfig:
    # "synthetic" (rendered on the fly) or a folder of clips (docs/training.md).
    source: str = "synthetic"
    height: int = 256
    width: int = 256


@dataclass
class SemanticConfig:
    # "efficientnet-lite0", "dinov2:<model folder or hub id>" or "none".
    encoder: str = "efficientnet-lite0"
    hidden: int = 256


@dataclass
class StageConfig:
    name: str
    kind: str
    steps: int
    lr: float
    batch_clips: int = 4
    frames: tuple[int, int] = (1, 14)
    warmup_steps: int = 100
    # Exponential decay after warm-up: the rate is multiplied by this every 1000 steps.
    decay_per_1k: float = 0.5
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    sfr_weight: float = 1.0
    p_sigma_max: float = 0.5
    kl_weight: float = 1e-6
    checkpoint_every: int = 500
    log_every: int = 10
    # Ends the stage early (after a checkpoint) once this many seconds have passed.
    time_limit_s: float | None = None


@dataclass
class TrainConfig:
    name: str
    output_dir: str
    stages: list[StageConfig]
    seed: int = 0
    device: str = "auto"
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _bad(message: str) -> NormalCrafterError:
    return NormalCrafterError(errors.INPUT_INVALID, f"training config: {message}")


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise _bad(f"{where} must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise _bad(f"unknown key {where}.{unknown[0]} (known: {', '.join(known)})")
    try:
        return cls(**data)
    except TypeError as exc:
        raise _bad(f"{where}: {exc}") from None


def parse_config(data: dict[str, Any]) -> TrainConfig:
    """Validate a decoded config document."""
    data = dict(data)
    stages_raw = data.pop("stage", None)
    if not stages_raw or not isinstance(stages_raw, list):
        raise _bad("needs at least one [[stage]] table")
    sub = {"model": ModelConfig, "data": DataConfig, "semantic": SemanticConfig}
    for key, cls in sub.items():
        if key in data:
            data[key] = _build(cls, data[key], key)
    stages = []
    for i, raw in enumerate(stages_raw):
        stage = _build(StageConfig, raw, f"stage[{i}]")
        stage.frames = tuple(stage.frames)  # type: ignore[assignment]
        _check_stage(stage, i)
        stages.append(stage)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise _bad("stage names must be unique")
    cfg = _build(TrainConfig, {**data, "stages": stages}, "config")
    if cfg.mixed_precision not in ("auto", "bf16", "fp16", "no"):
        raise _bad(f"mixed_precision must be auto, bf16, fp16 or no, not {cfg.mixed_precision!r}")
    if cfg.data.height % 64 or cfg.data.width % 64 or cfg.data.height < 64 or cfg.data.width < 64:
        raise _bad("data.height and data.width must be positive multiples of 64")
    return cfg


def _check_stage(s: StageConfig, i: int) -> None:
    where = f"stage[{i}] ({s.name})"
    if s.kind not in STAGE_KINDS:
        raise _bad(f"{where}: kind must be one of {', '.join(STAGE_KINDS)}, not {s.kind!r}")
    if s.steps < 1 or s.batch_clips < 1 or s.lr <= 0:
        raise _bad(f"{where}: steps, batch_clips and lr must be positive")
    if len(s.frames) != 2 or not 1 <= s.frames[0] <= s.frames[1]:
        raise _bad(f"{where}: frames must be [min, max] with 1 <= min <= max")
    if s.checkpoint_every < 1 or s.log_every < 1:
        raise _bad(f"{where}: checkpoint_every and log_every must be at least 1")


def load_config(path: str | Path) -> TrainConfig:
    """Read a .toml or .json training config."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise NormalCrafterError(errors.INPUT_UNREADABLE, f"cannot read training config {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise _bad(f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}") from None
    return parse_config(data)
