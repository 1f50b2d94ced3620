"""The one scheduler table: inference samplers by name (a diffusers scheduler class each) and the builders of the
training noise schedules (land cover's DDPM, Stable Diffusion's DDPM, SD3's flow matching).

An inference scheduler is made from a training scheduler's config (``from_config``), as diffusers swaps samplers.
A name outside the table, or outside the subset a model offers (the land-cover pipeline: ``LAYOUT_SAMPLERS``), is a
one-line ConfigError listing the valid names.
"""

from __future__ import annotations

from collections.abc import Collection

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from synthgen.errors import ConfigError, allowed

INFERENCE_SCHEDULERS = {
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
}
LAYOUT_SAMPLERS = ("ddim", "dpm")  # the land-cover pipeline's
PREDICTION_TYPES = ("epsilon", "v_prediction")


def inference_scheduler(name: str, train_config: dict, names: Collection[str] = tuple(INFERENCE_SCHEDULERS), **extra):
    """The inference scheduler ``name`` (one of ``names``) from a training scheduler's config, with ``extra``
    settings."""
    if name not in names:
        raise ConfigError(f"scheduler '{name}' is unknown (allowed: {allowed(names)})")
    return INFERENCE_SCHEDULERS[name].from_config(train_config, **extra)


def sd_inference_scheduler(name: str, train_config: dict):
    """An inference scheduler by name from a Stable Diffusion training scheduler's config (DDIM as SD 1.5 sets it
    up: ``set_alpha_to_one=False``)."""
    return inference_scheduler(name, train_config, **({"set_alpha_to_one": False} if name == "ddim" else {}))


def layout_noise_scheduler(num_train_timesteps: int, prediction_type: str = "epsilon") -> DDPMScheduler:
    """The land-cover latents' training schedule: DDPM, linear betas, ``prediction_type`` (``PREDICTION_TYPES``), no
    clipping of the predicted sample.

    Scaled latents have unit std, not a [-1, 1] range: clipping the predicted sample (diffusers' default for
    DDPM/DDIM) would squash them towards one class at sampling time.
    """
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, clip_sample=False, prediction_type=prediction_type)


def sd_noise_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """Stable Diffusion's training noise schedule (scaled-linear betas, epsilon prediction)."""
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    )


def flow_match_scheduler(shift: float) -> FlowMatchEulerDiscreteScheduler:
    """SD3's flow-matching Euler scheduler (1000 training timesteps) with the given timestep shift."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
