"""The typed config of ``synthgen train landcover`` (kind ``train-landcover``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from synthgen.config import (
    require_above_zero,
    require_choice,
    require_non_negative,
    require_open_unit,
    require_positive,
)
from synthgen.errors import ConfigError
from synthgen.models.schedulers import LAYOUT_SAMPLERS, PREDICTION_TYPES


@dataclass
class LandCoverTrainConfig:
    """Everything a land-cover training run depends on; see ``synthgen/configs/train-landcover/*.yaml``.

    Steps count optimizer updates over both phases: ``ae_steps`` of the autoencoder, then ``unet_steps`` of the
    UNet on the frozen autoencoder's latents. ``ae_batch_size`` (default: ``batch_size``) is the autoencoder's batch,
    which works at full resolution and so costs far more per tile than the UNet. ``class_balanced`` weights the
    autoencoder's cross-entropy by inverse square-root class frequency on the train split.
    ``init_pipeline``: a ``LandCoverPipeline`` folder whose autoencoder (with its latent scale) and UNet the run
    starts from, e.g. the embedded default, to train its UNet longer (``ae_steps: 0`` keeps the autoencoder, and so
    the latents the UNet knows, as they are); its architecture must be the config's.
    ``prediction_type``: what the UNet regresses, ``epsilon`` or ``v_prediction`` (its sample estimate stays bounded
    at high noise, where an epsilon model's is amplified by 1 / sqrt(alpha_bar)); ``snr_gamma`` turns on min-SNR
    loss weighting (5 is the paper's value). ``prediction_type`` is saved in the scheduler's config, so sampling
    follows it.
    ``max_steps`` stops a run early (after a checkpoint);
    ``resume`` is ``latest`` or a ``checkpoint-N`` folder.
    """

    manifest: str = "manifests/dubai128.parquet"
    out: str = "runs/landcover"
    scheme: str = "oem8"
    size: int | None = None
    with_height: bool = False
    gsd: float = 0.5
    elevation: str | None = None
    latent_channels: int = 4
    ae_block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    ae_layers_per_block: int = 1
    ae_norm_num_groups: int = 8
    kl_weight: float = 1e-6
    class_balanced: bool = False
    unet_block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 128])
    unet_layers_per_block: int = 1
    unet_norm_num_groups: int = 8
    unet_attention: bool = True
    ae_steps: int = 2000
    unet_steps: int = 10000
    batch_size: int = 16
    ae_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    ae_lr: float = 1e-3
    unet_lr: float = 2e-4
    ema_decay: float = 0.999
    num_train_timesteps: int = 1000
    prediction_type: str = "epsilon"
    snr_gamma: float | None = None
    scheduler: str = "ddim"
    num_inference_steps: int = 20
    checkpoint_every: int = 1000
    checkpoints_total_limit: int = 3
    preview_every: int = 1000
    preview_n: int = 8
    seed: int = 0
    init_pipeline: str | None = None
    max_steps: int | None = None
    resume: str | None = None

    def __post_init__(self):
        positive = (
            "latent_channels",
            "ae_layers_per_block",
            "ae_norm_num_groups",
            "unet_layers_per_block",
            "unet_norm_num_groups",
            "batch_size",
            "gradient_accumulation_steps",
            "num_train_timesteps",
            "num_inference_steps",
            "checkpoint_every",
            "checkpoints_total_limit",
            "preview_every",
        )
        require_positive(self, positive)
        require_non_negative(self, ("ae_steps", "unet_steps", "preview_n"))
        require_positive(self, ("ae_batch_size", "max_steps"), optional=True)
        require_choice(self, "scheduler", LAYOUT_SAMPLERS)
        require_choice(self, "prediction_type", PREDICTION_TYPES)
        if self.snr_gamma is not None:
            require_above_zero(self, ("snr_gamma",), finite=True)
        if self.size is not None and self.size < 8:
            raise ConfigError(f"config 'size': {self.size} is too small (at least 8 px)")
        if not self.gsd > 0:
            raise ConfigError(f"config 'gsd': {self.gsd} must be > 0 metres")
        for name in ("ae_block_out_channels", "unet_block_out_channels"):
            if not getattr(self, name):
                raise ConfigError(f"config '{name}': needs at least one width")
        require_open_unit(self, ("ema_decay",))

    @property
    def total_steps(self) -> int:
        """Optimizer steps of both phases."""
        return self.ae_steps + self.unet_steps

    @property
    def out_dir(self) -> Path:
        """Training folder: checkpoints, previews, metrics, and the final ``pipeline/``."""
        return Path(self.out)
