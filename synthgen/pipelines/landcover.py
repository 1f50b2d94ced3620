"""Unconditional land-cover + height generation by latent diffusion.

A ``UNet2DModel`` denoises latents of the ``LayoutAutoencoder``; the decoded class logits give the label map
(scheme codes 1..K, argmax), and heights come from the autoencoder's height channel when it has one, else from
the ``HeightPrior`` drawn with the tile's seed. The folder is a diffusers pipeline folder (``model_index.json``,
``autoencoder/``, ``unet/``, ``scheduler/``) plus ``height_prior/height_prior.json``; the scheme name is in
``model_index.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from synthgen.errors import ConfigError
from synthgen.models.height_prior import HeightPrior
from synthgen.models.layout_autoencoder import LayoutAutoencoder
from synthgen.models.schedulers import LAYOUT_SAMPLERS, inference_scheduler
from synthgen.pipelines.loading import check_model_folder, loading_errors

HEIGHT_PRIOR_DIR = "height_prior"
HEIGHT_RESOLUTION_M = 0.01


@dataclass
class LandCoverPipelineOutput:
    """Generated tiles: ``labels`` uint8 (B, H, W) scheme codes, ``heights`` float32 (B, H, W) metres."""

    labels: np.ndarray
    heights: np.ndarray


def unet_downsampling(unet: UNet2DModel) -> int:
    """How much a UNet downsamples: 2 for each of its down blocks that has a downsampler. Its skip connections
    need the latent side to be a multiple of this (a ``UNet2DModel`` does not pad)."""
    return 2 ** sum(getattr(block, "downsamplers", None) is not None for block in unet.down_blocks)


def _seed_of(generator: torch.Generator) -> int:
    return int(generator.initial_seed())


class LandCoverPipeline(DiffusionPipeline):
    """Latent diffusion over land-cover layouts; see the module docstring."""

    model_cpu_offload_seq = "unet->autoencoder"

    def __init__(
        self,
        autoencoder: LayoutAutoencoder,
        unet: UNet2DModel,
        scheduler: DDIMScheduler | DPMSolverMultistepScheduler,
        scheme: str = "oem8",
        height_prior: HeightPrior | None = None,
    ):
        super().__init__()
        self.register_modules(autoencoder=autoencoder, unet=unet, scheduler=scheduler)
        self.register_to_config(scheme=scheme)
        self.height_prior = height_prior or HeightPrior()

    @property
    def latent_factor(self) -> int:
        """Pixels per latent cell (the layout autoencoder's downsampling)."""
        return self.autoencoder.downsample_factor

    @property
    def unet_factor(self) -> int:
        """How much the loaded UNet downsamples its latents (``unet_downsampling``)."""
        return unet_downsampling(self.unet)

    @property
    def size_factor(self) -> int:
        """Tile sizes must be multiples of this: the autoencoder's factor times the UNet's."""
        return self.latent_factor * self.unet_factor

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """Save the diffusers folder plus ``height_prior/``."""
        super().save_pretrained(save_directory, **kwargs)
        self.height_prior.save_pretrained(Path(save_directory) / HEIGHT_PRIOR_DIR)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> LandCoverPipeline:
        """Load a folder written by ``save_pretrained``; a missing or broken folder is a one-line ConfigError."""
        path = Path(pretrained_model_name_or_path)
        check_model_folder(path, cls.__name__, "landcover", required=True)
        with loading_errors(path, "the landcover model"):
            if "height_prior" not in kwargs:
                prior_dir = path / HEIGHT_PRIOR_DIR
                kwargs["height_prior"] = HeightPrior.from_pretrained(prior_dir) if prior_dir.is_dir() else HeightPrior()
            return super().from_pretrained(str(path), **{"use_safetensors": True, **kwargs})

    def check_inputs(self, batch_size: int, size: int, num_inference_steps: int, generator, gsd: float) -> None:
        """Refuse a bad batch size, tile size, step count, generator list or gsd with a one-line ConfigError."""
        if batch_size < 1:
            raise ConfigError(f"batch_size {batch_size} must be >= 1")
        factor = self.size_factor
        if size < factor or size % factor:
            raise ConfigError(
                f"size {size} px is not a positive multiple of {factor} (the layout autoencoder's factor "
                f"{self.latent_factor} x the UNet's downsampling {self.unet_factor})"
            )
        if num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps {num_inference_steps} must be >= 1")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ConfigError(f"{len(generator)} generators given for batch_size {batch_size} (need one per tile)")
        if not (np.isfinite(gsd) and gsd > 0):
            raise ConfigError(f"gsd {gsd} must be a finite number of metres > 0")

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        size: int = 128,
        num_inference_steps: int = 20,
        generator: torch.Generator | list[torch.Generator] | None = None,
        gsd: float = 0.5,
    ) -> LandCoverPipelineOutput:
        """Generate ``batch_size`` tiles of ``size`` px.

        ``generator``: one ``torch.Generator`` for the batch, or one per tile (then each tile depends only on its
        own generator's seed, whatever the batch). Heights are rounded to 1 cm.
        """
        # 1. Check inputs
        self.check_inputs(batch_size, size, num_inference_steps, generator, gsd)
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,)).item()))
        device = self._execution_device
        dtype = self.unet.dtype

        # 2. Prepare the initial noise (per tile when one generator per tile is given)
        side = size // self.latent_factor
        shape = (batch_size, self.unet.config.in_channels, side, side)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents * self.scheduler.init_noise_sigma

        # 3. Set the timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)

        # 4. Denoise
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(latents, t)
            noise = self.unet(model_input, t).sample
            latents = self.scheduler.step(noise, t, latents).prev_sample

        # 5. Decode latents into class logits (and heights)
        logits, height = self.autoencoder.decode(latents.to(self.autoencoder.dtype))
        labels = (logits.float().argmax(dim=1) + 1).to(torch.uint8).cpu().numpy()

        # 6. Heights: the autoencoder's channel, else the height prior seeded like each tile
        if height is not None:
            heights = np.clip(height.float().cpu().numpy(), 0.0, None)
            heights = (np.round(heights / HEIGHT_RESOLUTION_M) * HEIGHT_RESOLUTION_M).astype(np.float32)
        else:
            gens = generator if isinstance(generator, list) else [generator]
            rngs = [np.random.default_rng(_seed_of(g)) for g in gens]
            if len(rngs) == 1:
                heights = self.height_prior(labels, gsd, rngs[0])
            else:
                heights = np.stack([self.height_prior(lab, gsd, rng) for lab, rng in zip(labels, rngs, strict=True)])

        # 7. Offload and return
        self.maybe_free_model_hooks()
        return LandCoverPipelineOutput(labels=labels, heights=heights.astype(np.float32))


def make_scheduler(name: str, train_config: dict):
    """An inference scheduler by name (``ddim`` or ``dpm``: ``LAYOUT_SAMPLERS`` of ``models/schedulers.py``) from a
    training scheduler's config."""
    return inference_scheduler(name, train_config, LAYOUT_SAMPLERS)
