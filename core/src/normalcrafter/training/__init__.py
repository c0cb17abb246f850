"""Training for NormalCrafter models: the paper's recipe (NormalCrafter, ICCV
2025), which its authors never released, at any scale.

Stages (run in order by ``normalcrafter train CONFIG``, see docs/training.md):
VAE pretraining (only for a VAE that starts from random weights), VAE decoder
fine-tuning on normal maps, stage 1 (latent denoising score matching + SFR,
whole UNet) and stage 2 (one-step prediction decoded to pixels, mean angular
loss + SFR, spatial layers only). Data: clips on disk or procedural clips
rendered on the fly (``synthetic.py``).
"""
