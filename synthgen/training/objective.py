"""The denoising objective shared by the diffusion trainings: the regression target of the scheduler's
``prediction_type`` (``epsilon``: the noise; ``v_prediction``: the velocity ``sqrt(a) eps - sqrt(1 - a) x0``) and
the MSE to it, optionally min-SNR weighted (Hang et al. 2023, diffusers' ``compute_snr``): each timestep's loss is
weighted by ``min(SNR, gamma) / SNR`` (epsilon) or ``min(SNR, gamma) / (SNR + 1)`` (v), so that the many easy
low-noise steps stop dominating the gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the network regresses for ``scheduler.config.prediction_type``."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    return noise


def diffusion_loss(
    pred: torch.Tensor,
    latents: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    scheduler,
    snr_gamma: float | None = None,
) -> torch.Tensor:
    """MSE of ``pred`` to the scheduler's target; min-SNR weighted per sample when ``snr_gamma`` is given."""
    target = diffusion_target(scheduler, latents, noise, t).float()
    if snr_gamma is None:
        return F.mse_loss(pred.float(), target)
    snr = compute_snr(scheduler, t)
    weight = torch.clamp(snr, max=snr_gamma)
    weight = weight / (snr + 1 if scheduler.config.prediction_type == "v_prediction" else snr)
    per_sample = F.mse_loss(pred.float(), target, reduction="none").mean(dim=tuple(range(1, pred.ndim)))
    return (per_sample * weight).mean()
