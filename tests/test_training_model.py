"""The bundled model: trained by this project's training code, loaded by the
normal loading path as the default, and useful on a synthetic clip with
known normals (tests/data/synthetic_clip, written by `normalcrafter train
--write-synthetic ... --seed 7`, never seen in training).

Measured when the model was bundled (CPU, fp32): mean angular error 29.0
degrees against 53.6 for the constant normal (0, 0, 1) facing the camera
(51.0 for the best constant, the clip's mean normal).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from normalcrafter import convention
from normalcrafter.evaluation.metrics import angular_error
from normalcrafter.model.loading import bundled_model_dir
from normalcrafter.pipeline import NormalCrafterPipeline
from normalcrafter.training.dataset import ClipFolder

CLIP = Path(__file__).parent / "data" / "synthetic_clip"


def test_bundled_model_is_small_fp16_and_documented():
    folder = bundled_model_dir()
    weights = list(folder.rglob("*.safetensors"))
    assert len(weights) == 3 and sum(p.stat().st_size for p in weights) <= 30_000_000
    info = json.loads((folder / "normalcrafter_model.json").read_text())
    assert info["trained"] is True and info["convention"] == "opengl" and info["encoder"] == "efficientnet-lite0"
    for sub in ("unet", "vae"):
        cfg = json.loads((folder / sub / "config.json").read_text())
        assert cfg.get("_class_name") in ("UNetSpatioTemporalConditionModel", "NormalCrafterUNet",
                                          "AutoencoderKLTemporalDecoder")
    assert (folder / "MODEL_CARD.md").is_file()


def test_default_model_beats_a_constant_normal_on_a_synthetic_clip(monkeypatch):
    monkeypatch.delenv("NORMALCRAFTER_MODEL", raising=False)
    pipe = NormalCrafterPipeline.from_pretrained(None, device="cpu", dtype="fp32")
    assert Path(pipe.components.info.source) == bundled_model_dir()
    assert pipe.components.info.extra["trained"] is True
    clip = ClipFolder(CLIP)
    rgb, gt = clip.load(0, len(clip))
    pred = convention.convert(pipe(rgb), pipe.convention, "RUB")
    model_err = float(angular_error(pred, gt).mean())
    constant_err = float(angular_error(np.broadcast_to(np.float32([0, 0, 1]), gt.shape), gt).mean())
    assert constant_err == pytest.approx(53.6, abs=0.1)  # the clip itself is unchanged
    assert model_err < 33.0 and model_err < constant_err - 20.0
