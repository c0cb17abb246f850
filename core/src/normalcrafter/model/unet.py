"""The NormalCrafter UNet: SVD's spatio-temporal UNet with per-frame conditioning.

The published weights are plain diffusers ``UNetSpatioTemporalConditionModel``
weights (``in_channels=8``: normal latent first, RGB latent second). Only the
forward pass differs from stock diffusers, in three ways the method needs:

* one CLIP embedding per frame, ``(B*F, 1, D)``, instead of one per clip;
* per-frame timesteps ``(B, F)`` (training draws a sigma per frame);
* the outputs of the up blocks can be returned, for Semantic Feature
  Regularization during training ("Up1" is ``up_features[1]``).
"""
from __future__ import annotations

import torch
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput


class NormalCrafterUNet(UNetSpatioTemporalConditionModel):
    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        return_dict: bool = True,
        return_up_features: bool = False,
    ):
        """Predict for ``sample`` of shape (B, F, C, H, W).

        ``encoder_hidden_states`` is (B*F, S, D) for per-frame context or
        (B, S, D) for one context per clip. ``timestep`` is a scalar, (B,) or
        (B, F). Returns the (B, F, C_out, H, W) prediction, plus the list of
        up-block outputs when ``return_up_features`` is set.
        """
        batch_size, num_frames = sample.shape[:2]
        up_factor = 2**self.num_upsamplers
        needs_upsample_size = any(s % up_factor != 0 for s in sample.shape[-2:])

        timesteps = torch.as_tensor(timestep, device=sample.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(batch_size)
        per_frame_t = timesteps.ndim == 2
        timesteps = timesteps.reshape(-1)

        emb = self.time_embedding(self.time_proj(timesteps).to(sample.dtype))
        time_embeds = self.add_time_proj(added_time_ids.flatten()).reshape(batch_size, -1)
        aug_emb = self.add_embedding(time_embeds.to(emb.dtype))
        if per_frame_t:
            emb = emb + aug_emb.repeat_interleave(num_frames, dim=0)
        else:
            emb = (emb + aug_emb).repeat_interleave(num_frames, dim=0)

        if encoder_hidden_states.shape[0] != batch_size * num_frames:
            encoder_hidden_states = encoder_hidden_states.repeat_interleave(num_frames, dim=0)

        sample = self.conv_in(sample.flatten(0, 1))
        image_only_indicator = torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device)

        skips: tuple[torch.Tensor, ...] = (sample,)
        for block in self.down_blocks:
            kwargs = {"encoder_hidden_states": encoder_hidden_states} if getattr(block, "has_cross_attention", False) else {}
            sample, res = block(hidden_states=sample, temb=emb, image_only_indicator=image_only_indicator, **kwargs)
            skips += res

        sample = self.mid_block(
            hidden_states=sample,
            temb=emb,
            encoder_hidden_states=encoder_hidden_states,
            image_only_indicator=image_only_indicator,
        )

        up_features = []
        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            kwargs = {"encoder_hidden_states": encoder_hidden_states} if getattr(block, "has_cross_attention", False) else {}
            if needs_upsample_size and i < len(self.up_blocks) - 1:
                kwargs["upsample_size"] = skips[-1].shape[2:]
            sample = block(
                hidden_states=sample,
                temb=emb,
                res_hidden_states_tuple=res,
                image_only_indicator=image_only_indicator,
                **kwargs,
            )
            up_features.append(sample)

        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        sample = sample.reshape(batch_size, num_frames, *sample.shape[1:])
        if return_up_features:
            return sample, up_features
        return UNetSpatioTemporalConditionOutput(sample=sample) if return_dict else (sample,)

