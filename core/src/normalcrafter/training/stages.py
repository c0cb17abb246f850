"""The losses of each training stage, as modules (so that DDP wraps them).

Conditioning mirrors inference (pipeline.py) exactly: per-frame CLIP image
embeddings and unscaled posterior-mode RGB latents from
``NormalCrafterPipeline.encode_images``, added_time_ids (7, 127, 0). The
normal latents are the VAE's posterior mode of the normal map (an RGB image
in [-1, 1]) times ``scaling_factor``, since inference divides by it before
decoding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..pipeline import ADDED_TIME_IDS, NormalCrafterPipeline
from . import precondition as pc
from .semantic import SemanticEncoder
from .sfr import SFRHead, sfr_loss
from .synthetic import Clips

# Modules of SVD's UNet that mix information across frames; stage 2 freezes them.
TEMPORAL_MODULES = ("temporal_transformer_blocks", "temporal_res_block", "time_mixer", "time_pos_embed")
# Stride of the UNet's Up1 output relative to the image: VAE 8, then one of three downsamplings left.
UP1_STRIDE = 16


def is_temporal(param_name: str) -> bool:
    return any(part in TEMPORAL_MODULES for part in param_name.split("."))


@dataclass
class Batch:
    normal: torch.Tensor  # (B, F, 3, H, W) unit normals, model convention
    emb: torch.Tensor  # (B*F, 1, D)
    rgb_latents: torch.Tensor  # (B, F, 4, h, w), unscaled
    time_ids: torch.Tensor  # (B, 3)
    normal_latents: torch.Tensor | None = None  # (B, F, 4, h, w), scaled
    semantic: torch.Tensor | None = None  # (B*F, C, H/16, W/16)

    @property
    def frames(self) -> int:
        return self.normal.shape[1]


def encode_normals(vae: nn.Module, normal: torch.Tensor) -> torch.Tensor:
    """(B, F, 3, H, W) normals -> (B, F, 4, h, w) scaled posterior-mode latents."""
    moments = vae.quant_conv(vae.encoder(normal.flatten(0, 1).to(vae.dtype)))
    z = moments.chunk(2, dim=1)[0] * vae.config.scaling_factor
    return z.reshape(*normal.shape[:2], *z.shape[1:])


@torch.no_grad()
def condition(
    pipe: NormalCrafterPipeline,
    clips: Clips,
    semantic: SemanticEncoder | None = None,
    with_normal_latents: bool = False,
) -> Batch:
    B, Fr, _, H, W = clips.rgb.shape
    emb, rgb_latents = pipe.encode_images(clips.rgb.flatten(0, 1))
    time_ids = torch.tensor([ADDED_TIME_IDS], dtype=emb.dtype, device=emb.device).expand(B, 3)
    batch = Batch(
        normal=clips.normal,
        emb=emb,
        rgb_latents=rgb_latents.reshape(B, Fr, *rgb_latents.shape[1:]),
        time_ids=time_ids,
    )
    if with_normal_latents:
        batch.normal_latents = encode_normals(pipe.vae, clips.normal)
    if semantic is not None:
        batch.semantic = semantic(clips.rgb.flatten(0, 1), (H // UP1_STRIDE, W // UP1_STRIDE))
    return batch


def angular_error(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel angle in radians between (N, 3, H, W) vector fields, and the
    mask of pixels with ground truth (target length >= 0.5)."""
    valid = target.norm(dim=1) >= 0.5
    cos = (F.normalize(pred.float(), dim=1, eps=1e-6) * F.normalize(target.float(), dim=1, eps=1e-6)).sum(1)
    # acos has an infinite slope at +-1: stay just inside.
    return torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6)), valid


def mean_angular_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    angle, valid = angular_error(pred, target)
    return (angle * valid).sum() / valid.sum().clamp_min(1)


class VAEPretrainLoss(nn.Module):
    """Whole-VAE reconstruction of RGB frames and normal maps. Our addition:
    the paper starts from SVD's pretrained VAE, a small model has none."""

    def __init__(self, vae: nn.Module, kl_weight: float) -> None:
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, rgb: torch.Tensor, normal: torch.Tensor) -> dict[str, torch.Tensor]:
        Fr = rgb.shape[1]
        x = torch.cat([rgb.flatten(0, 1) * 2 - 1, normal.flatten(0, 1)])
        posterior = self.vae.encode(x).latent_dist
        rec = self.vae.decode(posterior.sample(), num_frames=Fr).sample
        l1 = (rec.float() - x.float()).abs().mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        return {"loss": l1 + self.kl_weight * kl, "l1": l1, "kl": kl}


class VAEDecoderLoss(nn.Module):
    """The paper's decoder fine-tuning on normal maps (encoder frozen)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, normal: torch.Tensor) -> dict[str, torch.Tensor]:
        Fr = normal.shape[1]
        with torch.no_grad():
            z = encode_normals(self.vae, normal).flatten(0, 1) / self.vae.config.scaling_factor
        rec = self.vae.decode(z, num_frames=Fr).sample
        target = normal.flatten(0, 1)
        angular = mean_angular_loss(rec, target)
        l1 = (rec.float() - target.float()).abs().mean()
        return {"loss": angular + l1, "angular": angular, "l1": l1}


class _UNetStage(nn.Module):
    def __init__(self, unet: nn.Module, sfr_head: SFRHead | None, sfr_weight: float) -> None:
        super().__init__()
        self.unet, self.sfr_head, self.sfr_weight = unet, sfr_head, sfr_weight

    def _unet(self, batch: Batch, x_scaled: torch.Tensor, sigma: torch.Tensor):
        model_in = torch.cat([x_scaled, batch.rgb_latents.to(x_scaled.dtype)], dim=2)
        return self.unet(
            model_in, pc.c_noise(sigma), encoder_hidden_states=batch.emb, added_time_ids=batch.time_ids,
            return_up_features=True,
        )

    def _sfr(self, up_features: list[torch.Tensor], batch: Batch, losses: dict[str, torch.Tensor]) -> None:
        if self.sfr_head is None or batch.semantic is None:
            return
        losses["sfr"] = sfr_loss(self.sfr_head(up_features[1]), batch.semantic)
        losses["loss"] = losses["loss"] + self.sfr_weight * losses["sfr"]


class Stage1Loss(_UNetStage):
    """Denoising score matching in latent space with EDM weighting, + SFR."""

    def __init__(self, unet: nn.Module, sfr_head: SFRHead | None, sfr_weight: float, p_sigma_max: float) -> None:
        super().__init__(unet, sfr_head, sfr_weight)
        self.p_sigma_max = p_sigma_max

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        z = batch.normal_latents
        B = z.shape[0]
        sigma = pc.sample_sigma(B, self.p_sigma_max).to(z.device)
        s = sigma.view(B, 1, 1, 1, 1)
        x = z + s * torch.randn_like(z)
        out, up = self._unet(batch, pc.c_in(s) * x, sigma)
        denoised = pc.c_skip(s) * x + pc.c_out(s) * out.float()
        dsm = (pc.edm_weight(s) * (denoised - z) ** 2).mean()
        losses = {"loss": dsm, "dsm": dsm}
        self._sfr(up, batch, losses)
        return losses


class Stage2Loss(_UNetStage):
    """Inference's single step (zero latent at sigma_max), decoded through the
    frozen VAE, mean angular loss in pixel space, + SFR."""

    def __init__(self, unet: nn.Module, vae: nn.Module, sfr_head: SFRHead | None, sfr_weight: float) -> None:
        super().__init__(unet, sfr_head, sfr_weight)
        self.vae = vae

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        B, Fr = batch.rgb_latents.shape[:2]
        sigma = torch.full((B,), pc.SIGMA_MAX, device=batch.rgb_latents.device)
        s = sigma.view(B, 1, 1, 1, 1)
        zero = torch.zeros_like(batch.rgb_latents, dtype=torch.float32)
        out, up = self._unet(batch, pc.c_in(s) * zero, sigma)
        latents = pc.c_skip(s) * zero + pc.c_out(s) * out.float()
        image = self.vae.decode(latents.flatten(0, 1) / self.vae.config.scaling_factor, num_frames=Fr).sample
        angular = mean_angular_loss(image, batch.normal.flatten(0, 1))
        losses = {"loss": angular, "angular": angular}
        self._sfr(up, batch, losses)
        return losses
