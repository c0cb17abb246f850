"""SVD's EDM preconditioning and noise distribution, as diffusers' Euler
scheduler applies them at inference (v-prediction, continuous timesteps).

With ``D(x) = c_skip * x + c_out * F(c_in * x, c_noise)`` the denoised latent,
the paper's loss is ``lambda(sigma) * |D(x) - z|^2`` with
``lambda = (1 + sigma^2) / sigma^2``. The scheduler's ``scale_model_input``
divides by ``sqrt(sigma^2 + 1)`` (c_in), its ``step`` from sigma to 0 returns
``c_skip * x + c_out * F`` and its timesteps are ``ln(sigma) / 4`` (c_noise);
tests/test_training.py checks these against the scheduler itself.
"""
from __future__ import annotations

import torch

SIGMA_MAX = 700.0
# SVD's training distribution of ln(sigma) (Blattmann et al. 2023, high-resolution stage).
LOG_SIGMA_MEAN = 0.7
LOG_SIGMA_STD = 1.6


def c_in(sigma: torch.Tensor) -> torch.Tensor:
    return 1.0 / torch.sqrt(sigma**2 + 1.0)


def c_skip(sigma: torch.Tensor) -> torch.Tensor:
    return 1.0 / (sigma**2 + 1.0)


def c_out(sigma: torch.Tensor) -> torch.Tensor:
    return -sigma / torch.sqrt(sigma**2 + 1.0)


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    return torch.log(sigma) / 4.0


def edm_weight(sigma: torch.Tensor) -> torch.Tensor:
    return (1.0 + sigma**2) / sigma**2


def sample_sigma(n: int, p_max: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` noise levels: SIGMA_MAX with probability ``p_max`` (the level that
    inference uses), otherwise SVD's log-normal. Drawn on the CPU so that a
    seeded run draws the same levels on any device."""
    log_normal = torch.exp(LOG_SIGMA_MEAN + LOG_SIGMA_STD * torch.randn(n, generator=generator))
    at_max = torch.rand(n, generator=generator) < p_max
    return torch.where(at_max, torch.full_like(log_normal, SIGMA_MAX), log_normal)
