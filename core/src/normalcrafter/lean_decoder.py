"""The temporal VAE decoder's two largest levels, run so that they hold fewer
full-size tensors at once: the same arithmetic, a fraction of the memory.

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
  its input is released once it has run;
* the temporal half (GroupNorm, SiLU, convolution over frames, the same
  again, the residual, then the frame mixing) runs in tiles of rows: its
  convolutions mix frames only, so a tile needs no other rows, and both
  GroupNorms take their statistics from the whole tensor first. The first
  convolution's output is the one full-size buffer it keeps, and the mixed
  result overwrites it tile by tile.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .accel import ShapeRouted, per_frame
from .groupnorm import group_norm_scale_shift, normalize

# Row tiles per tensor: 1/8 of a full-size tensor per temporary; heights are
# multiples of 64 pixels (8 latent rows), so tiles come out equal.
TILES = 8


def lean_decoder(decoder: torch.nn.Module, frames: int, compile: bool = False) -> None:
    """Make ``decoder`` (diffusers' ``TemporalDecoder``) run its two largest
    levels as described above, their per-frame layers ``frames`` frames at a
    time. With ``compile``, the tiles' work is compiled (static shapes)."""
    blocks = list(decoder.up_blocks)
    if len(blocks) < 3:
        raise ValueError("lean_decoder expects the temporal decoder's four up blocks")
    for block in blocks[-2:]:
        for resnet in block.resnets:
            temporal = resnet.temporal_res_block
            if temporal.time_emb_proj is not None or temporal.conv_shortcut is not None:
                raise ValueError("lean_decoder expects the temporal decoder's resnets (no time embedding, "
                                 "no shortcut convolution)")
    halves = (_first_half, _second_half)
    if compile:
        halves = tuple(ShapeRouted(torch.compile(fn, dynamic=False), fn) for fn in halves)
    for feeder, block in zip(blocks[-3:-1], blocks[-2:]):
        (upsampler,) = feeder.upsamplers
        upsample = upsampler.forward
        upsampler.forward = _unchanged  # now part of the next block's first layer
        block.forward = functools.partial(_up_block, block, upsample, frames, halves)


def _unchanged(x: torch.Tensor) -> torch.Tensor:
    return x


def _up_block(block: torch.nn.Module, upsample: Callable, frames: int, halves: tuple[Callable, Callable],
              hidden_states: torch.Tensor, image_only_indicator: torch.Tensor) -> torch.Tensor:
    """``UpBlockTemporalDecoder.forward`` (without its upsampler, which the
    next block runs), passing each block's input in a list that the block
    empties, so that the input is freed as soon as it has been read."""
    box = [hidden_states]
    for i, resnet in enumerate(block.resnets):
        box.append(_resnet(resnet, upsample if i == 0 else None, frames, halves, box, image_only_indicator))
    return box.pop()


def _resnet(resnet: torch.nn.Module, upsample: Callable | None, frames: int, halves: tuple[Callable, Callable],
            box: list[torch.Tensor], indicator: torch.Tensor) -> torch.Tensor:
    """``SpatioTemporalResBlock.forward`` for one (N, C, H, W) chunk taken
    from ``box``, the upsampler before it if given."""
    spatial = resnet.spatial_res_block
    layer = spatial if upsample is None else (lambda x, temb: spatial(upsample(x), temb))
    x = box.pop()
    s = per_frame(layer, frames, x, None)
    del x
    n, c, h, w = s.shape
    num_frames = indicator.shape[-1]
    # (B, C, T, H, W) views, as diffusers makes them.
    x5 = s[None].reshape(n // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)
    temporal, mixer = resnet.temporal_res_block, resnet.time_mixer
    first, second = halves
    rows = -(-h // TILES)
    tiles = [slice(r, min(r + rows, h)) for r in range(0, h, rows)]
    norm = temporal.norm1
    scale, shift = group_norm_scale_shift(x5, norm.num_groups, norm.weight, norm.bias, norm.eps)
    out = torch.empty_like(x5)
    for t in tiles:
        out[..., t, :] = first(x5[..., t, :], scale, shift, temporal)
    norm = temporal.norm2
    scale, shift = group_norm_scale_shift(out, norm.num_groups, norm.weight, norm.bias, norm.eps)
    for t in tiles:
        tile = out[..., t, :]
        tile.copy_(second(x5[..., t, :], tile, scale, shift, temporal, mixer, indicator))
    return out.permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


def _first_half(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, temporal: torch.nn.Module) -> torch.Tensor:
    """conv1(SiLU(norm1(x))) of ``TemporalResnetBlock`` for a tile of rows."""
    return temporal.conv1(normalize(x, scale, shift, silu=True))


def _second_half(x: torch.Tensor, h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                 temporal: torch.nn.Module, mixer: torch.nn.Module, indicator: torch.Tensor) -> torch.Tensor:
    """The rest of ``TemporalResnetBlock`` (norm2, SiLU, conv2, residual) and
    the ``AlphaBlender`` mix, for a tile of rows: ``h`` is conv1's output."""
    h = temporal.conv2(temporal.dropout(normalize(h, scale, shift, silu=True)))
    # The class's forward, not a compiled one patched on the instance.
    return type(mixer).forward(mixer, x_spatial=x, x_temporal=x + h, image_only_indicator=indicator)
