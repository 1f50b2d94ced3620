"""Typed configs of ``synthgen train sd3`` (kind ``train-sd3``) and ``synthgen train sd3-controlnet``
(kind ``train-sd3-controlnet``); shipped ones live in ``synthgen/configs/<kind>/``."""

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
from synthgen.errors import ConfigError, shown
from synthgen.models.sd3_components import SD3Architecture

WEIGHTING_SCHEMES = ("logit_normal", "mode", "sigma_sqrt", "cosmap", "none")


@dataclass
class FlowMatchingConfig:
    """What both SD3 trainings share: data, prompts, SD3's timestep density/weighting, optimisation, checkpoints."""

    out: str = "runs/climate"
    prompts: str = "climate"
    normals: str | None = "bismarck_nd"
    normals_max_km: float = 200.0
    places: dict = field(default_factory=dict)  # manifest stem -> place name written into the prompts
    holdout_dates: list[str] = field(default_factory=list)  # NAIP dates kept out of training (for evaluation)
    split: str = "train"
    size: int = 64
    prompt_variants: int = 4
    weighting_scheme: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    precondition_outputs: bool = True
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    lr: float = 3e-4
    max_grad_norm: float = 1.0
    num_inference_steps: int = 20
    guidance_scale: float = 4.0
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 2
    preview_every: int = 500
    preview_n: int = 4
    seed: int = 0
    max_steps: int | None = None
    resume: str | None = None

    def _check_common(self) -> None:
        positive = ("size", "prompt_variants", "batch_size", "gradient_accumulation_steps", "num_inference_steps",
                    "checkpoint_every", "checkpoints_total_limit", "preview_every")  # fmt: skip
        require_positive(self, positive)
        require_non_negative(self, ("preview_n",))
        require_choice(self, "weighting_scheme", WEIGHTING_SCHEMES)
        require_positive(self, ("max_steps",), optional=True)
        require_above_zero(self, ("lr",))
        if not isinstance(self.places, dict):
            raise ConfigError(
                f"config 'places': expected a mapping of manifest name to place, got {shown(self.places)}"
            )

    @property
    def out_dir(self) -> Path:
        """Training folder: checkpoints, previews, metrics, and the final model folder."""
        return Path(self.out)


@dataclass
class SD3TrainConfig(FlowMatchingConfig):
    """``synthgen train sd3``: a small SD3 trained from scratch (VAE phase, then the transformer on cached
    latents), or — with ``base_model`` and ``lora_rank`` — LoRA adapters (peft) on a full-size SD3 transformer."""

    manifests: list[str] = field(default_factory=lambda: ["manifests/dubai128.parquet", "manifests/naip.parquet"])
    base_model: str | None = None
    lora_rank: int = 0
    max_sequence_length: int = 77  # T5 tokens when the base model has T5
    vae_steps: int = 1000
    transformer_steps: int = 4000
    vae_batch_size: int = 8
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    ema_decay: float = 0.999
    # architecture of a model trained from scratch (SD3Architecture)
    vae_block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    vae_layers_per_block: int = 1
    vae_norm_num_groups: int = 16
    num_layers: int = 4
    num_attention_heads: int = 4
    attention_head_dim: int = 16
    patch_size: int = 2
    pos_embed_max_size: int = 64
    text_hidden_size: int = 32
    text_layers: int = 2
    text_heads: int = 2
    text_intermediate_size: int = 64
    text_projection_dim: int = 32
    vocab_size: int = 512
    scheduler_shift: float = 3.0

    def __post_init__(self):
        self._check_common()
        require_non_negative(self, ("vae_steps", "transformer_steps", "lora_rank"))
        require_positive(self, ("vae_batch_size",))
        if not self.manifests:
            raise ConfigError("config 'manifests': needs at least one ingested manifest with rgb tiles")
        if self.lora_rank and not self.base_model:
            raise ConfigError("config 'lora_rank': LoRA needs 'base_model' (a full-size SD3 folder or hub id)")
        if self.base_model and not self.lora_rank:
            raise ConfigError("config 'base_model': set 'lora_rank' >= 1 (a base model is trained through LoRA)")
        if self.base_model and self.vae_steps:
            raise ConfigError("config 'vae_steps': must be 0 with a base model (its VAE is used as it is)")
        require_open_unit(self, ("ema_decay",))
        if not 0 <= self.max_sequence_length <= 512:
            raise ConfigError(f"config 'max_sequence_length': {self.max_sequence_length} (allowed: 0..512)")
        if self.base_model is None:
            self.architecture()  # checks the sizes

    def architecture(self) -> SD3Architecture:
        """The small model's architecture."""
        return SD3Architecture(
            size=self.size,
            vae_block_out_channels=list(self.vae_block_out_channels),
            vae_layers_per_block=self.vae_layers_per_block,
            vae_norm_num_groups=self.vae_norm_num_groups,
            num_layers=self.num_layers,
            num_attention_heads=self.num_attention_heads,
            attention_head_dim=self.attention_head_dim,
            patch_size=self.patch_size,
            pos_embed_max_size=self.pos_embed_max_size,
            text_hidden_size=self.text_hidden_size,
            text_layers=self.text_layers,
            text_heads=self.text_heads,
            text_intermediate_size=self.text_intermediate_size,
            text_projection_dim=self.text_projection_dim,
            vocab_size=self.vocab_size,
            scheduler_shift=self.scheduler_shift,
        )

    @property
    def total_steps(self) -> int:
        """Optimizer steps of both phases."""
        return self.vae_steps + self.transformer_steps


@dataclass
class SD3ControlNetTrainConfig(FlowMatchingConfig):
    """``synthgen train sd3-controlnet``: an SD3ControlNetModel on a frozen SD3 base, trained on image pairs of a
    time series (earlier image of a place → a later one, the later date in the prompt)."""

    base: str = "synthgen/weights/climate"
    manifest: str = "manifests/naip.parquet"
    pairs: str = "consecutive"  # or "all": every earlier -> later pair of a place
    controlnet_layers: int = 2
    steps: int = 3000
    out: str = "runs/climate-controlnet"

    def __post_init__(self):
        self._check_common()
        if self.pairs not in ("consecutive", "all"):
            raise ConfigError(f"config 'pairs': '{self.pairs}' is not one of consecutive, all")
        require_positive(self, ("controlnet_layers", "steps"))

    @property
    def total_steps(self) -> int:
        """Optimizer steps."""
        return self.steps
