"""Find and load the five NormalCrafter components through diffusers' and
transformers' own ``from_pretrained``.

Sources:
* a local folder in the combined diffusers layout (``model_index.json`` plus
  ``unet/ vae/ image_encoder/ feature_extractor/ scheduler/``);
* the published weights on the model hub: ``unet`` and ``vae`` from
  ``Yanrui95/NormalCrafter``, the rest from SVD-xt (gated: accept its licence
  and log in); the standard hub cache and ``HF_HUB_OFFLINE`` apply;
* any other hub repository in the combined layout.

Only safetensors weights are read and no model code is ever executed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import errors
from ..errors import NormalCrafterError

PUBLISHED_UNET_REPO = "Yanrui95/NormalCrafter"
SVD_REPO = "stabilityai/stable-video-diffusion-img2vid-xt"
SUBFOLDERS = ("unet", "vae", "image_encoder", "feature_extractor", "scheduler")
WEIGHTED = ("unet", "vae", "image_encoder")
MODEL_INFO_FILE = "normalcrafter_model.json"

# Per-model facts kept as data. The published model's axis convention has not
# been confirmed against its weights (see docs/conventions.md): it is a
# setting, overridable with --model-convention, never a hidden sign flip.
KNOWN_MODELS: dict[str, dict] = {
    PUBLISHED_UNET_REPO: {"convention": "opengl", "convention_verified": False},
}


def bundled_model_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "model"


def default_model() -> str:
    """The model used when none is configured: $NORMALCRAFTER_MODEL, else the
    small model shipped with the package."""
    return os.environ.get("NORMALCRAFTER_MODEL") or str(bundled_model_dir())


@dataclass
class ModelInfo:
    source: str
    convention: str = "opengl"
    convention_verified: bool = True
    extra: dict = field(default_factory=dict)


@dataclass
class Components:
    unet: torch.nn.Module
    vae: torch.nn.Module
    image_encoder: torch.nn.Module
    feature_extractor: object
    scheduler: object
    info: ModelInfo


def _check_local_folder(path: Path) -> None:
    missing = [name for name in ("model_index.json",) if not (path / name).is_file()]
    missing += [f"{sub}/" for sub in SUBFOLDERS if not (path / sub).is_dir()]
    for sub in SUBFOLDERS:
        if (path / sub).is_dir() and not any((path / sub).glob("*.json")):
            missing.append(f"{sub}/ config")
    for sub in WEIGHTED:
        folder = path / sub
        if not folder.is_dir():
            continue
        if not any(folder.glob("*.safetensors")):
            pickled = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
            if pickled:
                raise NormalCrafterError(
                    errors.MODEL_INVALID,
                    f"model folder {path}: {sub}/{pickled[0]} is a pickle file; only .safetensors weights are "
                    f"loaded (convert it with safetensors first)",
                )
            missing.append(f"{sub}/ weights (.safetensors)")
    if missing:
        raise NormalCrafterError(
            errors.MODEL_MISSING, f"model folder {path} is incomplete: missing {', '.join(missing)}"
        )


def _read_info(source: str, local: Path | None) -> ModelInfo:
    known = KNOWN_MODELS.get(source, {})
    data: dict = {}
    if local is not None and (local / MODEL_INFO_FILE).is_file():
        try:
            data = json.loads((local / MODEL_INFO_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise NormalCrafterError(errors.MODEL_INVALID, f"{local / MODEL_INFO_FILE} is unreadable: {exc}") from None
    merged = {**known, **data}
    return ModelInfo(
        source=source,
        convention=merged.get("convention", "opengl"),
        convention_verified=bool(merged.get("convention_verified", True)),
        extra={k: v for k, v in merged.items() if k not in ("convention", "convention_verified")},
    )


def _locations(source: str) -> tuple[dict[str, str], Path | None]:
    """Where each component comes from: a local folder, the published split
    across two hub repositories, or one combined hub repository."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NormalCrafterError(errors.MODEL_MISSING, f"model path {path} is a file, not a model folder")
        _check_local_folder(path)
        return {sub: str(path) for sub in SUBFOLDERS}, path
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise NormalCrafterError(errors.MODEL_MISSING, f"model folder {source} does not exist (and it is no hub id)")
    if source == PUBLISHED_UNET_REPO:
        return {sub: (source if sub in ("unet", "vae") else SVD_REPO) for sub in SUBFOLDERS}, None
    return {sub: source for sub in SUBFOLDERS}, None


def load_components(source: str | None = None, dtype: torch.dtype = torch.float32) -> Components:
    """Load all five components on the CPU in ``dtype`` (the VAE stays fp32 when
    its config asks for upcasting: the encoder needs it)."""
    import diffusers
    import transformers
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    # Their informational chatter (progress bars, dtype notes) is noise in a
    # CLI or a worker log; real failures still raise.
    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()

    from .unet import NormalCrafterUNet

    source = source or default_model()
    where, local = _locations(source)
    from safetensors import SafetensorError

    common = {"use_safetensors": True, "output_loading_info": True}
    try:
        unet, unet_info = NormalCrafterUNet.from_pretrained(where["unet"], subfolder="unet", torch_dtype=dtype,
                                                            **common)
        vae, vae_info = AutoencoderKLTemporalDecoder.from_pretrained(where["vae"], subfolder="vae", torch_dtype=dtype,
                                                                     **common)
        image_encoder, encoder_info = CLIPVisionModelWithProjection.from_pretrained(
            where["image_encoder"], subfolder="image_encoder", dtype=dtype, **common
        )
        feature_extractor = CLIPImageProcessor.from_pretrained(where["feature_extractor"], subfolder="feature_extractor")
        scheduler = EulerDiscreteScheduler.from_pretrained(where["scheduler"], subfolder="scheduler")
    except NormalCrafterError:
        raise
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if local is not None:  # every file is there (checked above), so it is damaged
            raise NormalCrafterError(errors.MODEL_INVALID, f"model folder {source} is corrupt: {first}") from None
        hint = " (download it first with `normalcrafter download`, or check HF_HUB_OFFLINE and your login)"
        raise NormalCrafterError(errors.MODEL_MISSING, f"cannot load model {source}: {first}{hint}") from None
    except (ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NormalCrafterError(errors.MODEL_INVALID, f"model {source} is corrupt or not a NormalCrafter model: {first}") from None
    for name, info in (("unet", unet_info), ("vae", vae_info), ("image_encoder", encoder_info)):
        # The libraries fill weights a checkpoint lacks with random values and
        # only log it: a model with holes would estimate garbage.
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise NormalCrafterError(
                errors.MODEL_INVALID,
                f"model {source}: {name} weights are incomplete ({len(missing)} missing, e.g. {missing[0]})",
            )
    if unet.config.in_channels != 2 * vae.config.latent_channels:
        raise NormalCrafterError(
            errors.MODEL_INVALID,
            f"model {source}: unet has {unet.config.in_channels} input channels, expected "
            f"{2 * vae.config.latent_channels} (normal latent + RGB latent)",
        )
    for module in (unet, vae, image_encoder):
        module.eval().requires_grad_(False)
    return Components(unet, vae, image_encoder, feature_extractor, scheduler, _read_info(source, local))
