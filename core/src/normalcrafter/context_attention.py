"""Cross-attention to a single context token, computed as what it is.

Why: every transformer block of SVD's UNet cross-attends, spatially and
temporally, to its frame's CLIP image embedding, which is one token. A
softmax over a single key is exactly 1, so every query's output is that
token's value, the same for all queries: the query and key projections, the
attention kernel and the output projection of every token compute nothing
the result depends on. On the GPU the flash kernel alone took 356 µs per
call at 1024x576, 32 calls per UNet call (docs/performance.md). Here the
token's value and output projections are computed once per sample and
broadcast to the queries (and the temporal blocks' context, their first
frame's token broadcast over every pixel, once per clip). Exact: fused
attention kernels compute probabilities of exactly 1 and return the value
rows as they are; only the output projection's rounding can differ (a
matrix of another shape). The gradients are the same too (a one-element
softmax has none for its score).
"""
from __future__ import annotations

from collections.abc import Callable

import torch


class OneTokenCrossAttention:
    """A diffusers attention processor: ``fallback`` (the module's previous
    processor) for anything but unmasked cross-attention of (B, N, C)
    queries to a (B, 1, D) context without residual connection."""

    def __init__(self, fallback: Callable) -> None:
        self.fallback = fallback

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args,
                 **kwargs) -> torch.Tensor:
        if (encoder_hidden_states is None or encoder_hidden_states.shape[1] != 1 or attention_mask is not None
                or hidden_states.ndim != 3 or attn.residual_connection or args or kwargs):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        context = encoder_hidden_states
        if context.stride(0) == 0:
            # The temporal blocks broadcast their first frame's context over
            # every pixel (a view): one row stands for all.
            context = context[:1]
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        out = attn.to_out[1](attn.to_out[0](attn.to_v(context))) / attn.rescale_output_factor
        # A broadcast view: the blocks only add it to their residual stream.
        return out.expand(hidden_states.shape[0], hidden_states.shape[1], -1)


def use_one_token_cross_attention(module: torch.nn.Module) -> int:
    """Give every cross-attention of ``module`` the ``OneTokenCrossAttention``
    processor (which keeps the previous one for other inputs); returns how
    many."""
    from diffusers.models.attention_processor import Attention

    count = 0
    for m in module.modules():
        if isinstance(m, Attention) and m.is_cross_attention and not isinstance(m.processor, OneTokenCrossAttention):
            m.set_processor(OneTokenCrossAttention(m.processor))
            count += 1
    return count
