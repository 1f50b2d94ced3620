"""The typed config of ``synthgen train controlnet`` (kind ``train-controlnet``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from synthgen.errors import ConfigError, allowed
from synthgen.models.sd_components import INFERENCE_SCHEDULERS
from synthgen.pipelines.rgb_common import COND_ENCODINGS


@dataclass
class ControlNetTrainConfig:
    """Everything a ControlNet training run depends on; see ``synthgen/configs/train-controlnet/*.yaml``.

    ``base``: a ``StableDiffusionPipeline`` folder or hub id (SD 1.5/2.x, or ``<out>/pipeline`` of ``synthgen train
    sd-base``); it stays frozen. The ControlNet starts as ``ControlNetModel.from_unet(base UNet)`` with
    ``conditioning_channels`` from the scheme and ``cond_encoding`` (+1 with ``with_height``);
    ``conditioning_embedding_out_channels`` empty means SD's widths cut to the VAE's factor. ``size`` is the crop
    side (default: the tile size). ``proportion_empty_prompts`` of the prompts are replaced by "" (classifier-free
    guidance). Validation images (control | generated | real) every ``validation_every`` steps.
    """

    manifest: str = "manifests/dubai128.parquet"
    out: str = "runs/controlnet"
    base: str = "runs/sd-base/pipeline"
    scheme: str = "oem8"
    cond_encoding: str = "onehot"
    with_height: bool = False
    size: int | None = None
    conditioning_embedding_out_channels: list[int] = field(default_factory=list)
    steps: int = 6000
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_warmup_steps: int = 100
    max_grad_norm: float = 1.0
    proportion_empty_prompts: float = 0.5
    use_ema: bool = True
    ema_decay: float = 0.999
    scheduler: str = "ddim"
    num_inference_steps: int = 20
    guidance_scale: float = 3.0
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 2
    validation_every: int = 1000
    validation_n: int = 4
    seed: int = 0
    max_steps: int | None = None
    resume: str | None = None

    def __post_init__(self):
        positive = (
            "steps",
            "batch_size",
            "gradient_accumulation_steps",
            "num_inference_steps",
            "checkpoint_every",
            "checkpoints_total_limit",
            "validation_every",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"config '{name}': {getattr(self, name)} must be >= 1")
        for name in ("validation_n", "lr_warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"config '{name}': {getattr(self, name)} must be >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"config 'max_steps': {self.max_steps} must be >= 1")
        if self.cond_encoding not in COND_ENCODINGS:
            raise ConfigError(f"config 'cond_encoding': '{self.cond_encoding}' is not one of {allowed(COND_ENCODINGS)}")
        if self.scheduler not in INFERENCE_SCHEDULERS:
            raise ConfigError(f"config 'scheduler': '{self.scheduler}' is not one of {allowed(INFERENCE_SCHEDULERS)}")
        if self.size is not None and (self.size < 8 or self.size % 8):
            raise ConfigError(f"config 'size': {self.size} px is not a positive multiple of 8")
        if not 0 <= self.proportion_empty_prompts <= 1:
            raise ConfigError(f"config 'proportion_empty_prompts': {self.proportion_empty_prompts} not in [0, 1]")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"config 'ema_decay': {self.ema_decay} must be in (0, 1)")
        if not self.learning_rate > 0:
            raise ConfigError(f"config 'learning_rate': {self.learning_rate} must be > 0")

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run."""
        return self.steps

    @property
    def out_dir(self) -> Path:
        """Training folder: checkpoints, validation images, metrics, and the final ``pipeline/``."""
        return Path(self.out)
