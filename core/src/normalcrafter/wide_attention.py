"""The VAE's one-head, 512-wide self-attention as two matrix products and a
softmax, frame by frame.

Why: no flash kernel takes heads wider than 256, so PyTorch gives this
attention its memory-efficient kernel, which ran at about 120 TFLOP/s on an
H100, 2.9 ms per frame at 1024x576 (docs/performance.md). As products the
work runs at the matrix rate; the scores of one frame (9216 x 9216 at
1024x576, 0.34 GB in fp32) are the price in memory, paid where the decoder
holds little else. The arithmetic is the fused kernels': scores accumulated
and normalised in fp32, probabilities rounded to the input type for the
second product.
"""
from __future__ import annotations

import torch

# Heads wider than this have no flash kernel (PyTorch's and cuDNN's stop at 256).
FLASH_HEAD_LIMIT = 256


class WideHeadAttention:
    """A diffusers attention processor for ``Attention`` modules with one
    head, no mask and no cross-attention (the VAE's mid-block attention):
    ``AttnProcessor2_0``'s steps with the attention itself computed as
    products, one frame (batch entry) at a time."""

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs) -> torch.Tensor:
        residual = hidden_states
        b, c, h, w = hidden_states.shape
        x = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        scale = q.shape[-1] ** -0.5  # SDPA's default, as AttnProcessor2_0 uses it
        out = torch.empty_like(q)
        for i in range(b):
            out[i] = _attend(q[i], k[i], v[i], scale)
        x = attn.to_out[1](attn.to_out[0](out))
        x = x.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            x = x + residual
        return x / attn.rescale_output_factor


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    if q.is_cuda:
        scores = torch.mm(q, k.t(), out_dtype=torch.float32)
    else:  # PyTorch's CPU kernels have no mixed-precision product
        scores = torch.mm(q.float(), k.float().t())
    probs = torch.softmax(scores * scale, dim=-1).to(v.dtype)
    return probs @ v


def use_wide_head_attention(module: torch.nn.Module) -> int:
    """Give every one-head attention of ``module`` wider than
    ``FLASH_HEAD_LIMIT`` the ``WideHeadAttention`` processor (self-attention
    only, as in the VAE); returns how many."""
    from diffusers.models.attention_processor import Attention

    count = 0
    for m in module.modules():
        if isinstance(m, Attention) and m.heads == 1 and m.inner_dim > FLASH_HEAD_LIMIT and not m.is_cross_attention \
                and m.spatial_norm is None:
            m.set_processor(WideHeadAttention())
            count += 1
    return count
