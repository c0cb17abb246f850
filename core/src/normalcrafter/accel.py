"""How the pipeline runs on the hardware: none of this changes the algorithm.

``Speed`` collects the choices. With ``Speed()`` (all automatic) an fp32
pipeline runs the release's arithmetic (the parity test holds it to that),
except that the UNet's cross-attention to its one CLIP token is computed as
the exact identity it is (context_attention.py), in every precision;
fp16/bf16 pipelines, whose results already carry half-precision rounding,
also get the layout and batching choices below, which change results only
at that rounding level:

* channels-last convolutions (NHWC: tensor-core friendly, and it makes the
  UNet's (B, C, H, W) -> (B, H*W, C) reshapes free), but only with a
  GroupNorm made for that layout: the Triton one of groupnorm.py (its
  statistics; when compiling, inductor fuses the rest), or inductor's own.
  PyTorch's eager GroupNorm converts NHWC tensors to NCHW and back around
  every call, which made eager NHWC runs slower than NCHW ones
  (docs/performance.md); with it, the UNet's transformer blocks return
  channels-last outputs (``channels_last_outputs``) and, on CUDA, the VAE's
  512-wide one-head attention runs as products (wide_attention.py);
* the VAE encoder in bf16 rather than fp32 in fp16 pipelines: the release
  upcasts it only because fp16 overflows there, and bf16 has fp32's range;
* cuDNN's per-shape algorithm search (not for a clip's short last decode
  chunk: ``no_algorithm_search``);
* on CUDA, the VAE encoder and the decoder's per-frame layers take the
  whole chunk where it fits in ``SPLIT_PIXELS`` (512x288) and one frame at
  a time elsewhere (1024x576: ``FrameSplit``), and the decoder's largest
  levels run lean (lean_decoder.py), which bounds their peak memory (the
  temporal layers still see the whole chunk);
* on CUDA, each model call (CLIP, VAE encoder, UNet, decoder) replayed from
  a CUDA graph (graphs.py): the same kernels, launched in one call instead
  of thousands from Python; a clip's short last batch of frames goes
  through CLIP and the encoder as a full one (``full_batches``), so it
  replays the same graphs.

``compile`` (regional torch.compile of the UNet's, VAE encoder's and
decoder's repeated blocks; about three minutes per resolution on an H100
machine) and ``offload`` (the low-memory mode) are opt-in.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Speed:
    """Execution choices; ``None`` means automatic (see the module docstring)."""

    channels_last: bool | None = None
    # "fp32" (the release's choice for fp16 pipelines), "bf16", "fp16", or None.
    encoder_dtype: str | None = None
    compile: bool = False
    # Run the clip loop in a worker thread, a few chunks ahead of the consumer
    # (file writing then overlaps device work). Automatic: on with CUDA.
    overlap: bool | None = None
    # Low-memory mode: UNet and image encoder weights stay in pinned host
    # memory and are copied to the device only while they run.
    offload: bool = False
    # Frames per call of the VAE encoder and of the decoder's per-frame
    # layers, whose largest levels then run lean (lean_decoder.py); 0 = the
    # whole chunk, as diffusers runs it. Automatic: on CUDA in fp16/bf16, by
    # frame size (``FrameSplit``); one frame with ``offload``.
    decode_split: int | None = None
    cudnn_benchmark: bool | None = None
    # GroupNorm by rows of channels in Triton (groupnorm.py). Automatic: on
    # for fp16/bf16 on CUDA where Triton is importable (on an H100 at
    # 1024x576, eager runs went from 244 to 175 ms/frame, compiled ones with
    # CUDA graphs from 69.8 with inductor's own GroupNorm to 63.6;
    # docs/performance.md).
    nhwc_group_norm: bool | None = None
    # Model calls replayed from CUDA graphs. Automatic: on for fp16/bf16 on
    # CUDA; never with ``offload``, which moves weights between calls.
    cuda_graphs: bool | None = None
    # A clip's short last batch of frames run through CLIP and the VAE
    # encoder as a full one (``NormalCrafterPipeline.encode_frames``).
    # Automatic: on for fp16/bf16 on CUDA.
    full_batches: bool | None = None
    # Cross-attention to one context token as its value, broadcast
    # (context_attention.py); off only to time the release's way.
    one_token_cross_attention: bool = True

    def resolve(self, device: torch.device, dtype: torch.dtype, force_upcast: bool) -> "Resolved":
        half = dtype != torch.float32
        cuda = device.type == "cuda"
        if self.encoder_dtype is not None:
            if self.encoder_dtype not in _DTYPES:
                raise ValueError(f"encoder_dtype must be one of {', '.join(_DTYPES)}, got {self.encoder_dtype!r}")
            enc = _DTYPES[self.encoder_dtype]
        elif dtype == torch.float16 and force_upcast:
            enc = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
        else:
            enc = dtype
        if self.compile and not hasattr(torch, "compile"):
            raise ValueError("this PyTorch has no torch.compile")
        if self.nhwc_group_norm is None:
            from .groupnorm import available

            fused_gn = half and cuda and available()
        else:
            fused_gn = self.nhwc_group_norm
        return Resolved(
            channels_last=half and (self.compile or fused_gn) if self.channels_last is None else self.channels_last,
            encoder_dtype=enc,
            compile=self.compile and not self.offload,
            overlap=cuda if self.overlap is None else self.overlap,
            offload=self.offload,
            decode_split=_auto_split(half and cuda, self.offload) if self.decode_split is None else self.decode_split,
            cudnn_benchmark=(cuda and half) if self.cudnn_benchmark is None else self.cudnn_benchmark,
            nhwc_group_norm=fused_gn,
            cuda_graphs=(half and cuda if self.cuda_graphs is None else self.cuda_graphs) and cuda and not self.offload,
            full_batches=half and cuda if self.full_batches is None else self.full_batches,
            one_token_cross_attention=self.one_token_cross_attention,
        )


def _auto_split(split: bool, offload: bool) -> int | None:
    if not split:
        return 0
    # The low-memory mode is for small cards: the least memory, whatever the size.
    return 1 if offload else None


@dataclass(frozen=True)
class Resolved:
    channels_last: bool
    encoder_dtype: torch.dtype
    compile: bool
    overlap: bool
    offload: bool
    # Frames per call of the per-frame layers; None: by frame size
    # (``FrameSplit``); 0: no split.
    decode_split: int | None
    cudnn_benchmark: bool
    nhwc_group_norm: bool
    cuda_graphs: bool
    full_batches: bool
    one_token_cross_attention: bool


def to_channels_last(module: torch.nn.Module) -> None:
    """NHWC (NDHWC for 3-D) weights for every convolution; activations follow."""
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
        elif isinstance(m, torch.nn.Conv3d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)


def channels_last_outputs(module: torch.nn.Module, classes: tuple[str, ...]) -> int:
    """Make every submodule of ``module`` whose class is named in ``classes``
    return its (first) output channels-last; returns how many. Why: diffusers'
    ``TransformerSpatioTemporalModel`` ends with ``.contiguous()``, so its
    output is NCHW, and through the residual additions (which keep their
    first operand's layout) so is every block input after it: on an H100
    that sent 45 GroupNorms per UNet call to PyTorch's NCHW kernel, on
    copies (docs/performance.md). Compiled, the conversion fuses into the
    block's last kernel; eager, it is one copy of a UNet-sized tensor."""
    count = 0
    for m in module.modules():
        if type(m).__name__ in classes:
            m.forward = functools.partial(_channels_last_output, m.forward)
            count += 1
    return count


def _channels_last_output(inner: Callable, *args, **kwargs):
    out = inner(*args, **kwargs)
    if isinstance(out, torch.Tensor):
        return _as_channels_last(out)
    if isinstance(out, tuple):
        return (_as_channels_last(out[0]), *out[1:])
    out.sample = _as_channels_last(out.sample)  # diffusers' output dataclasses
    return out


def _as_channels_last(x: torch.Tensor) -> torch.Tensor:
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    return x if fmt is None else x.contiguous(memory_format=fmt)


# Pixels of the frames that the per-frame layers take in one call when the
# split is automatic: the whole 7-frame chunk at 512x288 (padded to
# 512x320), one frame at 1024x576. On an H100, whole chunks at 512x288 took
# the compiled path from 13.3 to 12.7 ms/frame (fewer, larger kernels; run
# 18), peaking on an H200 at 6.34 GB allocated / 7.29 GB reserved (run 23);
# one frame at a time is what keeps 1024x576 under 10 GB
# (docs/performance.md, runs 13 and 23).
SPLIT_PIXELS = 7 * 512 * 320


class FrameSplit:
    """How many frames the per-frame layers given it (``split_frames``,
    lean_decoder.py) take per call: ``frames``, or, with ``frames=None``,
    the whole batch where it fits in ``pixels`` and one frame at a time
    where it does not (frame counts between the two would leave a
    remainder call of another shape in every chunk of 7). The pipeline sets
    the frame size from each model call's input (``size``), so the choice
    follows the clip."""

    def __init__(self, frames: int | None = None, pixels: int = SPLIT_PIXELS) -> None:
        if frames is not None and frames < 1:
            raise ValueError(f"frames per call must be at least 1, got {frames}")
        self.fixed = frames
        self.pixels = pixels
        self._frame_pixels = 0

    def size(self, height: int, width: int) -> None:
        self._frame_pixels = height * width

    def frames(self, n: int) -> int:
        """Frames per call for a batch of ``n`` frames of the size last set."""
        if self.fixed is not None:
            return self.fixed
        return n if n * self._frame_pixels <= self.pixels else 1


def split_frames(module: torch.nn.Module, split: FrameSplit | int) -> None:
    """Make ``module`` (a per-frame layer taking (N, C, H, W) first) run on
    at most ``split.frames(n)`` frames of n at a time (``per_frame``; an
    int: that many, always). Patched on the instance, so weights and
    state-dict keys are untouched."""
    if isinstance(split, int):
        split = FrameSplit(split)
    module.forward = functools.partial(_split_call, module.forward, split)


def _split_call(fn: Callable, split: FrameSplit, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return per_frame(fn, split.frames(x.shape[0]), x, *args, **kwargs)


def per_frame(fn: Callable, frames: int, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``fn(x, *args, **kwargs)`` for a per-frame ``fn``, computed at most
    ``frames`` frames of ``x`` (N, C, H, W) at a time into one preallocated
    output: the same result with a fraction of its temporary memory."""
    n = x.shape[0]
    if n <= frames:
        return fn(x, *args, **kwargs)
    first = fn(x[:frames], *args, **kwargs)
    nhwc = first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
    out = torch.empty(
        (n, *first.shape[1:]), dtype=first.dtype, device=first.device,
        memory_format=torch.channels_last if nhwc else torch.contiguous_format,
    )
    out[:frames] = first
    del first
    for i in range(frames, n, frames):
        out[i : i + frames] = fn(x[i : i + frames], *args, **kwargs)
    return out


@contextmanager
def no_algorithm_search() -> Iterator[None]:
    """cuDNN's per-shape algorithm search off inside. For the shapes of a
    clip's short last decode chunk, a few frames met once per clip (and
    once more when captured): the search would time every candidate
    algorithm of each of its new convolution shapes first."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


class ShapeRouted:
    """Use the compiled ``fast`` callable for calls whose frame count is the
    one of the first call at their size (the window or chunk size that
    nearly every call of a clip has) and the eager ``slow`` one otherwise:
    a clip's short tail never waits for a recompile, and each frame size
    compiles once for its own frame count (the per-frame layers take more
    frames per call at small sizes: ``FrameSplit``). The frame axis is the
    first one of (N, C, H, W) inputs and the third of (B, C, T, H, W) ones.
    If compilation itself fails, the eager callable takes over for good
    (``failure`` says why): slower, never wrong."""

    def __init__(self, fast: Callable, slow: Callable) -> None:
        self.fast, self.slow = fast, slow
        # The first call's frame count, by the input's other dimensions.
        self.frames: dict[tuple[int, ...], int] = {}
        self.failure: str | None = None

    def __call__(self, *args, **kwargs):
        # The first tensor argument, positional or (AlphaBlender) by name.
        x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        axis = 2 if x.dim() == 5 else 0
        n = x.shape[axis]
        first = self.frames.setdefault(x.shape[:axis] + x.shape[axis + 1:], n)
        if n != first or self.failure is not None:
            return self.slow(*args, **kwargs)
        try:
            return self.fast(*args, **kwargs)
        except _compile_errors() as exc:
            self.failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            warnings.warn(f"torch.compile failed, running eagerly: {self.failure}", RuntimeWarning, stacklevel=2)
            return self.slow(*args, **kwargs)


def _compile_errors() -> tuple[type[BaseException], ...]:
    import torch._dynamo.exc

    errors: list[type[BaseException]] = [torch._dynamo.exc.TorchDynamoException]
    try:
        from torch._inductor.exc import InductorError

        errors.append(InductorError)
    except ImportError:
        pass
    return tuple(errors)


# The blocks compiled one by one (regional compilation), per model: the
# repeated blocks where GroupNorm, SiLU, residual adds and attention's
# projections fuse around the convolutions and products. The decoder and
# encoder are compiled at the level of their per-frame and temporal layers,
# below ``split_frames``, so a split layer calls compiled code frame by frame;
# their frame mixing (three passes over permuted tensors when eager) and
# nearest upsampling (PyTorch's NHWC kernel ran at a fifth of the memory
# rate) are compiled as blocks of their own.
UNET_REGIONS = ("SpatioTemporalResBlock", "TransformerSpatioTemporalModel")
VAE_REGIONS = ("ResnetBlock2D", "TemporalResnetBlock", "Attention", "AlphaBlender", "Upsample2D")


def compile_regions(module: torch.nn.Module, classes: tuple[str, ...]) -> list[ShapeRouted]:
    """Compile every outermost submodule of ``module`` whose class is named in
    ``classes``, in place (its ``forward`` becomes a ``ShapeRouted``), and
    return the routers. Identical blocks share compiled code; each block
    shape is compiled once, statically (static shapes give the fastest
    kernels; another resolution compiles again, once)."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    # Dozens of block shapes per model, each a cache entry of the class's
    # one forward code object; the defaults (8) would silently fall back to
    # eager after the eighth.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
    torch._dynamo.config.accumulated_cache_size_limit = max(
        torch._dynamo.config.accumulated_cache_size_limit, 4096)
    # 1x1 convolutions of channels-last tensors are plain matrix products.
    inductor_config.conv_1x1_as_mm = True
    routers: list[ShapeRouted] = []
    taken: list[str] = []
    for name, sub in module.named_modules():
        if type(sub).__name__ not in classes or any(name.startswith(t + ".") for t in taken):
            continue
        taken.append(name)
        router = ShapeRouted(torch.compile(sub.forward, dynamic=False), sub.forward)
        sub.forward = router
        routers.append(router)
    return routers


class Offloader:
    """Keeps modules' weights in pinned host memory and puts them on the
    device only inside ``resident(module)``: copies one way (the weights do
    not change), so leaving costs nothing."""

    def __init__(self, device: torch.device, modules: list[torch.nn.Module]) -> None:
        self.device = device
        self._host: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._depth: dict[int, int] = {}
        pin = device.type == "cuda"
        for module in modules:
            module.to("cpu")
            pairs = []
            for t in list(module.parameters()) + list(module.buffers()):
                host = t.data.pin_memory() if pin else t.data
                t.data = host
                pairs.append((t, host))
            self._host[id(module)] = pairs

    @contextmanager
    def resident(self, module: torch.nn.Module) -> Iterator[None]:
        key = id(module)
        pairs = self._host.get(key)
        if pairs is None or self._depth.get(key, 0):
            yield
            return
        for t, host in pairs:
            t.data = host.to(self.device, non_blocking=True)
        self._depth[key] = 1
        try:
            yield
        finally:
            self._depth[key] = 0
            for t, host in pairs:
                t.data = host
