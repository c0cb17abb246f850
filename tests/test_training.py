"""Training: preconditioning, losses, stages, checkpoints, data and the CLI,
on tiny random models at 64x64 (CPU)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from normalcrafter.errors import NormalCrafterError
from normalcrafter.model.build import SCHEDULER_CONFIG, build_components
from normalcrafter.model.loading import Components, ModelInfo
from normalcrafter.pipeline import NormalCrafterPipeline
from normalcrafter.training import precondition as pc
from normalcrafter.training import synthetic
from normalcrafter.training.config import parse_config
from normalcrafter.training.dataset import FolderSource, write_clip
from normalcrafter.training.semantic import load_semantic_encoder
from normalcrafter.training.sfr import SFRHead, sfr_loss
from normalcrafter.training.stages import (
    Stage1Loss,
    Stage2Loss,
    VAEDecoderLoss,
    VAEPretrainLoss,
    condition,
    is_temporal,
)
from normalcrafter.training.trainer import Trainer

SIZE = 64


@pytest.fixture(scope="module")
def effnet():
    return load_semantic_encoder("efficientnet-lite0")


@pytest.fixture(scope="module")
def clips():
    return synthetic.render_clips(1, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


def _config(tmp_path, stages, init, encoder="efficientnet-lite0"):
    return parse_config({
        "name": "t", "output_dir": str(tmp_path / "run"), "seed": 0, "device": "cpu",
        "model": {"init": init}, "data": {"height": SIZE, "width": SIZE},
        "semantic": {"encoder": encoder, "hidden": 16}, "stage": stages,
    })


def _stage(kind, **kw):
    base = {"name": kind, "kind": kind, "steps": 1, "lr": 1e-4, "batch_clips": 1, "frames": [2, 2],
            "warmup_steps": 1, "log_every": 1}
    return {**base, **kw}


def test_preconditioning_is_what_the_scheduler_does_at_inference():
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    sched.set_timesteps(1)
    t = sched.timesteps[0]
    sigma = torch.tensor(pc.SIGMA_MAX)
    assert float(sched.sigmas[0]) == pytest.approx(pc.SIGMA_MAX)
    assert float(t) == pytest.approx(float(pc.c_noise(sigma)), rel=1e-6)
    x, out = torch.randn(1, 2, 4, 3, 3), torch.randn(1, 2, 4, 3, 3)
    torch.testing.assert_close(sched.scale_model_input(x, t), pc.c_in(sigma) * x)
    step = sched.step(out, t, x).prev_sample
    torch.testing.assert_close(step, pc.c_skip(sigma) * x + pc.c_out(sigma) * out)
    assert float(pc.edm_weight(sigma)) == pytest.approx(1 / float(pc.c_out(sigma)) ** 2)


def test_sigma_distribution_half_at_sigma_max():
    s = pc.sample_sigma(20000, generator=torch.Generator().manual_seed(0))
    at_max = s == pc.SIGMA_MAX
    assert abs(at_max.float().mean().item() - 0.5) < 0.02
    logs = torch.log(s[~at_max])
    assert abs(logs.mean().item() - pc.LOG_SIGMA_MEAN) < 0.05 and abs(logs.std().item() - pc.LOG_SIGMA_STD) < 0.05


def test_sfr_loss_is_minus_one_for_identical_features():
    f = torch.randn(3, 8, 4, 5)
    assert sfr_loss(f, f.clone()).item() == pytest.approx(-1.0, abs=1e-6)
    assert sfr_loss(f, -f).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError):
        sfr_loss(f, f[..., :4])


def test_efficientnet_lite0_is_pretrained_and_on_the_up1_grid(effnet):
    # BatchNorm statistics of a trained network, not PyTorch's initial (0, 1).
    bn = effnet.stem[1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    feats = effnet(torch.rand(2, 3, SIZE, SIZE), (SIZE // 16, SIZE // 16))
    assert feats.shape == (2, 112, 4, 4) and not feats.requires_grad


def test_dinov2_encoder_through_transformers(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=56, patch_size=14)
    Dinov2Model(cfg).save_pretrained(tmp_path / "dino")
    enc = load_semantic_encoder(f"dinov2:{tmp_path / 'dino'}")
    assert enc.channels == 32
    assert enc(torch.rand(3, 3, 64, 96), (4, 6)).shape == (3, 32, 4, 6)
    with pytest.raises(NormalCrafterError):
        load_semantic_encoder("clip-vit")


def _tiny_pipe():
    unet, vae, image_encoder, fe, sched = build_components("tiny", seed=0)
    return NormalCrafterPipeline(Components(unet, vae, image_encoder, fe, sched, ModelInfo("tiny")), "cpu")


def _loss_then_step(module, inputs, lr=1e-4):
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    torch.manual_seed(0)
    before = module(*inputs)["loss"]
    before.backward()
    opt.step()
    torch.manual_seed(0)  # the same sigma and noise for the second evaluation
    with torch.no_grad():
        after = module(*inputs)["loss"]
    return before.item(), after.item()


@pytest.mark.parametrize("kind", ["vae_pretrain", "vae_decoder", "stage1", "stage2"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(kind, clips, effnet):
    pipe = _tiny_pipe()
    head = SFRHead(pipe.unet.config.block_out_channels[-2], effnet.channels, 16)
    if kind == "vae_pretrain":
        pipe.vae.requires_grad_(True)
        module, inputs = VAEPretrainLoss(pipe.vae, 1e-4), (clips.rgb, clips.normal)
    elif kind == "vae_decoder":
        pipe.vae.decoder.requires_grad_(True)
        module, inputs = VAEDecoderLoss(pipe.vae), (clips.normal,)
    elif kind == "stage1":
        pipe.unet.requires_grad_(True)
        module = Stage1Loss(pipe.unet, head, 1.0, 0.5)
        inputs = (condition(pipe, clips, effnet, with_normal_latents=True),)
    else:
        for name, p in pipe.unet.named_parameters():
            p.requires_grad_(not is_temporal(name))
        module = Stage2Loss(pipe.unet, pipe.vae, head, 1.0)
        inputs = (condition(pipe, clips, effnet),)
    before, after = _loss_then_step(module, inputs)
    assert math.isfinite(before) and after < before


def _unet_weights(folder):
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_stage2_changes_only_spatial_parameters(tmp_path, tiny_model):
    cfg = _config(tmp_path, [_stage("stage2", lr=1e-3)], str(tiny_model))
    Trainer(cfg).run()
    before, after = _unet_weights(tiny_model), _unet_weights(tmp_path / "run" / "stages" / "stage2")
    temporal = [k for k in before if is_temporal(k)]
    spatial = [k for k in before if not is_temporal(k)]
    assert temporal and spatial
    # The tiny model is stored in fp16: compare in its precision.
    assert all(torch.equal(before[k], after[k].half()) for k in temporal)
    changed = [k for k in spatial if not torch.equal(before[k], after[k].half())]
    assert len(changed) > 0.9 * len(spatial)


@pytest.fixture
def one_thread():
    # Multi-threaded CPU reductions may sum in a different order run to run,
    # and Adam's first steps amplify that: exactness needs one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_checkpoint_and_resume_continue_identically(tmp_path, tiny_model, one_thread):
    stages = [_stage("stage1", steps=3, checkpoint_every=2, frames=[1, 1], lr=1e-3)]
    straight = _config(tmp_path / "a", stages, str(tiny_model))
    Trainer(straight).run()
    split = _config(tmp_path / "b", stages, str(tiny_model))
    assert Trainer(split).run(stop_after=2) is None
    with pytest.raises(NormalCrafterError):  # a non-empty folder is never overwritten silently
        Trainer(split)
    Trainer(split, resume=True).run()
    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    wa, wb = _unet_weights(a / "stages" / "stage1"), _unet_weights(b / "stages" / "stage1")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    la = [json.loads(x) for x in (a / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (b / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lb] == [1, 2, 3]
    assert [(r["dsm"], r["sfr"], r["lr"]) for r in la] == [(r["dsm"], r["sfr"], r["lr"]) for r in lb]


def test_train_command_runs_every_stage_and_exports_a_loadable_model(tmp_path):
    from normalcrafter.cli import main

    stages = [_stage(kind, frames=[1, 1]) for kind in ("vae_pretrain", "vae_decoder", "stage1", "stage2")]
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps({
        "name": "cli", "output_dir": str(tmp_path / "out"), "device": "cpu", "model": {"init": "random:tiny"},
        "data": {"height": SIZE, "width": SIZE}, "semantic": {"encoder": "efficientnet-lite0", "hidden": 16},
        "stage": stages,
    }))
    assert main(["train", str(cfg_path)]) == 0
    log = [json.loads(x) for x in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    keys = {r["stage"]: set(r) for r in log}
    assert {"l1", "kl"} <= keys["vae_pretrain"] and {"angular", "l1"} <= keys["vae_decoder"]
    assert {"dsm", "sfr"} <= keys["stage1"] and {"angular", "sfr"} <= keys["stage2"]
    info = json.loads((tmp_path / "out" / "model" / "normalcrafter_model.json").read_text())
    assert info["trained"] and info["encoder"] == "efficientnet-lite0" and info["convention"] == "opengl"
    assert info["steps"] == {"vae_pretrain": 1, "vae_decoder": 1, "stage1": 1, "stage2": 1}
    vae_cfg = json.loads((tmp_path / "out" / "model" / "vae" / "config.json").read_text())
    assert vae_cfg["scaling_factor"] != 0.18215  # set from the pretrained VAE's latent spread
    pipe = NormalCrafterPipeline.from_pretrained(str(tmp_path / "out" / "model"), device="cpu")
    frames = (np.random.default_rng(0).random((3, SIZE, SIZE, 3)) * 255).astype(np.uint8)
    assert pipe(frames).shape == (3, SIZE, SIZE, 3)


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(NormalCrafterError, match="unknown key stage\\[0\\].stpes"):
        _config(tmp_path, [{**_stage("stage1"), "stpes": 3}], "random:tiny")
    with pytest.raises(NormalCrafterError, match="kind must be one of"):
        _config(tmp_path, [_stage("stage3")], "random:tiny")
    with pytest.raises(NormalCrafterError, match="multiples of 64"):
        parse_config({"name": "x", "output_dir": "y", "data": {"height": 100}, "stage": [_stage("stage1")]})


def _scene_with_one_sphere():
    sc = synthetic.sample_scenes(1, 1, torch.Generator().manual_seed(0))
    flat = {k: v.reshape(1, *v.shape[2:]).clone() for k, v in sc.items()}
    flat["room"] = torch.tensor([[20.0, 10.0, 20.0]])
    flat["obj_active"][:] = False
    flat["obj_active"][0, 0] = True
    flat["obj_centre"][0, 0] = torch.tensor([0.0, 2.0, -4.0])
    flat["obj_size"][0, 0] = 1.0
    flat["eye"] = torch.tensor([[0.0, 2.0, 0.0]])
    flat["target"] = torch.tensor([[0.0, 2.0, -1.0]])
    flat["roll"][:] = 0.0
    flat["fov"][:] = math.radians(60)
    return flat


def test_ray_caster_normals_in_opengl_camera_space():
    rgb, n, _ = synthetic._render_views(_scene_with_one_sphere(), 33, 33)
    n = n[0].permute(1, 2, 0)
    torch.testing.assert_close(n[16, 16], torch.tensor([0.0, 0.0, 1.0]), atol=1e-4, rtol=0)
    assert n[16, 19, 0] > 0.2 and n[13, 16, 1] > 0.2  # right of centre faces right, above faces up
    assert n[32, 16, 1] > 0.99  # the floor, seen level, points up
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(33, 33))
    assert 0 <= rgb.min() and rgb.max() <= 1


def test_synthetic_clips_are_seeded_and_quantised():
    a = synthetic.render_clips(1, 2, 32, 48, generator=torch.Generator().manual_seed(5))
    b = synthetic.render_clips(1, 2, 32, 48, generator=torch.Generator().manual_seed(5))
    c = synthetic.render_clips(1, 2, 32, 48, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.normal, b.normal) and not torch.equal(a.rgb, c.rgb)
    assert a.rgb.shape == a.normal.shape == (1, 2, 3, 32, 48)
    torch.testing.assert_close(a.rgb * 255, (a.rgb * 255).round())
    torch.testing.assert_close(a.normal.norm(dim=2), torch.ones(1, 2, 32, 48))


def test_dataset_folder_round_trip_and_convention(tmp_path, clips):
    rgb = (clips.rgb[0] * 255).round().byte().permute(0, 2, 3, 1).numpy()
    normal = clips.normal[0].permute(0, 2, 3, 1).numpy()
    write_clip(tmp_path / "ds" / "a", rgb, normal, "opengl")
    opencv = normal * np.float32([1, -1, -1])  # RUB -> RDF
    write_clip(tmp_path / "ds" / "b", rgb, opencv, "opencv")
    assert not list((tmp_path / "ds").rglob("*.partial*"))
    source = FolderSource(tmp_path / "ds", SIZE, SIZE, torch.device("cpu"))
    for clip in source.clips:
        got_rgb, got_normal = clip.load(0, 2)
        assert np.array_equal(got_rgb, rgb)
        np.testing.assert_allclose(got_normal, normal, atol=2e-5)
    batch = source.sample(3, 2)
    assert batch.rgb.shape == batch.normal.shape == (3, 2, 3, SIZE, SIZE)
    (tmp_path / "bad" / "c" / "rgb").mkdir(parents=True)
    with pytest.raises(NormalCrafterError, match="0 RGB frames"):
        FolderSource(tmp_path / "bad", SIZE, SIZE, torch.device("cpu"))
