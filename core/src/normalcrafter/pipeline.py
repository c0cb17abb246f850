"""The NormalCrafter inference algorithm, streaming window by window.

Per frame: CLIP embedding and unscaled posterior-mode VAE latent. Per window
of ``window`` frames: zero normal latents (the overlap replaced by the
previous window's prediction), one Euler step from sigma_max with the UNet,
a linear blend of the overlap. Per chunk of ``decode_chunk`` final latents:
the temporal VAE decoder. Frames are read as needed and output frames are
yielded as soon as their chunk is decoded, so memory depends on the window
and chunk sizes, never on the clip length.

The numbers match the authors' released pipeline (tests/test_parity.py).
How it runs on the hardware (layouts, compilation, offload, overlap of host
and device work) is chosen by ``accel.Speed``; docs/performance.md has the
measurements.
"""
from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _filter2d, _gaussian

from .accel import (
    UNET_REGIONS, VAE_REGIONS, FrameSplit, Offloader, Speed, channels_last_outputs, compile_regions,
    no_algorithm_search, split_frames, to_channels_last,
)
from .context_attention import use_one_token_cross_attention
from .lean_decoder import lean_decoder
from .model.loading import Components, load_components
from .overlap import background
from .preprocess import Padding, pad_frame, padding_for, unpad
from .wide_attention import use_wide_head_attention
from .windows import ChunkPlan, blend, grid_end, plan_chunk

# SVD micro-conditioning as the release sets it: fps 7 (not fps-1), motion
# bucket 127, no noise augmentation.
ADDED_TIME_IDS = (7.0, 127.0, 0.0)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)} or auto")
    return DTYPES[dtype]


def antialias_kernels(height: int, width: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The horizontal and vertical Gaussian kernels with which SVD's
    ``_resize_with_antialiasing`` blurs an image of this size before resizing
    it to ``size`` x ``size`` (its sigma and kernel-size rules, its
    ``_gaussian``): made once per size, so that no frame waits for a copy of
    the kernels to the device."""
    sigmas = (max((height / size - 1.0) / 2.0, 0.001), max((width / size - 1.0) / 2.0, 0.001))
    ky, kx = (int(max(2.0 * 2 * sg, 3)) for sg in sigmas)
    ky, kx = ky + (ky % 2 == 0), kx + (kx % 2 == 0)
    sigma = torch.tensor([sigmas], dtype=torch.float32)
    return _gaussian(kx, sigma[:, 1].view(1, 1))[..., None, :], _gaussian(ky, sigma[:, 0].view(1, 1))[..., None]


@dataclass
class StageTimes:
    """Seconds spent per stage (CUDA work is synchronised at stage ends only
    when ``profile`` is set on the pipeline)."""

    clip: float = 0.0
    encode: float = 0.0
    unet: float = 0.0
    decode: float = 0.0
    read: float = 0.0  # waiting for input frames and padding them (host)

    def as_dict(self) -> dict[str, float]:
        return {"clip": self.clip, "vae_encode": self.encode, "unet": self.unet, "vae_decode": self.decode,
                "read": self.read}


def take_padded(
    source: Iterator[np.ndarray], count: int, pad: Padding | None, read: int, total: int
) -> tuple[np.ndarray, Padding]:
    """The next ``count`` frames of ``source`` white-padded into one batch; the
    clip's first frame fixes the padding. ``read`` and ``total`` only word the
    error when the source ends early."""
    frames = []
    for _ in range(count):
        try:
            frame = next(source)
        except StopIteration:
            raise ValueError(f"the clip ended after {read + len(frames)} of {total} frames") from None
        if pad is None:
            pad = padding_for(*frame.shape[:2])
        frames.append(pad_frame(frame, pad))
    return np.stack(frames), pad


class NormalCrafterPipeline:
    """Holds the loaded model on one device and runs clips through it."""

    def __init__(
        self,
        components: Components,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        speed: Speed | None = None,
    ):
        self.components = components
        self.device = torch.device(device)
        self.dtype = dtype
        c = components
        self.speed = (speed or Speed()).resolve(self.device, dtype, bool(c.vae.config.force_upcast))
        sp = self.speed
        self._offload = Offloader(self.device, [c.unet.to(dtype), c.image_encoder.to(dtype)]) if sp.offload else None
        self.unet = c.unet if sp.offload else c.unet.to(self.device, dtype)
        self.image_encoder = c.image_encoder if sp.offload else c.image_encoder.to(self.device, dtype)
        self.vae = c.vae.to(self.device, dtype)
        # The release encodes RGB in fp32 when the VAE asks for upcasting (fp16
        # overflows there); a separate copy of the encoder half only, in the
        # encoder's own precision, never of the whole VAE.
        self._encoder = torch.nn.Sequential(self.vae.encoder, self.vae.quant_conv)
        if sp.encoder_dtype != dtype:
            self._encoder = copy.deepcopy(self._encoder).to(self.device, sp.encoder_dtype)
        if sp.one_token_cross_attention:
            use_one_token_cross_attention(self.unet)
        if sp.channels_last:
            for module in (self.unet, self.vae, self._encoder):
                to_channels_last(module)
            channels_last_outputs(self.unet, ("TransformerSpatioTemporalModel",))
            if self.device.type == "cuda":
                for module in (self.vae, self._encoder):
                    use_wide_head_attention(module)
        if sp.nhwc_group_norm:
            from .groupnorm import use_nhwc_group_norm

            for module in (self.unet, self.vae, self._encoder):
                use_nhwc_group_norm(module)
        if sp.compile:
            # Before the split: a split layer then runs compiled code per frame.
            compile_regions(self.unet, UNET_REGIONS)
            compile_regions(self._encoder, VAE_REGIONS)
            compile_regions(self.vae.decoder, VAE_REGIONS)
        # Frames per call of the per-frame layers, set per model call from its
        # input's size (None: whole chunks, unsplit).
        self._split = FrameSplit(sp.decode_split) if sp.decode_split != 0 else None
        if self._split is not None:
            # The encoder is per-frame throughout: the same bound applies.
            lean_decoder(self.vae.decoder, self._split, compile=sp.compile)
            split_frames(self._encoder, self._split)
        self._vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if sp.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.scheduler = c.scheduler
        # The one Euler step's schedule is the same for every window: the
        # scheduler keeps it on the host (its index lookups and comparisons
        # would otherwise wait for the device each window), the UNet gets its
        # timestep, and the micro-conditioning, from copies made once.
        self.scheduler.set_timesteps(1, device="cpu")
        self._timestep = self.scheduler.timesteps[0].to(self.device)
        self._time_ids = torch.tensor([ADDED_TIME_IDS], dtype=self.dtype, device=self.device)
        fe = c.feature_extractor
        self._clip_size = int(c.image_encoder.config.image_size)
        self._clip_mean = torch.tensor(fe.image_mean, device=self.device).view(1, 3, 1, 1)
        self._clip_std = torch.tensor(fe.image_std, device=self.device).view(1, 3, 1, 1)
        self._blur: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        # The four model calls, each replayed from CUDA graphs when chosen.
        wrap: Callable[[Callable], Callable] = lambda fn: fn  # noqa: E731
        if sp.cuda_graphs:
            from .graphs import GraphedCall, GraphPool

            pool = GraphPool()
            wrap = lambda fn: GraphedCall(fn, pool)  # noqa: E731
        self._clip_call = wrap(self._clip_embed)
        self._encode_call = wrap(self._encode_latents)
        self._unet_call = wrap(self._unet_forward)
        self._decode_call = wrap(self._decode_forward)
        self.times = StageTimes()
        self.profile = False

    @classmethod
    def from_pretrained(
        cls, source: str | None = None, device: str = "auto", dtype: str = "auto", speed: Speed | None = None
    ) -> "NormalCrafterPipeline":
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        # Load in fp32 on the CPU, then cast: fp16 checkpoints load exactly and
        # a bf16 run gets bf16 weights rounded once, from fp32.
        return cls(load_components(source, torch.float32), dev, dt, speed)

    @property
    def convention(self) -> str:
        return self.components.info.convention

    # -- per-frame encoders -------------------------------------------------
    def _timed(self, stage: str):
        return _StageTimer(self, stage)

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, H, W, 3) uint8 padded frames -> CLIP embeddings (N, 1, D) and
        RGB latents (N, 4, H/8, W/8), both in the pipeline dtype.

        With ``speed.full_batches``, a batch shorter than ``batch`` (a
        clip's last) is run as a full one, its last frame repeated and the
        extra results dropped: CLIP and the VAE encoder then replay the full
        batches' graphs and compiled code instead of running, capturing and
        searching convolution algorithms anew for shapes met once per clip
        (on an H200 an uncaptured 2-frame encoder call cost 0.6 s at
        1024x576, and a pipeline keeps graphs for two signatures per call;
        docs/performance.md). Both models work frame by frame, so the frames
        kept get the same results (up to the rounding of another batch
        size)."""
        n = len(frames)
        if batch is not None and self.speed.full_batches and n < batch:
            frames = np.concatenate([frames, np.repeat(frames[-1:], batch - n, axis=0)])
        x = torch.from_numpy(np.ascontiguousarray(frames))
        if self.device.type == "cuda":
            # From pageable memory the copy would wait for all queued GPU work.
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return self.encode_images(x, n)

    @torch.no_grad()
    def encode_images(self, x: torch.Tensor, keep: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Like ``encode_frames`` for (N, 3, H, W) float images in [0, 1] already
        on the device (training conditions on exactly what inference sees);
        only the first ``keep`` frames are wanted (the rest pad a batch)."""
        n = x.shape[0] if keep is None else keep
        with self._timed("clip"), self._resident(self.image_encoder):
            emb = self._clip_call(x)[:n]
        with self._timed("encode"):
            latents = self._encode_call(x)[:n]
        return emb, latents

    def _clip_embed(self, x: torch.Tensor) -> torch.Tensor:
        y = self._clip_resize(x * 2.0 - 1.0)
        y = ((y + 1.0) / 2.0 - self._clip_mean) / self._clip_std
        return self.image_encoder(y.to(self.dtype)).image_embeds.unsqueeze(1).to(self.dtype)

    def _encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        if self._split is not None:
            self._split.size(*x.shape[-2:])
        rgb = (x * 2.0 - 1.0).to(self.speed.encoder_dtype)
        if self.speed.channels_last:
            rgb = rgb.contiguous(memory_format=torch.channels_last)
        moments = self._encoder(rgb)
        # Posterior mode, unscaled, no noise augmentation (as released).
        return moments.chunk(2, dim=1)[0].to(self.dtype)

    def _clip_resize(self, x: torch.Tensor) -> torch.Tensor:
        """SVD's ``_resize_with_antialiasing`` to the CLIP size, with its blur
        kernels kept on the device."""
        key = tuple(x.shape[-2:])
        if key not in self._blur:
            self._blur[key] = tuple(k.to(self.device) for k in antialias_kernels(*key, self._clip_size))
        kernel_x, kernel_y = self._blur[key]
        x = _filter2d(_filter2d(x, kernel_x), kernel_y)
        return torch.nn.functional.interpolate(x, size=(self._clip_size, self._clip_size), mode="bicubic",
                                               align_corners=True)

    @torch.no_grad()
    def predict_window(
        self, emb: torch.Tensor, rgb_latents: torch.Tensor, previous: torch.Tensor | None
    ) -> torch.Tensor:
        """One single-step prediction for a window: emb (F, 1, D), rgb_latents
        (F, 4, h, w), previous (n, 4, h, w) latents of the overlap or None.
        Returns (F, 4, h, w) normal latents, overlap blended."""
        with self._timed("unet"), self._resident(self.unet):
            sched = self.scheduler
            sched.set_timesteps(1, device="cpu")  # host-side: no device round trip
            t = sched.timesteps[0]
            latents = torch.zeros((1, *rgb_latents.shape), dtype=self.dtype, device=self.device)
            if previous is not None:
                latents[:, : previous.shape[0]] = previous
            model_in = torch.cat([sched.scale_model_input(latents, t), rgb_latents[None]], dim=2)
            out = self._unet_call(model_in, emb)
            latents = sched.step(out, t, latents).prev_sample
            if previous is not None:
                n = previous.shape[0]
                latents[:, :n] = blend(previous[None], latents[:, :n])
        return latents[0]

    @torch.no_grad()
    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, 4, h, w) latents -> (n, 3, H, W) float32 in [-1, 1]."""
        with self._timed("decode"):
            return self._decode_call(latents)

    def _unet_forward(self, model_in: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.unet(model_in, self._timestep, encoder_hidden_states=emb, added_time_ids=self._time_ids,
                         return_dict=False)[0]

    def _decode_forward(self, latents: torch.Tensor) -> torch.Tensor:
        if self._split is not None:
            self._split.size(latents.shape[-2] * self._vae_scale, latents.shape[-1] * self._vae_scale)
        z = latents.to(self.dtype) / self.vae.config.scaling_factor
        if self.speed.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        # What AutoencoderKLTemporalDecoder.decode does: one clip of
        # z.shape[0] frames.
        indicator = torch.zeros(1, z.shape[0], dtype=z.dtype, device=z.device)
        img = self.vae.decoder(z, image_only_indicator=indicator, num_frames=z.shape[0]).float()
        return (img / 2 + 0.5).clamp(0, 1) * 2 - 1

    def _resident(self, module: torch.nn.Module):
        return self._offload.resident(module) if self._offload is not None else contextlib.nullcontext()

    # -- the clip loop ------------------------------------------------------
    def stream(
        self,
        frames: Iterable[np.ndarray],
        num_frames: int,
        window: int = 14,
        stride: int = 10,
        decode_chunk: int = 7,
        should_stop: Callable[[], bool] | None = None,
        skip: Callable[[int], bool] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, normals)`` for each frame in order; ``normals`` is an
        (H, W, 3) float32 array in [-1, 1] in the model's own axis convention,
        at the size of the input frames. ``frames`` are (H, W, 3) uint8 RGB of
        one size; only about ``window + decode_chunk`` of them are held at once.
        A decode chunk whose frames all satisfy ``skip`` is not decoded and
        yields nothing (resuming: the windows still run, since each feeds the
        next, but the costly decode of finished frames is saved).

        With ``speed.overlap`` the loop runs in a worker thread up to two
        decoded chunks ahead of the consumer, so whatever the consumer does
        with a frame (writing a file) overlaps the device's work.
        """
        yield from self.stream_plan(frames, plan_chunk(num_frames, 0, num_frames, 0, window, stride, decode_chunk),
                                    should_stop, skip)

    def stream_plan(
        self,
        frames: Iterable[np.ndarray],
        plan: ChunkPlan,
        should_stop: Callable[[], bool] | None = None,
        skip: Callable[[int], bool] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``stream`` for what ``plan`` runs (the whole clip, or a chunk of
        it: chunks.py): ``frames`` are the clip's frames ``plan.read_start``
        to ``plan.read_end``; yields ``(index, normals)`` for the frames
        ``plan.start`` to ``plan.end``, indices counted from the clip's
        first frame, as ``skip`` takes them."""
        chunks = self._chunks(frames, plan, should_stop, skip)
        if self.speed.overlap:
            chunks = background(chunks, depth=2)
        for start, host, ready in chunks:
            if ready is not None:
                ready.synchronize()
            # Views into the chunk's array, which they keep alive.
            arrays = host.numpy()
            for j in range(arrays.shape[0]):
                if plan.start <= start + j < plan.end:
                    yield start + j, arrays[j]

    def _chunks(
        self,
        frames: Iterable[np.ndarray],
        plan: ChunkPlan,
        should_stop: Callable[[], bool] | None,
        skip: Callable[[int], bool] | None,
    ) -> Iterator[tuple[int, torch.Tensor, torch.cuda.Event | None]]:
        """The clip loop: yields ``(first index, (n, H, W, 3) float32 host
        tensor, event)`` per decoded chunk; the host tensor is complete once
        ``event`` (None when the copy was synchronous) has completed."""
        dc, n = plan.decode_chunk, plan.num_frames
        # With overlap, frames are read (video decoding, resizing) in a thread
        # of their own, a chunk ahead, while this one launches device work.
        source = background(iter(frames), depth=dc) if self.speed.overlap else iter(frames)
        pad = None
        emb_cache: dict[int, torch.Tensor] = {}
        lat_cache: dict[int, torch.Tensor] = {}
        pred: dict[int, torch.Tensor] = {}  # normal latents of frames not yet decoded
        read, decoded = plan.read_start, plan.decode_start
        for win, frontier in zip(plan.windows, plan.frontiers):
            if should_stop is not None and should_stop():
                return
            # Encode in chunks aligned to multiples of decode_chunk from frame 0,
            # as the release does: batch composition changes conv numerics.
            need = grid_end(win.end, dc, n)
            with self._resident(self.image_encoder):
                while read < need:
                    t0 = time.perf_counter()
                    batch, pad = take_padded(source, min(dc, need - read), pad, read, n)
                    self.times.read += time.perf_counter() - t0
                    e, z = self.encode_frames(batch, dc)
                    for j in range(e.shape[0]):
                        emb_cache[read + j] = e[j]
                        lat_cache[read + j] = z[j]
                    read += len(batch)
            idx = range(win.start, win.end)
            previous = torch.stack([pred[i] for i in range(win.start, win.start + win.overlap)]) if win.overlap else None
            out = self.predict_window(
                torch.stack([emb_cache[i] for i in idx]), torch.stack([lat_cache[i] for i in idx]), previous
            )
            for j, i in enumerate(idx):
                pred[i] = out[j]
            for i in [i for i in emb_cache if i < frontier]:
                del emb_cache[i], lat_cache[i]
            # Final latents before the plan's first decode chunk are context only.
            for i in [i for i in pred if i < min(frontier, plan.decode_start)]:
                del pred[i]
            while decoded < plan.decode_end and decoded < frontier and (decoded + dc <= frontier or frontier == n):
                end = min(decoded + dc, n)
                latents = [pred.pop(i) for i in range(decoded, end)]
                wanted = range(max(decoded, plan.start), min(end, plan.end))
                if skip is not None and all(skip(i) for i in wanted):
                    decoded = end
                    continue
                # A short last chunk's shapes come once per clip: not worth a search.
                with no_algorithm_search() if end - decoded < dc else contextlib.nullcontext():
                    decoded_chunk = self.decode_chunk(torch.stack(latents))
                imgs = unpad(decoded_chunk, pad).permute(0, 2, 3, 1)
                yield (decoded, *self._to_host(imgs))
                decoded = end

    def _to_host(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """Copy to host memory; on CUDA with overlap, asynchronously into
        pinned memory, so the device goes on with the next window."""
        imgs = imgs.contiguous()
        if self.device.type != "cuda" or not self.speed.overlap:
            return imgs.cpu(), None
        host = torch.empty(imgs.shape, dtype=imgs.dtype, pin_memory=True)
        host.copy_(imgs, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return host, ready

    def __call__(self, frames: np.ndarray, window: int = 14, stride: int = 10, decode_chunk: int = 7) -> np.ndarray:
        """Whole clip in, whole clip out: (F, H, W, 3) uint8 -> (F, H, W, 3) float32."""
        out = np.empty(frames.shape[:3] + (3,), dtype=np.float32)
        for i, n in self.stream(list(frames), len(frames), window, stride, decode_chunk):
            out[i] = n
        return out


class _StageTimer:
    def __init__(self, pipe: NormalCrafterPipeline, stage: str) -> None:
        self.pipe, self.stage = pipe, stage

    def __enter__(self) -> None:
        if self.pipe.profile and self.pipe.device.type == "cuda":
            torch.cuda.synchronize(self.pipe.device)
        self.t0 = time.perf_counter()

    def __exit__(self, *exc) -> None:
        if self.pipe.profile and self.pipe.device.type == "cuda":
            torch.cuda.synchronize(self.pipe.device)
        setattr(self.pipe.times, self.stage, getattr(self.pipe.times, self.stage) + time.perf_counter() - self.t0)
