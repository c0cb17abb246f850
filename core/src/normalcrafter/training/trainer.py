"""The training loop: stages in order, checkpoints, resume, logs, export.

One process per GPU through accelerate (``accelerate launch -m
normalcrafter.cli train CONFIG`` on several GPUs; plain ``normalcrafter
train CONFIG`` on one GPU or the CPU). Every process draws its own batches
(seed + process index); gradients are averaged by DDP.

Output folder layout::

    log.jsonl                     one JSON line per log interval: stage, step, lr, every loss
    train_state.json              completed stages, current checkpoint, the config
    checkpoints/<stage>/step_N/   accelerate state (model, optimizer, RNG) + progress.json
    stages/<stage>/               model folder after each completed stage (fp32)
    model/                        the final model, fp16, with normalcrafter_model.json
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import torch

from .. import errors
from ..errors import NormalCrafterError
from ..model.build import build_components, save_model
from ..model.loading import Components, ModelInfo, load_components
from ..pipeline import NormalCrafterPipeline
from .config import StageConfig, TrainConfig
from .dataset import make_source
from .semantic import SemanticEncoder, load_semantic_encoder
from .sfr import SFRHead
from .stages import (
    Stage1Loss,
    Stage2Loss,
    VAEDecoderLoss,
    VAEPretrainLoss,
    condition,
    encode_normals,
    is_temporal,
)

STATE_FILE = "train_state.json"


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def lr_factor(step: int, warmup: int, decay_per_1k: float) -> float:
    """Linear warm-up over ``warmup`` steps, then exponential decay."""
    if step < warmup:
        return (step + 1) / warmup
    return decay_per_1k ** ((step - warmup) / 1000.0)


class Trainer:
    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        import diffusers
        import transformers
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        # Saving casts copies to fp16 and writes shards: keep the log to our own lines.
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        self.cfg = config
        self.out = Path(config.output_dir)
        state_path = self.out / STATE_FILE
        if self.out.is_dir() and any(self.out.iterdir()) and not (resume and state_path.is_file()):
            raise NormalCrafterError(
                errors.OUTPUT_CONFLICT,
                f"training output folder {self.out} is not empty: pass --resume to continue it, or choose another",
            )
        cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
        precision = config.mixed_precision
        if precision == "auto":
            precision = "no" if cpu else "bf16"
        self.acc = Accelerator(mixed_precision=precision, cpu=cpu)
        set_seed(config.seed, device_specific=True)
        self.precision = precision
        self.state: dict = json.loads(state_path.read_text()) if state_path.is_file() else {
            "completed": [], "current": None, "config": config.to_dict(),
        }
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / "log.jsonl"
        self.source = make_source(config.data.source, config.data.height, config.data.width, self.acc.device)
        uses_sfr = any(s.kind in ("stage1", "stage2") and s.sfr_weight > 0 for s in config.stages)
        self.semantic: SemanticEncoder | None = None
        if uses_sfr and config.semantic.encoder != "none":
            self.semantic = load_semantic_encoder(config.semantic.encoder).to(self.acc.device)
        self.pipe = NormalCrafterPipeline(self._initial_components(), self.acc.device, torch.float32)
        if config.gradient_checkpointing:
            for module in (self.pipe.unet, self.pipe.vae):
                if getattr(module, "_supports_gradient_checkpointing", False):
                    module.enable_gradient_checkpointing()

    # -- model state --------------------------------------------------------
    def _initial_components(self) -> Components:
        done = self.state["completed"]
        if done:
            return load_components(str(self.out / "stages" / done[-1]["name"]), torch.float32)
        init = self.cfg.model.init
        if init.startswith("random:"):
            size = init.split(":", 1)[1]
            unet, vae, image_encoder, fe, scheduler = build_components(size, self.cfg.seed)
            for module in (unet, vae, image_encoder):
                module.eval().requires_grad_(False)
            return Components(unet, vae, image_encoder, fe, scheduler, ModelInfo(source=init))
        return load_components(init, torch.float32)

    def _save_model(self, path: Path, info: dict, fp16: bool) -> None:
        """Write the current model folder atomically (temp name + rename)."""
        if not self.acc.is_main_process:
            return
        c = self.pipe.components
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        modules = [copy.deepcopy(m).cpu() for m in (self.pipe.unet, self.pipe.vae, self.pipe.image_encoder)]
        save_model(tmp, *modules, c.feature_extractor, c.scheduler, info=info, fp16=fp16)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)

    def _info(self) -> dict:
        steps = {s["name"]: s["steps"] for s in self.state["completed"]}
        return {
            "name": self.cfg.name,
            "convention": "opengl",
            "trained": True,
            "encoder": self.semantic.name if self.semantic is not None else "none",
            "steps": steps,
            "stages": [{k: s[k] for k in ("name", "kind", "steps", "seconds")} for s in self.state["completed"]],
            "data": self.cfg.data.source,
            "resolution": [self.cfg.data.height, self.cfg.data.width],
            "seed": self.cfg.seed,
            "processes": self.acc.num_processes,
            "mixed_precision": self.precision,
            "device": torch.cuda.get_device_name(self.acc.device) if self.acc.device.type == "cuda" else "cpu",
        }

    # -- one stage ------------------------------------------------------------
    def _stage_module(self, stage: StageConfig) -> torch.nn.Module:
        unet, vae = self.pipe.unet, self.pipe.vae
        unet.requires_grad_(False)
        vae.requires_grad_(False)
        if stage.kind == "vae_pretrain":
            vae.requires_grad_(True)
            return VAEPretrainLoss(vae, stage.kl_weight)
        if stage.kind == "vae_decoder":
            vae.decoder.requires_grad_(True)
            return VAEDecoderLoss(vae)
        head = None
        if self.semantic is not None and stage.sfr_weight > 0:
            head = SFRHead(unet.config.block_out_channels[-2], self.semantic.channels, self.cfg.semantic.hidden)
        if stage.kind == "stage1":
            unet.requires_grad_(True)
            return Stage1Loss(unet, head, stage.sfr_weight, stage.p_sigma_max)
        for name, p in unet.named_parameters():
            p.requires_grad_(not is_temporal(name))
        return Stage2Loss(unet, vae, head, stage.sfr_weight)

    def _losses(self, module: torch.nn.Module, stage: StageConfig) -> dict[str, torch.Tensor]:
        frames = int(torch.randint(stage.frames[0], stage.frames[1] + 1, (1,)))
        clips = self.source.sample(stage.batch_clips, frames)
        if stage.kind == "vae_pretrain":
            inputs: tuple = (clips.rgb, clips.normal)
        elif stage.kind == "vae_decoder":
            inputs = (clips.normal,)
        else:
            semantic = self.semantic if stage.sfr_weight > 0 else None
            inputs = (condition(self.pipe, clips, semantic, with_normal_latents=stage.kind == "stage1"),)
        with self.acc.autocast():
            return module(*inputs)

    def _checkpoint(self, stage: StageConfig, step: int, scheduler, seconds: float) -> None:
        folder = self.out / "checkpoints" / stage.name / f"step_{step:07d}"
        self.acc.save_state(str(folder), safe_serialization=True)
        if self.acc.is_main_process:
            progress = {"stage": stage.name, "step": step, "seconds": seconds, "scheduler": scheduler.state_dict()}
            _write_json(folder / "progress.json", progress)
            self.state["current"] = {"stage": stage.name, "checkpoint": str(folder), "step": step}
            _write_json(self.out / STATE_FILE, self.state)
            for old in folder.parent.iterdir():
                if old != folder and old.name.startswith("step_"):
                    shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()

    def _log(self, record: dict) -> None:
        if self.acc.is_main_process:
            with self.log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def _run_stage(self, stage: StageConfig, stop_after: int | None) -> bool:
        """Train one stage; False if the run's ``stop_after`` steps ended it first."""
        module = self._stage_module(stage)
        module.train()
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, stage.warmup_steps, stage.decay_per_1k)
        )
        # The scheduler stays outside prepare(): accelerate would step it once per process.
        module, optimizer = self.acc.prepare(module, optimizer)
        step = 0
        seconds_before = 0.0
        current = self.state.get("current")
        if current and current["stage"] == stage.name and Path(current["checkpoint"]).is_dir():
            self.acc.load_state(current["checkpoint"])
            progress = json.loads((Path(current["checkpoint"]) / "progress.json").read_text())
            step = progress["step"]
            seconds_before = progress["seconds"]
            scheduler.load_state_dict(progress["scheduler"])
        t0 = time.time()
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.acc.device))
        count = 0
        finished = True
        while step < stage.steps:
            losses = self._losses(module, stage)
            self.acc.backward(losses["loss"])
            if self.acc.sync_gradients and stage.max_grad_norm > 0:
                self.acc.clip_grad_norm_(params, stage.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            self.steps_this_run += 1
            for k, v in losses.items():
                sums[k] += v.detach().float()
            count += 1
            out_of_time = stage.time_limit_s is not None and time.time() - t0 > stage.time_limit_s
            stopping = stop_after is not None and self.steps_this_run >= stop_after
            if step % stage.log_every == 0 or step == stage.steps or out_of_time or stopping:
                means = {k: self.acc.reduce(v / count, "mean").item() for k, v in sorted(sums.items())}
                if not all(math.isfinite(v) for v in means.values()):
                    raise NormalCrafterError(errors.INTERNAL, f"stage {stage.name}: loss is not finite at step {step}: {means}")
                self._log({"stage": stage.name, "step": step, "lr": scheduler.get_last_lr()[0],
                           "elapsed_s": round(time.time() - t0, 2), **means})
                sums.clear()
                count = 0
            if stopping and step < stage.steps:
                self._checkpoint(stage, step, scheduler, seconds_before + time.time() - t0)
                finished = False
                break
            if step % stage.checkpoint_every == 0 or out_of_time:
                self._checkpoint(stage, step, scheduler, seconds_before + time.time() - t0)
            if out_of_time:
                break
        seconds = seconds_before + time.time() - t0
        self.acc.free_memory()
        if not finished:
            return False
        if stage.kind == "vae_pretrain":
            self._set_latent_scale(stage)
        self.state["completed"].append({"name": stage.name, "kind": stage.kind, "steps": step, "seconds": round(seconds, 1)})
        self.state["current"] = None
        self._save_model(self.out / "stages" / stage.name, self._info(), fp16=False)
        if self.acc.is_main_process:
            _write_json(self.out / STATE_FILE, self.state)
            shutil.rmtree(self.out / "checkpoints" / stage.name, ignore_errors=True)
        self.acc.wait_for_everyone()
        return True

    @torch.no_grad()
    def _set_latent_scale(self, stage: StageConfig, batches: int = 2) -> None:
        """A VAE trained here has latents of arbitrary scale: choose
        scaling_factor so normal latents have unit variance, as SD's 0.18215 was."""
        vae = self.pipe.vae
        vae.register_to_config(scaling_factor=1.0)
        z = torch.cat([
            encode_normals(vae, self.source.sample(stage.batch_clips, stage.frames[1]).normal).flatten()
            for _ in range(batches)
        ])
        std = self.acc.reduce(z.float().std(), "mean")
        vae.register_to_config(scaling_factor=float(1.0 / std.clamp_min(1e-6)))

    # -- everything -----------------------------------------------------------
    def run(self, stop_after: int | None = None) -> Path | None:
        """Run the remaining stages, then export ``model/`` (fp16). Returns its
        path, or None when ``stop_after`` steps ended the run first."""
        done = {s["name"] for s in self.state["completed"]}
        self.steps_this_run = 0
        for stage in self.cfg.stages:
            if stage.name in done:
                continue
            if not self._run_stage(stage, stop_after):
                return None
        final = self.out / "model"
        self._save_model(final, self._info(), fp16=True)
        self.acc.wait_for_everyone()
        return final
