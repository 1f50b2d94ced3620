"""The shared denoising objective: targets per prediction type and min-SNR weighting, checked against the
formulas written out by hand from the scheduler's alphas."""

import pytest
import torch
import torch.nn.functional as F

from synthgen.models.schedulers import layout_noise_scheduler
from synthgen.training.objective import diffusion_loss, diffusion_target


def _batch():
    g = torch.Generator().manual_seed(0)
    latents, noise, pred = (torch.randn(3, 4, 8, 8, generator=g) for _ in range(3))
    return latents, noise, pred, torch.tensor([5, 400, 990])


def test_targets_are_noise_and_velocity():
    latents, noise, _, t = _batch()
    assert torch.equal(diffusion_target(layout_noise_scheduler(1000), latents, noise, t), noise)
    scheduler = layout_noise_scheduler(1000, "v_prediction")
    ab = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = ab.sqrt() * noise - (1 - ab).sqrt() * latents
    assert torch.allclose(diffusion_target(scheduler, latents, noise, t), expected, atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_each_sample_by_the_clamped_snr(prediction_type):
    latents, noise, pred, t = _batch()
    scheduler = layout_noise_scheduler(1000, prediction_type)
    target = diffusion_target(scheduler, latents, noise, t)
    ab = scheduler.alphas_cumprod[t]
    snr = ab / (1 - ab)
    gamma = 5.0
    weight = torch.minimum(snr, torch.tensor(gamma)) / (snr + 1 if prediction_type == "v_prediction" else snr)
    per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    expected = (per_sample * weight).mean()
    got = diffusion_loss(pred, latents, noise, t, scheduler, snr_gamma=gamma)
    assert torch.allclose(got, expected, rtol=1e-5)
    assert weight[0] < weight[2] or prediction_type == "v_prediction"  # low noise (t=5) is down-weighted for eps
    assert torch.allclose(diffusion_loss(pred, latents, noise, t, scheduler), F.mse_loss(pred, target))
