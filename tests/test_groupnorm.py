"""GroupNorm by rows of channels (groupnorm.py). Its Triton kernels run
without a GPU under Triton's interpreter, in a subprocess because the
interpreter is chosen when Triton is first imported; with a GPU, compiled
for it."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from normalcrafter.groupnorm import group_norm_nhwc, use_nhwc_group_norm

CHECK = textwrap.dedent("""
    import sys
    import torch, torch.nn.functional as F
    from normalcrafter.groupnorm import rows_group_norm
    torch.manual_seed(0)
    torch.set_default_device(sys.argv[1])
    cases = [((2, 128, 9, 13), torch.channels_last), ((1, 320, 5, 7), torch.channels_last),
             ((1, 64, 3, 4, 5), torch.channels_last_3d), ((1, 1280, 3, 2), torch.channels_last),
             # Enough pixels for several blocks per program and more programs
             # than the merge reads at once, with a partial last block.
             ((1, 128, 255, 301), torch.channels_last)]
    for shape, layout in cases:
        # A large mean: the variance must not cancel away.
        x = (torch.randn(shape) * 3 + 50).contiguous(memory_format=layout)
        w, b = torch.randn(shape[1]), torch.randn(shape[1])
        # Against float64 (PyTorch's own fp32 GroupNorm is off by 3e-4 here).
        ref = F.group_norm(x.double(), 32, w.double(), b.double(), 1e-6)
        y = rows_group_norm(x, 32, w, b, 1e-6)
        assert y.is_contiguous(memory_format=layout), shape
        assert (y.double() - ref).abs().max() < 2e-5, (shape, (y.double() - ref).abs().max())
        x16 = x.half()
        ref16 = F.group_norm(x16.double(), 32, w.half().double(), b.half().double(), 1e-6)
        y16 = rows_group_norm(x16, 32, w.half(), b.half(), 1e-6)
        assert y16.dtype == torch.float16
        # fp16 rounding of the output only (|y| < 16: half an ulp <= 2**-7).
        assert (y16.double() - ref16).abs().max() <= 2 ** -7, (shape, (y16.double() - ref16).abs().max())
    x = torch.randn(1, 64, 4, 4).contiguous(memory_format=torch.channels_last)
    plain = rows_group_norm(x, 32, None, None, 1e-5)
    assert (plain.double() - F.group_norm(x.double(), 32, eps=1e-5)).abs().max() < 2e-5
    # The statistics loop's unrolling (a non-divisor of its length too) and
    # the warps per program change nothing but summation order.
    from normalcrafter.groupnorm import rows_scale_shift
    x = (torch.randn(1, 128, 255, 301) * 3 + 50).contiguous(memory_format=torch.channels_last)
    ref = rows_scale_shift(x, 32, None, None, 1e-6, unroll=1)
    for unroll, warps in ((3, None), (4, None), (1, 4), (1, 8), (2, 2)):
        got = rows_scale_shift(x, 32, None, None, 1e-6, unroll=unroll, num_warps=warps)
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, ref)), (unroll, warps)
    print("ok")
""")


def test_kernels_match_group_norm():
    pytest.importorskip("triton", reason="Triton is not installed (requirements/test.txt pins it)")
    gpu = torch.cuda.is_available()
    env = dict(os.environ) if gpu else dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", CHECK, "cuda" if gpu else "cpu"], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_statistics_warps_follow_the_block_width():
    """4 warps up to 1,024 channels per block, 8 beyond (timed on the H100)."""
    from normalcrafter.groupnorm import stats_warps

    assert [stats_warps(c) for c in (128, 512, 1024, 2048, 4096)] == [4, 4, 4, 8, 8]


def test_op_falls_back_to_pytorch_off_the_gpu():
    """fp32, NCHW or CPU tensors take PyTorch's own GroupNorm, bit for bit."""
    x = torch.randn(2, 64, 5, 6)
    w, b = torch.randn(64), torch.randn(64)
    for t in (x, x.contiguous(memory_format=torch.channels_last), x.half()):
        assert torch.equal(group_norm_nhwc(t, 32, w.to(t.dtype), b.to(t.dtype), 1e-5),
                           F.group_norm(t, 32, w.to(t.dtype), b.to(t.dtype), 1e-5))


def test_routing_keeps_weights_and_results(tiny_model):
    from normalcrafter.model.loading import load_components

    vae = load_components(str(tiny_model)).vae
    keys = set(vae.state_dict())
    z = torch.randn(3, 4, 8, 12)
    with torch.no_grad():
        before = vae.decode(z, num_frames=3).sample
        assert use_nhwc_group_norm(vae) > 10
        after = vae.decode(z, num_frames=3).sample
    assert set(vae.state_dict()) == keys
    # On the CPU the op is PyTorch's GroupNorm; only the thread split of
    # some PyTorch builds' kernels may differ (a wrong routing is off by far more).
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)


def test_a_failing_triton_build_falls_back_for_good(monkeypatch):
    """Where Triton cannot build for a GPU, the first failure warns once and
    PyTorch's GroupNorm serves every later call; running out of memory is
    not such a failure and propagates."""
    from normalcrafter import groupnorm

    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("no kernel image for this GPU")

    monkeypatch.setattr(groupnorm, "_broken", [])
    x = torch.randn(1, 64, 4, 4)
    with pytest.warns(RuntimeWarning, match="no kernel image"):
        assert groupnorm._try(broken, x, 32, None, None, 1e-5) is None
    assert groupnorm._try(broken, x, 32, None, None, 1e-5) is None and len(calls) == 1
    # Once given up, the statistics op also takes PyTorch's way.
    scale, shift = groupnorm.group_norm_scale_shift(x, 32, None, None, 1e-5)
    assert scale.shape == (1, 64)

    def oom(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(groupnorm, "_broken", [])
    with pytest.raises(torch.OutOfMemoryError):
        groupnorm._try(oom, x, 32, None, None, 1e-5)


def test_scale_shift_reproduce_group_norm():
    """``x * scale + shift`` with the statistics op's output is GroupNorm
    (here its float64 PyTorch path, off the GPU)."""
    from normalcrafter.groupnorm import group_norm_scale_shift

    x = torch.randn(2, 64, 5, 6) * 3 + 20
    w, b = torch.randn(64), torch.randn(64)
    scale, shift = group_norm_scale_shift(x, 16, w, b, 1e-6)
    assert scale.dtype == shift.dtype == torch.float32 and scale.shape == (2, 64)
    y = x * scale[..., None, None] + shift[..., None, None]
    torch.testing.assert_close(y, F.group_norm(x, 16, w, b, 1e-6), rtol=0, atol=1e-4)


@pytest.mark.gpu
def test_compiled_group_norm_fuses_the_apply_and_matches():
    """Compiled, only the statistics are an opaque op; GroupNorm + SiLU
    equals float64 PyTorch within fp16 rounding, with no graph break."""
    import torch._dynamo.utils as dynamo_utils

    torch._dynamo.reset()
    dynamo_utils.counters.clear()
    norm = torch.nn.GroupNorm(32, 128).cuda().half()
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    ref_w, ref_b = norm.weight.double(), norm.bias.double()
    assert use_nhwc_group_norm(norm) == 1
    block = torch.compile(lambda t: F.silu(norm(t)), dynamic=False)
    x = (torch.randn(3, 128, 40, 72, device="cuda") * 2 + 5).half().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # inference only: the statistics op has no gradient
        y = block(x)
    ref = F.silu(F.group_norm(x.double(), 32, ref_w, ref_b, norm.eps))
    assert not dynamo_utils.counters["graph_break"]
    # fp16 rounding of the normalised value and of the result; wrong
    # statistics would be off by whole units.
    torch.testing.assert_close(y.double(), ref, rtol=2 ** -8, atol=1e-2)
    torch._dynamo.reset()


@pytest.mark.gpu
def test_new_pixel_counts_build_no_new_kernels():
    """A clip's short last decode chunk gives the temporal layers' GroupNorm
    new pixel counts (T frames x H x W; 7, then 3, 2 or 1 frames here, which
    need other loop lengths and numbers of programs): the kernels built for
    the first count serve them all, with no Triton build in the middle of a
    clip."""
    from normalcrafter import groupnorm

    kernels = groupnorm._kernels()

    def built() -> list[int]:
        return [sum(len(c[0]) for c in k.device_caches.values()) for k in kernels]

    def norm(frames: int) -> torch.Tensor:
        x = torch.randn(1, 512, frames, 128, 80, device="cuda").half()
        return groupnorm.rows_group_norm(x.contiguous(memory_format=torch.channels_last_3d), 32, None, None, 1e-6)

    norm(7)
    first = built()
    layouts = {groupnorm.stats_layout(frames * 128 * 80, 512)[2:] for frames in (7, 3, 2, 1)}
    assert len(layouts) == 4  # each count its own loop length and programs
    for frames in (3, 2, 1):
        x = norm(frames)
    assert built() == first
    assert x.isfinite().all()
