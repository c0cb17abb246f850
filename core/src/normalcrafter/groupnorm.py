"""GroupNorm for channels-last half-precision tensors, in two Triton kernels.

Why: PyTorch's eager GroupNorm turns an NHWC tensor into NCHW and back around
every call, which made it the largest cost of an eager channels-last run on
an H100 (docs/performance.md). Here each program reads whole pixel rows of
all channels, which is one coalesced pass for the statistics and one read
and write for the result. The statistics are merged on the host side in a
dozen small tensor operations per call: compiled runs, where inductor fuses
its own GroupNorm with the SiLU and additions around it, were faster
without this op.

The arithmetic is GroupNorm's: statistics in fp32 per block of pixels,
merged in float64; only the output's rounding to fp16/bf16 differs from
PyTorch's. Anything else (fp32, NCHW, CPU tensors) goes to ``F.group_norm``.
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

# Elements per program: enough to hide memory latency, few enough to stay in
# registers for every channel count of the model (128 to 1280).
_BLOCK_ELEMENTS = 8192


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def stats(X, Mean, M2, P, C, ITERS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        # One (sample, run of ITERS pixel blocks): per-channel mean and sum of
        # squared deviations, each block centred on its own mean and merged
        # by Chan's formula, so large means do not cancel the variance.
        n = tl.program_id(0)
        b = tl.program_id(1)
        c = tl.arange(0, BLOCK_C)[None, :]
        count = 0.0
        mean = tl.zeros((BLOCK_C,), dtype=tl.float32)
        m2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        for i in range(ITERS):
            p = (b * ITERS + i) * BLOCK_P + tl.arange(0, BLOCK_P)[:, None]
            mask = (p < P) & (c < C)
            x = tl.load(X + (n * P + p).to(tl.int64) * C + c, mask=mask, other=0.0).to(tl.float32)
            k = tl.sum(tl.where(tl.arange(0, BLOCK_P) + (b * ITERS + i) * BLOCK_P < P, 1.0, 0.0), axis=0)
            block_mean = tl.sum(x, axis=0) / tl.maximum(k, 1.0)
            d = tl.where(mask, x - block_mean[None, :], 0.0)
            total = count + k
            delta = block_mean - mean
            mean += delta * (k / tl.maximum(total, 1.0))
            m2 += tl.sum(d * d, axis=0) + delta * delta * (count * k / tl.maximum(total, 1.0))
            count = total
        out = (n * tl.num_programs(1) + b).to(tl.int64) * C + tl.arange(0, BLOCK_C)
        cmask = tl.arange(0, BLOCK_C) < C
        tl.store(Mean + out, mean, mask=cmask)
        tl.store(M2 + out, m2, mask=cmask)

    @triton.jit
    def apply(X, Y, Scale, Shift, P, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        n = tl.program_id(0)
        b = tl.program_id(1)
        p = b * BLOCK_P + tl.arange(0, BLOCK_P)[:, None]
        c = tl.arange(0, BLOCK_C)[None, :]
        mask = (p < P) & (c < C)
        offs = (n * P + p).to(tl.int64) * C + c
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        scale = tl.load(Scale + n * C + c, mask=c < C, other=0.0)
        shift = tl.load(Shift + n * C + c, mask=c < C, other=0.0)
        tl.store(Y + offs, (x * scale + shift).to(Y.dtype.element_ty), mask=mask)

    return stats, apply


def _rows(x: torch.Tensor) -> tuple[int, int, int] | None:
    """(N, pixels, C) when ``x`` (N, C, *spatial) is stored channels-last,
    i.e. as N x pixels rows of C contiguous values; else None."""
    if x.dim() < 3:
        return None
    perm = (0, *range(2, x.dim()), 1)
    if not x.permute(perm).is_contiguous():
        return None
    return x.shape[0], x[0, 0].numel(), x.shape[1]


def available() -> bool:
    """Triton is importable (PyTorch's CUDA builds bring it)."""
    try:
        _kernels()
    except ImportError:
        return False
    return True


@torch.library.custom_op("normalcrafter::group_norm_nhwc", mutates_args=())
def group_norm_nhwc(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                    eps: float) -> torch.Tensor:
    """``F.group_norm(x, groups, weight, bias, eps)``, computed by rows of
    channels when ``x`` is a channels-last fp16/bf16 CUDA tensor; anything
    else goes to PyTorch."""
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and _rows(x) is not None:
        y = _try_rows(x, groups, weight, bias, eps)
        if y is not None:
            return y
    y = F.group_norm(x, groups, weight, bias, eps)
    # The op promises x's layout (compiled code plans for it); PyTorch
    # returns NCHW for channels-last input on some devices.
    return y if y.stride() == x.stride() else torch.empty_like(x).copy_(y)


# Why the Triton path was given up in this process, if it was (an old GPU,
# a Triton that cannot build for it): slower from then on, never wrong.
_broken: list[str] = []


def _try_rows(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
              eps: float) -> torch.Tensor | None:
    """``rows_group_norm``, or None (with one warning, and for good) once it
    has failed for a reason other than memory."""
    if _broken:
        return None
    try:
        return rows_group_norm(x, groups, weight, bias, eps)
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any build or launch failure: PyTorch's GroupNorm instead
        _broken.append(f"{type(exc).__name__}: {exc}")
        warnings.warn(f"Triton GroupNorm unavailable, using PyTorch's: {_broken[0][:200]}", RuntimeWarning,
                      stacklevel=2)
        return None


def rows_group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                    eps: float) -> torch.Tensor:
    """The Triton path for a channels-last ``x`` of any float dtype (the
    tests run it on the CPU under Triton's interpreter)."""
    rows = _rows(x)
    if rows is None:
        raise ValueError("rows_group_norm needs a channels-last tensor")
    n, p, c = rows
    stats, apply = _kernels()
    block_c = 1 << (c - 1).bit_length()
    block_p = max(1, _BLOCK_ELEMENTS // block_c)
    blocks = -(-p // block_p)
    iters = max(1, min(16, blocks // 512))  # a few hundred programs per sample at least
    programs = -(-blocks // iters)
    mean = torch.empty((n, programs, c), device=x.device, dtype=torch.float32)
    m2 = torch.empty_like(mean)
    stats[(n, programs)](x, mean, m2, p, c, ITERS=iters, BLOCK_P=block_p, BLOCK_C=block_c)
    # Merge the programs' pieces into groups (Chan's formula, in float64).
    per = c // groups
    span = iters * block_p
    counts = (p - torch.arange(programs, device=x.device, dtype=torch.float64) * span).clamp(0, span)
    counts = counts.repeat_interleave(per)  # pieces of a group: (program, channel in group)
    pieces = mean.double().view(n, programs, groups, per).transpose(1, 2).reshape(n, groups, -1)
    total = float(p * per)
    group_mean = (pieces * counts).sum(-1) / total
    group_m2 = m2.double().view(n, programs, groups, per).transpose(1, 2).reshape(n, groups, -1).sum(-1)
    group_m2 = group_m2 + (counts * (pieces - group_mean[..., None]) ** 2).sum(-1)
    rstd = torch.rsqrt(group_m2 / total + eps)
    scale = rstd.repeat_interleave(per, dim=1)  # (n, c)
    shift = -group_mean.repeat_interleave(per, dim=1) * scale
    if weight is not None:
        scale = scale * weight.double()
        shift = shift * weight.double()
    if bias is not None:
        shift = shift + bias.double()
    y = torch.empty_like(x)
    apply[(n, blocks)](x, y, scale.float().contiguous(), shift.float().contiguous(), p, c,
                       BLOCK_P=block_p, BLOCK_C=block_c)
    return y


@group_norm_nhwc.register_fake
def _(x, groups, weight, bias, eps):
    return torch.empty_like(x)


def use_nhwc_group_norm(module: torch.nn.Module) -> int:
    """Route every ``nn.GroupNorm`` of ``module`` through ``group_norm_nhwc``
    (patched on the instances: weights and state-dict keys stay as they are).
    Returns how many were routed."""
    count = 0
    for m in module.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.forward = functools.partial(_forward, m)
            count += 1
    return count


def _forward(m: torch.nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    return group_norm_nhwc(x, m.num_groups, m.weight, m.bias, m.eps)
