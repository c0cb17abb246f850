"""The temporal VAE decoder's two largest levels, run so that they hold fewer
full-size tensors at once: the same arithmetic, less memory.

Why: at 1024x576 one tensor of a 7-frame chunk at the last level is 1.06 GB
(128 channels; 2.1 GB for the 256 channels that the last upsampler
produces), and the decoder as diffusers writes it holds four or five of
them at its peak, which set the pipeline's peak GPU memory
(docs/performance.md). Changed, per instance (weights and state-dict keys
stay as they are):

* each upsampler feeding one of these levels runs frame by frame together
  with the first spatial layer after it, so the upsampled chunk is never
  whole;
* the spatial half of each block runs frame by frame (``per_frame``), and
  its input is released as soon as it has been read;
* the temporal half (GroupNorm, SiLU, convolution over frames, the same
  again, the residual, the frame mixing) is one function that works in
  place where it can, so it holds two full-size temporaries besides its
  input; compiled, it is one region, and the residual and the mixing fuse
  into one pass.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .accel import FrameSplit, ShapeRouted, per_frame


def lean_decoder(decoder: torch.nn.Module, split: FrameSplit | int, compile: bool = False) -> None:
    """Make ``decoder`` (diffusers' ``TemporalDecoder``) run its two largest
    levels as described above, their per-frame layers ``split.frames(n)``
    frames of n at a time (an int: that many, always). With ``compile``, the
    temporal halves are compiled (static shapes)."""
    if isinstance(split, int):
        split = FrameSplit(split)
    blocks = list(decoder.up_blocks)
    if len(blocks) < 3:
        raise ValueError("lean_decoder expects the temporal decoder's four up blocks")
    for block in blocks[-2:]:
        for resnet in block.resnets:
            temporal = resnet.temporal_res_block
            if temporal.time_emb_proj is not None or temporal.conv_shortcut is not None:
                raise ValueError("lean_decoder expects the temporal decoder's resnets (no time embedding, "
                                 "no shortcut convolution)")
    temporal_half: Callable = _temporal_half
    if compile:
        temporal_half = ShapeRouted(torch.compile(_temporal_half, dynamic=False), _temporal_half)
    for feeder, block in zip(blocks[-3:-1], blocks[-2:]):
        (upsampler,) = feeder.upsamplers
        upsample = upsampler.forward
        upsampler.forward = _unchanged  # now part of the next block's first layer
        block.forward = functools.partial(_up_block, block, upsample, split, temporal_half)


def _unchanged(x: torch.Tensor) -> torch.Tensor:
    return x


def _up_block(block: torch.nn.Module, upsample: Callable, split: FrameSplit, temporal_half: Callable,
              hidden_states: torch.Tensor, image_only_indicator: torch.Tensor) -> torch.Tensor:
    """``UpBlockTemporalDecoder.forward`` (without its upsampler, which the
    next block runs), passing each block's input in a list that the block
    empties, so that the input is freed as soon as it has been read."""
    box = [hidden_states]
    for i, resnet in enumerate(block.resnets):
        box.append(_resnet(resnet, upsample if i == 0 else None, split, temporal_half, box, image_only_indicator))
    return box.pop()


def _resnet(resnet: torch.nn.Module, upsample: Callable | None, split: FrameSplit, temporal_half: Callable,
            box: list[torch.Tensor], indicator: torch.Tensor) -> torch.Tensor:
    """``SpatioTemporalResBlock.forward`` for one (N, C, H, W) chunk taken
    from ``box``, the upsampler before it if given."""
    spatial = resnet.spatial_res_block
    layer = spatial if upsample is None else (lambda x, temb: spatial(upsample(x), temb))
    x = box.pop()
    s = per_frame(layer, split.frames(x.shape[0]), x, None)
    del x
    n, c, h, w = s.shape
    num_frames = indicator.shape[-1]
    # (B, C, T, H, W) views, as diffusers makes them.
    x5 = s[None].reshape(n // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)
    out = temporal_half(x5, resnet.temporal_res_block, resnet.time_mixer, indicator)
    return out.permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


def _temporal_half(x: torch.Tensor, temporal: torch.nn.Module, mixer: torch.nn.Module,
                   indicator: torch.Tensor) -> torch.Tensor:
    """``TemporalResnetBlock`` (without time embedding or shortcut) followed
    by the ``AlphaBlender`` mix of ``x`` and its result, in place where the
    arithmetic allows."""
    h = temporal.norm1(x)
    h = temporal.conv1(F.silu(h, inplace=True))
    h = temporal.norm2(h)
    h = temporal.conv2(temporal.dropout(F.silu(h, inplace=True)))
    h += x  # the residual
    # AlphaBlender.forward's weight; its alpha * x + (1 - alpha) * h is a lerp.
    alpha = mixer.get_alpha(indicator, x.ndim).to(x.dtype)
    if mixer.switch_spatial_to_temporal_mix:
        alpha = 1.0 - alpha
    return h.lerp_(x, alpha)
