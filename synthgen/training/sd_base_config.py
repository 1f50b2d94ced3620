"""The typed config of ``synthgen train sd-base`` (kind ``train-sd-base``): the architecture plus the run."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from synthgen.config import require_choice, require_non_negative, require_open_unit, require_positive
from synthgen.errors import ConfigError
from synthgen.models.schedulers import INFERENCE_SCHEDULERS
from synthgen.models.sd_components import SDArchitecture


@dataclass
class SDBaseTrainConfig(SDArchitecture):
    """Everything a tiny-base training run depends on; see ``synthgen/configs/train-sd-base/*.yaml``.

    Steps count optimizer updates over both phases: ``vae_steps`` of the ``AutoencoderKL`` (L1 + ``kl_weight`` ×
    KL), then ``unet_steps`` of the ``UNet2DConditionModel`` (and, with ``train_text_encoder``, the CLIP text
    encoder) on the frozen VAE's latents with the DDPM epsilon objective. The tokenizer is trained first, on the
    composition prompts of the train split. ``size`` is the crop side (default: the tile size);
    ``proportion_empty_prompts`` of the prompts are replaced by "" so that classifier-free guidance works.
    ``max_steps`` stops a run early (after a checkpoint); ``resume`` is ``latest`` or a ``checkpoint-N`` folder.
    """

    manifest: str = "manifests/dubai128.parquet"
    out: str = "runs/sd-base"
    scheme: str = "oem8"
    size: int | None = None
    tokenizer_vocab_size: int = 512
    vae_steps: int = 3000
    unet_steps: int = 6000
    batch_size: int = 16
    vae_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    vae_lr: float = 5e-4
    unet_lr: float = 2e-4
    lr_warmup_steps: int = 100
    max_grad_norm: float = 1.0
    kl_weight: float = 1e-6
    train_text_encoder: bool = True
    proportion_empty_prompts: float = 0.1
    ema_decay: float = 0.999
    scheduler: str = "ddim"
    num_inference_steps: int = 20
    guidance_scale: float = 3.0
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 2
    preview_every: int = 1000
    preview_n: int = 8
    seed: int = 0
    max_steps: int | None = None
    resume: str | None = None

    def __post_init__(self):
        super().__post_init__()
        positive = (
            "batch_size",
            "gradient_accumulation_steps",
            "num_inference_steps",
            "checkpoint_every",
            "checkpoints_total_limit",
            "preview_every",
        )
        require_positive(self, positive)
        require_non_negative(self, ("vae_steps", "unet_steps", "preview_n", "lr_warmup_steps"))
        require_positive(self, ("vae_batch_size", "max_steps"), optional=True)
        if self.size is not None and (self.size < self.latent_factor or self.size % 8):
            raise ConfigError(f"config 'size': {self.size} px must be a positive multiple of 8")
        require_choice(self, "scheduler", INFERENCE_SCHEDULERS)
        if not 0 <= self.proportion_empty_prompts <= 1:
            raise ConfigError(f"config 'proportion_empty_prompts': {self.proportion_empty_prompts} not in [0, 1]")
        require_open_unit(self, ("ema_decay",))
        if self.tokenizer_vocab_size < 262:
            raise ConfigError(f"config 'tokenizer_vocab_size': {self.tokenizer_vocab_size} must be >= 262")

    @property
    def total_steps(self) -> int:
        """Optimizer steps of both phases."""
        return self.vae_steps + self.unet_steps

    @property
    def out_dir(self) -> Path:
        """Training folder: tokenizer, checkpoints, previews, metrics, and the final ``pipeline/``."""
        return Path(self.out)

    def architecture(self) -> SDArchitecture:
        """The architecture part of the config."""
        return SDArchitecture(**{f.name: getattr(self, f.name) for f in fields(SDArchitecture)})
