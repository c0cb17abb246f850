"""GroupNorm for channels-last half-precision tensors, in three Triton kernels.

Why: PyTorch's eager GroupNorm turns an NHWC tensor into NCHW and back around
every call, which made it the largest cost of an eager channels-last run on
an H100 (docs/performance.md). Here each program reads whole pixel rows of
all channels, which is one coalesced pass for the statistics and one read
and write for the result; a small kernel between them merges the per-block
statistics into each group's per-channel scale and shift. In compiled code
only the statistics are an opaque operation: the result, ``x * scale +
shift``, is left to inductor, which fuses it with the SiLU and additions
around it (inductor's own NHWC GroupNorm reads a few channels at a time,
and was slower: docs/performance.md).

The arithmetic is GroupNorm's: statistics in fp32 per block of pixels,
merged in float64; only the output's rounding to fp16/bf16 differs from
PyTorch's. Anything else (fp32, NCHW, CPU tensors) goes to ``F.group_norm``.
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

# Elements per program and loop step: enough to hide memory latency, few
# enough to stay in registers for every channel count of the model (128 to
# 1280). The statistics keep two fp32 accumulators per element: half as many.
_BLOCK_ELEMENTS = 8192
_STATS_ELEMENTS = 4096


def stats_warps(block_c: int) -> int:
    """Warps per statistics program for blocks ``block_c`` channels wide.
    Timed on every shape the model gives the kernel at 1024x576 and
    512x288 (H100, scripts/timeline.py): up to 1,024 channels 4 warps were
    as fast or faster, up to 3x on the UNet's and the encoder's batches of
    frames (few programs per sample); wider, 8 were up to 16% faster."""
    return 4 if block_c <= 1024 else 8


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    # Pixel counts and loop lengths are not specialised on (Triton builds a
    # kernel per value of a constexpr, and per divisibility of an int): a
    # clip's short last decode chunk gives the temporal layers new pixel
    # counts, and on an H200 two such builds cost 0.25 s in the first clip
    # with a new chunk length (docs/performance.md, run 26).
    @triton.jit(do_not_specialize=["P", "ITERS"])
    def stats(X, Mean, M2, P, C, ITERS, UNROLL: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        # One (sample, run of ITERS pixel blocks): per-channel mean and sum of
        # squared deviations. The loop only loads and accumulates, per
        # element slot, sums of deviations from the run's first pixel (a
        # value of the data, so large means do not cancel the variance);
        # the slots are reduced once, at the end. UNROLL blocks per step are
        # independent loads, in flight together.
        n = tl.program_id(0)
        b = tl.program_id(1)
        c1 = tl.arange(0, BLOCK_C)
        c = c1[None, :]
        first = b * ITERS * BLOCK_P
        end = tl.minimum(P, first + ITERS * BLOCK_P)
        shift1 = tl.load(X + (n * P + first).to(tl.int64) * C + c1, mask=c1 < C, other=0.0).to(tl.float32)
        shift = shift1[None, :]
        s1 = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
        s2 = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
        for i in range(0, ITERS, UNROLL):
            for u in tl.static_range(UNROLL):
                p = first + (i + u) * BLOCK_P + tl.arange(0, BLOCK_P)[:, None]
                mask = (p < end) & (c < C)
                x = tl.load(X + (n * P + p).to(tl.int64) * C + c, mask=mask, other=0.0).to(tl.float32)
                d = tl.where(mask, x - shift, 0.0)
                s1 += d
                s2 += d * d
        k = tl.maximum(tl.minimum(P - first, ITERS * BLOCK_P), 1).to(tl.float32)
        t1 = tl.sum(s1, axis=0)
        t2 = tl.sum(s2, axis=0)
        out = (n * tl.num_programs(1) + b).to(tl.int64) * C + c1
        tl.store(Mean + out, shift1 + t1 / k, mask=c1 < C)
        tl.store(M2 + out, tl.maximum(t2 - t1 * t1 / k, 0.0), mask=c1 < C)

    @triton.jit(do_not_specialize=["P", "R", "SPAN"])
    def merge(Mean, M2, W, B, Scale, Shift, P, C, PER, R, SPAN, eps, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
              BLOCK_R: tl.constexpr, BLOCK_G: tl.constexpr):
        # One (sample, group): the R programs' per-channel pieces merged into
        # the group's mean and variance, written as the per-channel scale and
        # shift that ``apply`` uses. Sums in float64, of deviations from one
        # piece's mean (close to the group's), so nothing cancels.
        n = tl.program_id(0)
        g = tl.program_id(1)
        j = tl.arange(0, BLOCK_G)[None, :]
        ch = g * PER + j
        cmask = j < PER
        total = P.to(tl.float64) * PER
        ref = tl.load(Mean + n * R * C + g * PER).to(tl.float64)
        s1 = tl.zeros((BLOCK_R, BLOCK_G), dtype=tl.float64)
        s2 = tl.zeros((BLOCK_R, BLOCK_G), dtype=tl.float64)
        for r0 in range(0, R, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)[:, None]
            mask = (r < R) & cmask
            k = tl.minimum(tl.maximum(P - r * SPAN, 0), SPAN).to(tl.float64)
            offs = (n * R + r).to(tl.int64) * C + ch
            d = tl.load(Mean + offs, mask=mask, other=0.0).to(tl.float64) - ref
            q = tl.load(M2 + offs, mask=mask, other=0.0).to(tl.float64)
            s1 += tl.where(mask, k * d, 0.0)
            s2 += tl.where(mask, q + k * d * d, 0.0)
        shift_sum = tl.sum(tl.sum(s1, axis=1), axis=0)
        mean = ref + shift_sum / total
        var = (tl.sum(tl.sum(s2, axis=1), axis=0) - shift_sum * shift_sum / total) / total
        rstd = 1.0 / tl.sqrt(tl.maximum(var, 0.0) + eps)
        c1 = g * PER + tl.arange(0, BLOCK_G)
        c1mask = tl.arange(0, BLOCK_G) < PER
        scale = tl.zeros((BLOCK_G,), dtype=tl.float64) + rstd
        if HAS_W:
            scale = scale * tl.load(W + c1, mask=c1mask, other=0.0).to(tl.float64)
        shift = -mean * scale
        if HAS_B:
            shift = shift + tl.load(B + c1, mask=c1mask, other=0.0).to(tl.float64)
        tl.store(Scale + n * C + c1, scale.to(tl.float32), mask=c1mask)
        tl.store(Shift + n * C + c1, shift.to(tl.float32), mask=c1mask)

    @triton.jit(do_not_specialize=["P"])
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

    return stats, merge, apply


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
    if _triton_ready(x):
        y = _try(rows_group_norm, x, groups, weight, bias, eps)
        if y is not None:
            return y
    y = F.group_norm(x, groups, weight, bias, eps)
    # The op promises x's layout (compiled code plans for it); PyTorch
    # returns NCHW for channels-last input on some devices.
    return y if y.stride() == x.stride() else torch.empty_like(x).copy_(y)


@group_norm_nhwc.register_fake
def _(x, groups, weight, bias, eps):
    return torch.empty_like(x)


@torch.library.custom_op("normalcrafter::group_norm_scale_shift", mutates_args=())
def group_norm_scale_shift(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                           eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupNorm's statistics as the fp32 (N, C) ``scale`` and ``shift`` with
    which ``x * scale + shift`` is ``F.group_norm(x, groups, weight, bias,
    eps)``: by the Triton kernels where ``group_norm_nhwc`` would use them,
    else by PyTorch in float64."""
    if _triton_ready(x):
        pair = _try(rows_scale_shift, x, groups, weight, bias, eps)
        if pair is not None:
            return pair
    n, c = x.shape[:2]
    g = x.double().reshape(n, groups, -1)
    mean = g.mean(dim=2).repeat_interleave(c // groups, dim=1)
    scale = (g.var(dim=2, unbiased=False) + eps).rsqrt().repeat_interleave(c // groups, dim=1)
    if weight is not None:
        scale = scale * weight.double()
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.double()
    return scale.float(), shift.float()


@group_norm_scale_shift.register_fake
def _(x, groups, weight, bias, eps):
    n, c = x.shape[:2]
    return x.new_empty((n, c), dtype=torch.float32), x.new_empty((n, c), dtype=torch.float32)


def _triton_ready(x: torch.Tensor) -> bool:
    return x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and _rows(x) is not None


# Why the Triton path was given up in this process, if it was (an old GPU,
# a Triton that cannot build for it): slower from then on, never wrong.
_broken: list[str] = []


def _try(fn, *args):
    """``fn(*args)``, or None (with one warning, and for good) once the
    Triton path has failed for a reason other than memory."""
    if _broken:
        return None
    try:
        return fn(*args)
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any build or launch failure: PyTorch's GroupNorm instead
        _broken.append(f"{type(exc).__name__}: {exc}")
        warnings.warn(f"Triton GroupNorm unavailable, using PyTorch's: {_broken[0][:200]}", RuntimeWarning,
                      stacklevel=3)
        return None


def stats_layout(pixels: int, channels: int, elements: int = _STATS_ELEMENTS) -> tuple[int, int, int, int]:
    """How the statistics kernel covers one sample: (channels per block,
    pixels per block, blocks per program, programs per sample)."""
    block_c = 1 << (channels - 1).bit_length()
    block_p = max(1, elements // block_c)
    blocks = -(-pixels // block_p)
    iters = max(1, min(16, blocks // 512))  # a few hundred programs per sample at least
    return block_c, block_p, iters, -(-blocks // iters)


def rows_scale_shift(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                     eps: float, unroll: int = 1, num_warps: int | None = None,
                     elements: int = _STATS_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """The statistics kernels for a channels-last ``x`` of any float dtype:
    fp32 (N, C) scale and shift (the tests run them on the CPU under
    Triton's interpreter). ``unroll`` (blocks loaded per loop step),
    ``num_warps`` (default: ``stats_warps``) and ``elements`` (per block)
    shape the statistics kernel only; scripts/gn_stats_probe.py times them
    (docs/performance.md: an unroll of 4 made the statistics 7% slower end
    to end)."""
    rows = _rows(x)
    if rows is None:
        raise ValueError("rows_scale_shift needs a channels-last tensor")
    n, p, c = rows
    stats, merge, _ = _kernels()
    block_c, block_p, iters, programs = stats_layout(p, c, elements)
    mean = torch.empty((n, programs, c), device=x.device, dtype=torch.float32)
    m2 = torch.empty_like(mean)
    stats[(n, programs)](x, mean, m2, p, c, ITERS=iters, UNROLL=min(unroll, iters), BLOCK_P=block_p,
                         BLOCK_C=block_c, num_warps=num_warps or stats_warps(block_c))
    per = c // groups
    scale = torch.empty((n, c), device=x.device, dtype=torch.float32)
    shift = torch.empty_like(scale)
    block_g = 1 << (per - 1).bit_length()
    merge[(n, groups)](mean, m2, weight if weight is not None else scale, bias if bias is not None else scale,
                       scale, shift, p, c, per, programs, iters * block_p, eps,
                       HAS_W=weight is not None, HAS_B=bias is not None,
                       BLOCK_R=max(1, 1024 // block_g), BLOCK_G=block_g)
    return scale, shift


def rows_group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                    eps: float) -> torch.Tensor:
    """The whole Triton path for a channels-last ``x``: the statistics, then
    one pass that applies them."""
    scale, shift = rows_scale_shift(x, groups, weight, bias, eps)
    n, p, c = _rows(x)
    block_c = 1 << (c - 1).bit_length()
    block_p = max(1, _BLOCK_ELEMENTS // block_c)
    y = torch.empty_like(x)
    _kernels()[2][(n, -(-p // block_p))](x, y, scale, shift, p, c, BLOCK_P=block_p, BLOCK_C=block_c)
    return y


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
    if torch.compiler.is_compiling() and _triton_ready(x):
        # Only the statistics are opaque to inductor; it fuses the rest.
        scale, shift = group_norm_scale_shift(x, m.num_groups, m.weight, m.bias, m.eps)
        shape = (*x.shape[:2], *([1] * (x.dim() - 2)))
        return (x.float() * scale.view(shape) + shift.view(shape)).to(x.dtype)
    return group_norm_nhwc(x, m.num_groups, m.weight, m.bias, m.eps)
