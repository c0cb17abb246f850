"""Semantic Feature Regularization: align the UNet's Up1 features with a
frozen semantic encoder's, patch by patch.

L_reg = -mean over patches of cos(h_sem, mlp(h_up1)). The MLP (three 1x1
convolutions, i.e. a per-patch 3-layer MLP) exists only during training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SFRHead(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, hidden: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 1), nn.SiLU(),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, up1: torch.Tensor) -> torch.Tensor:
        return self.mlp(up1)


def sfr_loss(projected: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
    """-mean cosine similarity over (N, C, h, w) feature maps on one grid."""
    if projected.shape[-2:] != semantic.shape[-2:]:
        raise ValueError(f"SFR grids differ: {tuple(projected.shape[-2:])} vs {tuple(semantic.shape[-2:])}")
    return -F.cosine_similarity(projected.float(), semantic.float(), dim=1, eps=1e-6).mean()
