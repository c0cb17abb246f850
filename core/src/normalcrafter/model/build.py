"""Random-weight NormalCrafter models of the published classes and layout.

Used by the tests (tiny), the benchmark (full size: speed does not depend on
the weight values) and training (initialisation of the small model). Saved
models go through the same loading code as a downloaded one.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

SIZES = {
    # Channel counts are multiples of 32 and the VAE has 4 levels, so the
    # spatial factor stays 8 and GroupNorm(32) works, as in the real model.
    "tiny": dict(
        unet_channels=(32, 64, 64, 64), unet_heads=(1, 2, 2, 2), layers_per_block=1, cross_dim=32,
        time_embed=8, vae_channels=(32, 32, 64, 64), clip_hidden=32, clip_layers=2, clip_heads=2, clip_inter=37,
    ),
    "small": dict(
        unet_channels=(64, 128, 192, 256), unet_heads=(2, 4, 6, 8), layers_per_block=1, cross_dim=64,
        time_embed=32, vae_channels=(32, 64, 128, 128), clip_hidden=64, clip_layers=2, clip_heads=4, clip_inter=128,
    ),
    # The project's bundled trained model: about 10.8 M parameters, 21 MB in fp16.
    "compact": dict(
        unet_channels=(32, 64, 96, 128), unet_heads=(1, 2, 3, 4), layers_per_block=1, cross_dim=64,
        time_embed=32, vae_channels=(32, 64, 96, 96), clip_hidden=64, clip_layers=2, clip_heads=4, clip_inter=128,
    ),
    # SVD-xt as published (UNet 1.52 B, VAE 97.7 M, CLIP ViT-H/14).
    "full": dict(
        unet_channels=(320, 640, 1280, 1280), unet_heads=(5, 10, 20, 20), layers_per_block=2, cross_dim=1024,
        time_embed=256, vae_channels=(128, 256, 512, 512), clip_hidden=1280, clip_layers=32, clip_heads=16,
        clip_inter=5120,
    ),
}

SCHEDULER_CONFIG = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "final_sigmas_type": "zero", "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "rescale_betas_zero_snr": False, "set_alpha_to_one": False,
    "sigma_max": 700.0, "sigma_min": 0.002, "skip_prk_steps": True, "steps_offset": 1,
    "timestep_spacing": "leading", "timestep_type": "continuous", "trained_betas": None,
    "use_beta_sigmas": False, "use_exponential_sigmas": False, "use_karras_sigmas": True,
}

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_components(size: str = "tiny", seed: int = 0):
    """Random-initialised (unet, vae, image_encoder, feature_extractor, scheduler)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from .unet import NormalCrafterUNet

    s = SIZES[size]
    torch.manual_seed(seed)
    n_up = len(s["unet_channels"])
    unet = NormalCrafterUNet(
        in_channels=8,
        out_channels=4,
        block_out_channels=s["unet_channels"],
        down_block_types=("CrossAttnDownBlockSpatioTemporal",) * (n_up - 1) + ("DownBlockSpatioTemporal",),
        up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (n_up - 1),
        layers_per_block=s["layers_per_block"],
        num_attention_heads=s["unet_heads"],
        cross_attention_dim=s["cross_dim"],
        addition_time_embed_dim=s["time_embed"],
        projection_class_embeddings_input_dim=3 * s["time_embed"],
        num_frames=25 if size == "full" else 14,
    )
    vae = AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=s["vae_channels"],
        layers_per_block=2 if size == "full" else 1,
        latent_channels=4,
        scaling_factor=0.18215,
        force_upcast=True,
    )
    clip_cfg = CLIPVisionConfig(
        hidden_size=s["clip_hidden"],
        intermediate_size=s["clip_inter"],
        num_hidden_layers=s["clip_layers"],
        num_attention_heads=s["clip_heads"],
        image_size=224,
        patch_size=14 if size == "full" else 32,
        projection_dim=s["cross_dim"],
        hidden_act="gelu",
    )
    image_encoder = CLIPVisionModelWithProjection(clip_cfg)
    feature_extractor = CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
        image_mean=CLIP_MEAN, image_std=CLIP_STD, do_center_crop=True, resample=3,
    )
    scheduler = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    return unet, vae, image_encoder, feature_extractor, scheduler


def save_model(path: str | Path, unet, vae, image_encoder, feature_extractor, scheduler,
               info: dict | None = None, fp16: bool = True) -> Path:
    """Write the combined diffusers folder layout (``model_index.json`` and five
    subfolders), weights as safetensors."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    for name, module in (("unet", unet), ("vae", vae), ("image_encoder", image_encoder)):
        module.to(dtype).save_pretrained(path / name, safe_serialization=True)
    feature_extractor.save_pretrained(path / "feature_extractor")
    scheduler.save_pretrained(path / "scheduler")
    index = {
        "_class_name": "StableVideoDiffusionPipeline",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
        "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    if info is not None:
        (path / "normalcrafter_model.json").write_text(json.dumps(info, indent=2) + "\n")
    return path


def build_random_model(path: str | Path, size: str = "tiny", seed: int = 0, fp16: bool = True) -> Path:
    comps = build_components(size, seed)
    info = {"name": f"random-{size}", "convention": "opengl", "trained": False, "seed": seed}
    return save_model(path, *comps, info=info, fp16=fp16)
