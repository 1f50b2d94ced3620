"""The typed config of ``synthgen train controlnet`` (kind ``train-controlnet``)."""

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
from synthgen.models.schedulers import INFERENCE_SCHEDULERS
from synthgen.pipelines.rgb_common import COND_ENCODINGS
from synthgen.training.timesteps import TIMESTEP_SAMPLINGS


@dataclass
class ControlNetTrainConfig:
    """Everything a ControlNet training run depends on; see ``synthgen/configs/train-controlnet/*.yaml``.

    ``base``: a ``StableDiffusionPipeline`` folder or hub id (SD 1.5/2.x, or ``<out>/pipeline`` of ``synthgen train
    sd-base``); it stays frozen. The ControlNet starts as ``ControlNetModel.from_unet(base UNet)`` with
    ``conditioning_channels`` from the scheme and ``cond_encoding`` (+1 with ``with_height``);
    ``conditioning_embedding_out_channels`` empty means SD's widths cut to the VAE's factor. ``size`` is the crop
    side (default: the tile size). ``proportion_empty_prompts`` of the prompts are replaced by "" (classifier-free
    guidance). Validation images (control | generated | real) every ``validation_every`` steps.
    ``init_controlnet``: a ``ControlNetModel`` folder to start from instead (fine-tuning; its control channels must
    match). ``timestep_sampling``: ``uniform`` or ``cubic`` (most draws at high noise, where the layout is decided).
    ``guidance_scale`` and ``conditioning_scale`` render the validation images and are saved with the pipeline as
    its defaults (``synthgen rgb`` uses them unless ``--guidance`` / ``--conditioning-scale`` are given).
    """

    manifest: str = "manifests/dubai128.parquet"
    out: str = "runs/controlnet"
    base: str = "runs/sd-base/pipeline"
    scheme: str = "oem8"
    cond_encoding: str = "onehot"
    with_height: bool = False
    size: int | None = None
    conditioning_embedding_out_channels: list[int] = field(default_factory=list)
    init_controlnet: str | None = None
    timestep_sampling: str = "uniform"
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
    conditioning_scale: float = 1.0
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
        require_positive(self, positive)
        require_non_negative(self, ("validation_n", "lr_warmup_steps"))
        require_positive(self, ("max_steps",), optional=True)
        require_choice(self, "cond_encoding", COND_ENCODINGS)
        require_choice(self, "scheduler", INFERENCE_SCHEDULERS)
        require_choice(self, "timestep_sampling", TIMESTEP_SAMPLINGS)
        if self.size is not None and (self.size < 8 or self.size % 8):
            raise ConfigError(f"config 'size': {self.size} px is not a positive multiple of 8")
        if not 0 <= self.proportion_empty_prompts <= 1:
            raise ConfigError(f"config 'proportion_empty_prompts': {self.proportion_empty_prompts} not in [0, 1]")
        require_open_unit(self, ("ema_decay",))
        require_above_zero(self, ("learning_rate", "conditioning_scale"))

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run."""
        return self.steps

    @property
    def out_dir(self) -> Path:
        """Training folder: checkpoints, validation images, metrics, and the final ``pipeline/``."""
        return Path(self.out)
