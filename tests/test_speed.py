"""Execution choices (accel.Speed) and host/device overlap (overlap.py): they
change how the pipeline runs, never what it computes beyond rounding."""
import threading
import time

import numpy as np
import pytest
import torch

from normalcrafter.accel import Speed
from normalcrafter.model.loading import load_components
from normalcrafter.overlap import BackgroundWriter, background
from normalcrafter.pipeline import NormalCrafterPipeline


def clip(n, h=40, w=72, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def reference(tiny_model):
    frames = clip(23)
    pipe = NormalCrafterPipeline(load_components(str(tiny_model)), "cpu", torch.float32)
    return frames, pipe(frames, window=8, stride=6, decode_chunk=5)


def test_fp32_defaults_keep_the_release_path():
    sp = Speed().resolve(torch.device("cpu"), torch.float32, force_upcast=True)
    assert not sp.channels_last and not sp.compile and not sp.overlap and not sp.offload
    assert sp.decode_split == 0 and sp.encoder_dtype == torch.float32 and not sp.cudnn_benchmark
    # fp16 without a bf16-capable GPU keeps the release's fp32 encoder.
    assert Speed().resolve(torch.device("cpu"), torch.float16, True).encoder_dtype == torch.float32
    assert Speed(encoder_dtype="bf16").resolve(torch.device("cpu"), torch.float16, True).encoder_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="encoder_dtype"):
        Speed(encoder_dtype="fp8").resolve(torch.device("cpu"), torch.float16, True)


def test_gpu_half_defaults_pair_channels_last_with_a_matching_group_norm():
    """NHWC only with a GroupNorm made for it: the Triton one, eager or
    compiled, or inductor's when compiling without it (resolution only;
    nothing runs on a GPU here)."""
    pytest.importorskip("triton", reason="Triton is not installed (requirements/test.txt pins it)")
    cuda = torch.device("cuda")
    eager = Speed().resolve(cuda, torch.float16, True)
    # The split follows the frame size (FrameSplit); the low-memory mode keeps one frame.
    assert eager.channels_last and eager.nhwc_group_norm and not eager.compile and eager.decode_split is None
    assert Speed(offload=True).resolve(cuda, torch.float16, True).decode_split == 1
    assert eager.full_batches and not Speed().resolve(torch.device("cpu"), torch.float32, True).full_batches
    compiled = Speed(compile=True).resolve(cuda, torch.float16, True)
    assert compiled.channels_last and compiled.nhwc_group_norm
    inductor = Speed(compile=True, nhwc_group_norm=False).resolve(cuda, torch.float16, True)
    assert inductor.channels_last and not inductor.nhwc_group_norm
    plain = Speed(nhwc_group_norm=False).resolve(cuda, torch.float16, True)
    assert not plain.channels_last and not plain.nhwc_group_norm


def test_cuda_graphs_only_on_cuda_and_never_with_offload():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert Speed().resolve(cuda, torch.float16, True).cuda_graphs
    assert Speed(compile=True).resolve(cuda, torch.bfloat16, True).cuda_graphs
    assert not Speed().resolve(cuda, torch.float32, True).cuda_graphs
    assert not Speed(offload=True).resolve(cuda, torch.float16, True).cuda_graphs
    assert not Speed(cuda_graphs=True).resolve(cpu, torch.float16, True).cuda_graphs
    assert not Speed(cuda_graphs=False).resolve(cuda, torch.float16, True).cuda_graphs


def test_overlapped_stream_is_bit_identical(tiny_model, reference):
    frames, ref = reference
    pipe = NormalCrafterPipeline(load_components(str(tiny_model)), "cpu", torch.float32, Speed(overlap=True))
    out = pipe(frames, window=8, stride=6, decode_chunk=5)
    assert np.array_equal(out, ref)


def test_layout_and_split_decoder_change_only_rounding(tiny_model, reference):
    frames, ref = reference
    speed = Speed(channels_last=True, decode_split=2, offload=True)
    pipe = NormalCrafterPipeline(load_components(str(tiny_model)), "cpu", torch.float32, speed)
    assert pipe.speed.offload and pipe.speed.decode_split == 2
    out = pipe(frames, window=8, stride=6, decode_chunk=5)
    assert out.shape == ref.shape
    # fp32 rounding of other convolution algorithms (oneDNN picks them by
    # layout, batch and thread count), amplified by a random net; a wrong
    # split or layout would be off by tenths.
    diff = np.abs(out - ref)
    assert diff.mean() < 5e-4 and diff.max() < 5e-3


def test_lean_decoder_and_split_encoder_are_exact_in_float64(tiny_model):
    """Running the per-frame layers a few frames at a time, the upsamplers
    fused into the next layer and the temporal layers in place is the same
    arithmetic: in float64 nothing but summation order can differ."""
    from normalcrafter.accel import split_frames
    from normalcrafter.lean_decoder import lean_decoder

    vae = load_components(str(tiny_model), torch.float64).vae
    keys = set(vae.state_dict())
    z = torch.randn(5, 4, 8, 12, dtype=torch.float64)
    x = torch.randn(5, 3, 64, 96, dtype=torch.float64)
    indicator = torch.zeros(1, 5, dtype=torch.float64)
    encoder = torch.nn.Sequential(vae.encoder, vae.quant_conv)
    with torch.no_grad():
        whole_dec = vae.decoder(z, image_only_indicator=indicator, num_frames=5)
        whole_enc = encoder(x)
        lean_decoder(vae.decoder, 2)
        split_frames(encoder, 2)
        assert torch.allclose(vae.decoder(z, image_only_indicator=indicator, num_frames=5), whole_dec, atol=1e-12)
        assert torch.allclose(encoder(x), whole_enc, atol=1e-12)
    assert set(vae.state_dict()) == keys


def test_frame_split_takes_whole_chunks_only_at_small_sizes():
    """The automatic split: a 7-frame chunk whole at 512x288 (padded to
    512x320) and at smaller sizes, one frame at a time at 1024x576 and at
    sizes between (a count between 1 and 7 would leave a remainder call of
    another shape in every chunk); a fixed split is fixed."""
    from normalcrafter.accel import FrameSplit

    auto = FrameSplit()
    expected = {(320, 512): {7: 7, 6: 6}, (192, 256): {7: 7}, (576, 1024): {7: 1}, (448, 768): {7: 1}}
    for (height, width), counts in expected.items():
        auto.size(height, width)
        for n, frames in counts.items():
            assert auto.frames(n) == frames, (height, width, n)
    fixed = FrameSplit(2)
    fixed.size(320, 512)
    assert fixed.frames(7) == 2 and FrameSplit(2).frames(7) == 2
    with pytest.raises(ValueError):
        FrameSplit(0)


def test_split_follows_the_size_set_per_call(tiny_model):
    """One VAE, two frame sizes: the encoder's and the decoder's per-frame
    layers take the whole batch at the small size and one frame at a time
    at the large one, with the same results either way (float64)."""
    from normalcrafter.accel import FrameSplit, split_frames
    from normalcrafter.lean_decoder import lean_decoder

    vae = load_components(str(tiny_model), torch.float64).vae
    encoder = torch.nn.Sequential(vae.encoder, vae.quant_conv)
    seen: list[int] = []
    for layer in (vae.encoder.conv_in, vae.decoder.up_blocks[-1].resnets[0].spatial_res_block):
        layer.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    small, large = (32, 48), (64, 96)
    inputs = {size: (torch.randn(5, 3, *size, dtype=torch.float64),
                     torch.randn(5, 4, size[0] // 8, size[1] // 8, dtype=torch.float64)) for size in (small, large)}
    indicator = torch.zeros(1, 5, dtype=torch.float64)
    with torch.no_grad():
        whole = {size: (encoder(x), vae.decoder(z, image_only_indicator=indicator, num_frames=5))
                 for size, (x, z) in inputs.items()}
        split = FrameSplit(pixels=5 * small[0] * small[1])
        lean_decoder(vae.decoder, split)
        split_frames(encoder, split)
        for size, frames_per_call in ((small, 5), (large, 1), (small, 5)):
            x, z = inputs[size]
            seen.clear()
            split.size(*size)
            enc = encoder(x)
            dec = vae.decoder(z, image_only_indicator=indicator, num_frames=5)
            assert set(seen) == {frames_per_call}, (size, seen)
            assert torch.allclose(enc, whole[size][0], atol=1e-12)
            assert torch.allclose(dec, whole[size][1], atol=1e-12)


def test_shape_router_compiles_one_frame_count_per_size():
    """Compiled code for the first frame count met at each size (the clip's
    chunks); other counts at that size (a short tail) run eagerly."""
    from normalcrafter.accel import ShapeRouted

    calls: list[tuple[str, tuple[int, ...]]] = []
    router = ShapeRouted(lambda x: calls.append(("fast", tuple(x.shape))),
                         lambda x: calls.append(("slow", tuple(x.shape))))
    for shape in [(7, 4, 8, 8), (3, 4, 8, 8), (1, 4, 16, 16), (7, 4, 16, 16), (7, 4, 8, 8), (1, 4, 16, 16),
                  (1, 4, 7, 8, 8), (1, 4, 3, 8, 8)]:
        router(torch.zeros(shape))
    assert [c[0] for c in calls] == ["fast", "slow", "fast", "slow", "fast", "fast", "fast", "slow"]


def test_full_batches_pad_a_short_last_batch(tiny_model, reference):
    """With ``full_batches`` the clip's last, short encoder batch reaches CLIP
    and the VAE encoder as a full one (so it replays the full batches'
    graphs on a GPU); only rounding changes."""
    frames, ref = reference  # 23 frames in chunks of 5: the last batch has 3
    pipe = NormalCrafterPipeline(load_components(str(tiny_model)), "cpu", torch.float32, Speed(full_batches=True))
    sizes = {"clip": [], "encode": []}
    for name, attr in (("clip", "_clip_call"), ("encode", "_encode_call")):
        inner = getattr(pipe, attr)
        setattr(pipe, attr, lambda x, inner=inner, name=name: sizes[name].append(x.shape[0]) or inner(x))
    out = pipe(frames, window=8, stride=6, decode_chunk=5)
    assert sizes["clip"] == [5] * 5 and sizes["encode"] == [5] * 5
    diff = np.abs(out - ref)
    assert diff.mean() < 5e-4 and diff.max() < 5e-3


def test_short_last_chunk_decodes_without_algorithm_search(tiny_model, monkeypatch):
    """cuDNN's per-shape search stays on for the chunks of full length and is
    off for the clip's short last one, whose shapes come once per clip."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    pipe = NormalCrafterPipeline(load_components(str(tiny_model)), "cpu", torch.float32)
    searched = []
    decode = pipe.decode_chunk
    pipe.decode_chunk = lambda z: searched.append((z.shape[0], torch.backends.cudnn.benchmark)) or decode(z)
    pipe(clip(13), window=8, stride=6, decode_chunk=5)
    assert searched == [(5, True), (5, True), (3, False)]
    assert torch.backends.cudnn.benchmark


def test_lean_decoder_holds_less_at_its_peak(tiny_model):
    """What it is for: the decoder's largest live set. Measured as the peak
    of live tensor bytes over a float32 decode (a dispatch mode that counts
    every tensor the decoder creates until it is freed)."""
    from normalcrafter.lean_decoder import lean_decoder

    vae = load_components(str(tiny_model)).vae
    z = torch.randn(6, 4, 16, 24)
    indicator = torch.zeros(1, 6)
    with torch.no_grad():
        before = _peak_live_bytes(lambda: vae.decoder(z, image_only_indicator=indicator, num_frames=6))
        lean_decoder(vae.decoder, 1)
        after = _peak_live_bytes(lambda: vae.decoder(z, image_only_indicator=indicator, num_frames=6))
    # One tensor of the last level: 6 frames x 32 channels x 128 x 192 floats.
    full = 6 * 32 * 128 * 192 * 4
    assert before - after > 1.5 * full, (before / full, after / full)


def _peak_live_bytes(fn) -> int:
    import weakref

    from torch.utils._python_dispatch import TorchDispatchMode

    live: dict[int, int] = {}
    state = {"now": 0, "peak": 0}

    def gone(key: int) -> None:
        state["now"] -= live.pop(key)

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    key = storage.data_ptr()
                    if key not in live and storage.nbytes():
                        live[key] = storage.nbytes()
                        state["now"] += storage.nbytes()
                        state["peak"] = max(state["peak"], state["now"])
                        weakref.finalize(storage, gone, key)
            return out

    with Count():
        fn()
    return state["peak"]


def test_background_yields_in_order_and_reraises():
    assert list(background(iter(range(10)), depth=2)) == list(range(10))

    def failing():
        yield 1
        raise KeyError("boom")

    got = []
    with pytest.raises(KeyError, match="boom"):
        for x in background(failing()):
            got.append(x)
    assert got == [1]


def test_background_stops_its_worker_when_the_consumer_stops():
    produced = []
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                produced.append(i)
                yield i
                i += 1
        finally:
            closed.set()

    stream = background(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert closed.wait(5)
    # bounded read-ahead: the worker never ran far ahead of the consumer
    assert len(produced) <= 3 + 2 + 1


def test_background_writer_reports_in_order_and_raises_first_error():
    done = []

    def slow(i):
        time.sleep(0.02 * (5 - i))
        return i

    with BackgroundWriter(workers=3, pending=4) as w:
        for i in range(5):
            w.submit(slow, i, then=done.append)
    assert done == list(range(5))

    def bad(i):
        if i == 2:
            raise OSError("disk full")
        return i

    w = BackgroundWriter(workers=2)
    with pytest.raises(OSError, match="disk full"):
        for i in range(6):
            w.submit(bad, i)
        w.close()
    w.abort()


def test_background_writer_in_processes():
    done = []
    with BackgroundWriter(workers=2, processes=True) as w:
        for i in range(4):
            w.submit(pow, i, 2, then=done.append)
    assert done == [0, 1, 4, 9]
    w = BackgroundWriter(workers=1, processes=True)
    with pytest.raises(ValueError):
        w.submit(int, "not a number")
        w.close()
    w.abort()


def test_background_writer_passes_large_arrays_through_shared_memory(monkeypatch):
    """Frames reach writer processes through shared memory: copied once at
    submission (later changes in the caller do not reach the job), the
    blocks reused job after job, and unlinked when the writer closes; small
    arrays, and large ones where no block can be had, are pickled."""
    from multiprocessing.shared_memory import SharedMemory

    from normalcrafter import overlap
    from writer_jobs import describe

    frame = np.arange(600 * 800 * 3, dtype=np.float32).reshape(600, 800, 3)
    want = float(frame.astype(np.float64).sum())
    done = []
    w = BackgroundWriter(workers=2, pending=2, processes=True)
    for i in range(8):
        w.submit(describe, frame, f"frame {i}", then=done.append)
    w.submit(describe, frame[:10], "small", then=done.append)
    frame[:] = 0  # after submission: the jobs have their copies
    w.wait()
    names = [b.name for b in w._blocks._all]
    assert len(names) <= 3  # reused, not one per job
    w.close()
    assert done[:8] == [(want, (600, 800, 3), "<f4", True, f"frame {i}") for i in range(8)]
    assert done[8][3] is False  # 96 KB: pickled
    for name in names:
        with pytest.raises(FileNotFoundError):
            SharedMemory(name)

    # A /dev/shm without room for the block (as in a container): pickled.
    monkeypatch.setattr(overlap.os, "statvfs", lambda path: type("S", (), {"f_bavail": 1, "f_frsize": 4096})())
    with BackgroundWriter(workers=1, processes=True) as w:
        w.submit(describe, np.ones((600, 800, 3), np.float32), "x", then=done.append)
    assert done[-1] == (600 * 800 * 3.0, (600, 800, 3), "<f4", False, "x")


def test_regional_compile_matches_eager_without_graph_breaks(tiny_model, reference):
    """The compiled path (inductor's C++ backend here, Triton on a GPU) runs
    every block compiled, with no graph break, and computes the same as eager
    up to the rounding of fused operations; a short tail chunk runs eagerly
    rather than recompiling."""
    import torch._dynamo.utils as dynamo_utils

    frames, ref = reference
    torch._dynamo.reset()
    dynamo_utils.counters.clear()
    # With the GPU's layout and GroupNorm routing too (on the CPU the GroupNorm
    # op runs PyTorch's; here it must go through compilation as one opaque op).
    pipe = NormalCrafterPipeline(load_components(str(tiny_model)), "cpu", torch.float32,
                                 Speed(compile=True, decode_split=2, channels_last=True, nhwc_group_norm=True))
    routers = [m.forward for m in list(pipe.unet.modules()) + list(pipe.vae.modules())
               if type(m.forward).__name__ == "ShapeRouted"]
    assert len(routers) > 20
    out = pipe(frames, window=8, stride=6, decode_chunk=5)  # 23 frames: the last chunk has 3
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    assert graphs > 10 and not dynamo_utils.counters["graph_break"]
    assert all(r.failure is None for r in routers)
    diff = np.abs(out - ref)
    assert diff.mean() < 5e-4 and diff.max() < 5e-3
    # A second clip of the same size reuses every compiled block.
    assert np.array_equal(pipe(frames, window=8, stride=6, decode_chunk=5), out)
    assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs
    torch._dynamo.reset()


def test_job_writes_frames_in_processes_identically(tiny_model, tmp_path, monkeypatch):
    """On a GPU the job writes frame files in other processes; forced here on
    the CPU, the files and the order of events are those of the plain path."""
    from media import moving_clip, write_video
    from normalcrafter import job
    from normalcrafter.io.writers import read_exr_normals

    video = write_video(tmp_path / "clip.mp4", moving_clip(12, 32, 48))
    settings = dict(model=str(tiny_model), device="cpu", window=6, stride=4, decode_chunk=3)
    results = {}
    for procs in (0, 2):
        monkeypatch.setattr(job, "writer_processes", lambda device_type, n=procs: n)
        events = []
        r = job.run_estimate(video, tmp_path / f"out{procs}", job.EstimateSettings(**settings),
                             on_event=events.append)
        frames = [e["frame"] for e in events if e["type"] == "file"]
        progress = [e["done"] for e in events if e["type"] == "progress"]
        assert frames == list(range(12)) and progress == list(range(1, 13)) and r["frames"] == 12
        results[procs] = [read_exr_normals(tmp_path / f"out{procs}" / f"normal.{i:05d}.exr")[0] for i in range(12)]
    assert all(np.array_equal(a, b) for a, b in zip(results[0], results[2]))


def test_compile_setting_reaches_the_pipeline(tiny_model):
    """`normalcrafter estimate --compile` and the worker's "compile": true ask
    the pipeline cache for a compiled pipeline, kept apart from a plain one."""
    import argparse

    from normalcrafter.errors import NormalCrafterError
    from normalcrafter.estimate_cli import add_arguments, settings_from_args
    from normalcrafter.job import EstimateSettings, PipelineCache

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert settings_from_args(parser.parse_args(["in.mp4", "-o", "out", "--compile"])).compile
    assert EstimateSettings.from_dict({"compile": True}).compile
    with pytest.raises(NormalCrafterError, match="compile must be true or false"):
        EstimateSettings.from_dict({"compile": "yes"})
    cache = PipelineCache()
    compiled, _ = cache.get(str(tiny_model), "cpu", "fp32", compile=True)
    assert compiled.speed.compile
    plain, cached = cache.get(str(tiny_model), "cpu", "fp32")
    assert not cached and not plain.speed.compile and cache.loads == 2


def test_wide_head_attention_computes_what_sdpa_does(tiny_model):
    """The products-and-softmax attention for the VAE's wide one-head
    attention: the same output as diffusers' SDPA processor."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from normalcrafter.wide_attention import WideHeadAttention, use_wide_head_attention

    vae = load_components(str(tiny_model)).vae
    attn = vae.decoder.mid_block.attentions[0]
    x = torch.randn(3, attn.inner_dim, 6, 10)
    with torch.no_grad():
        ref = AttnProcessor2_0()(attn, x)
        out = WideHeadAttention()(attn, x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # Only heads wider than flash kernels take are given it.
    assert use_wide_head_attention(vae) == 0
    wide = Attention(512, heads=1, dim_head=512, norm_num_groups=32, residual_connection=True, bias=True,
                     upcast_softmax=True, _from_deprecated_attn_block=True)
    assert use_wide_head_attention(wide) == 1 and isinstance(wide.processor, WideHeadAttention)


def test_transformer_outputs_become_channels_last():
    """diffusers' spatio-temporal transformer returns NCHW (it ends with
    .contiguous()); patched, the same values come back channels-last, as a
    tuple or as its output class, so the GroupNorms after it keep the NHWC path."""
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

    from normalcrafter.accel import channels_last_outputs

    torch.manual_seed(0)
    block = TransformerSpatioTemporalModel(num_attention_heads=2, attention_head_dim=16, in_channels=32,
                                           num_layers=1, cross_attention_dim=8)
    x = torch.randn(4, 32, 5, 6).contiguous(memory_format=torch.channels_last)
    context = torch.randn(4, 1, 8)
    indicator = torch.zeros(1, 4)
    with torch.no_grad():
        before = block(x, encoder_hidden_states=context, image_only_indicator=indicator, return_dict=False)[0]
        assert before.is_contiguous()
        assert channels_last_outputs(torch.nn.Sequential(block), ("TransformerSpatioTemporalModel",)) == 1
        as_tuple = block(x, encoder_hidden_states=context, image_only_indicator=indicator, return_dict=False)[0]
        as_output = block(x, encoder_hidden_states=context, image_only_indicator=indicator).sample
    for out in (as_tuple, as_output):
        assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
        assert torch.equal(out, before)


def test_one_token_cross_attention_is_the_attention_it_replaces(tiny_model):
    """The UNet's cross-attention to one CLIP token, computed as that token's
    value broadcast, against diffusers' processor (float64): the same
    outputs, and the same gradients for every weight (the query and key
    projections get none either way)."""
    from diffusers.models.attention_processor import Attention

    from normalcrafter.context_attention import OneTokenCrossAttention, use_one_token_cross_attention

    unet = load_components(str(tiny_model), torch.float64).unet
    cross = [m for m in unet.modules() if isinstance(m, Attention) and m.is_cross_attention]
    # Every transformer block of the UNet has a spatial and a temporal one.
    assert len(cross) >= 2 and use_one_token_cross_attention(unet) == len(cross)
    attn = cross[0].requires_grad_(True)
    assert isinstance(attn.processor, OneTokenCrossAttention)
    x = torch.randn(3, 50, attn.query_dim, dtype=torch.float64)
    # A context per sample (the spatial blocks'), and one broadcast over all
    # samples as a view (the temporal blocks' first-frame context).
    for context in (torch.randn(3, 1, attn.cross_attention_dim, dtype=torch.float64),
                    torch.randn(1, 1, attn.cross_attention_dim, dtype=torch.float64).expand(3, 1, -1)):
        results = []
        for processor in (attn.processor.fallback, attn.processor):
            attn.set_processor(processor)
            attn.zero_grad()
            out = attn(x, encoder_hidden_states=context)
            (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
            results.append((out.detach().clone(), {n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                                   for n, p in attn.named_parameters()}))
        (ref, ref_grads), (got, got_grads) = results
        assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-12)
        for name, grad in ref_grads.items():
            assert torch.allclose(got_grads[name], grad, atol=1e-10), name
        assert not got_grads["to_q.weight"].any() and ref_grads["to_q.weight"].abs().max() < 1e-12
    # A longer context goes to the processor it replaced.
    longer = torch.randn(3, 4, attn.cross_attention_dim, dtype=torch.float64)
    with torch.no_grad():
        via_fallback = attn(x, encoder_hidden_states=longer)
        attn.set_processor(attn.processor.fallback)
        assert torch.equal(via_fallback, attn(x, encoder_hidden_states=longer))
