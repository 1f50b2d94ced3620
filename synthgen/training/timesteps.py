"""How diffusion training draws its timesteps: ``uniform`` (DDPM), or ``cubic``, ``t = (1 - u**3) T`` for uniform
``u``, which puts most draws at high noise, where the layout of an image is decided (T2I-Adapter samples the
timesteps of its adapters this way; a control signal barely changes the low-noise steps that dominate a uniform
epsilon loss)."""

from __future__ import annotations

import torch

TIMESTEP_SAMPLINGS = ("uniform", "cubic")


def sample_timesteps(kind: str, n: int, num_train_timesteps: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` integer timesteps in ``[0, num_train_timesteps)`` drawn the ``kind`` way from ``generator``."""
    if kind == "uniform":
        return torch.randint(0, num_train_timesteps, (n,), generator=generator)
    u = torch.rand(n, generator=generator)
    return ((1 - u**3) * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)
