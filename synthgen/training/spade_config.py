"""The typed config of ``synthgen train spade`` (kind ``train-spade``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from synthgen.config import require_above_zero, require_non_negative, require_open_unit, require_positive
from synthgen.errors import ConfigError


@dataclass
class SpadeTrainConfig:
    """Everything a SPADE training run depends on; see ``synthgen/configs/train-spade/*.yaml``.

    Generator: ``block_out_channels`` (one SPADE residual block per width, 2x upsampling between widths, so tiles
    are multiples of ``2 ** (len - 1)``), ``spade_hidden`` (width of the label-map convolutions), ``z_channels``
    (spatial noise at the lowest resolution). Discriminator: ``d_num_scales`` PatchGANs of ``d_layers`` 4x4 convs
    starting at ``d_channels``. Two time-scale update rule: ``g_lr`` / ``d_lr`` with Adam ``(beta1, beta2)``.
    Loss: hinge + ``lambda_fm`` x feature matching (+ ``lambda_vgg`` x VGG19 perceptual, only when ``vgg_weights``
    names a local VGG19 state dict). ``steps`` counts optimizer updates (both networks step together);
    ``max_steps`` stops early after a checkpoint; ``resume`` is ``latest`` or a ``checkpoint-N`` folder.
    """

    manifest: str = "manifests/dubai128.parquet"
    out: str = "runs/spade"
    scheme: str = "oem8"
    size: int | None = None
    with_height: bool = False
    z_channels: int = 16
    block_out_channels: list[int] = field(default_factory=lambda: [128, 128, 64, 32])
    spade_hidden: int = 32
    spectral: bool = True
    d_channels: int = 32
    d_layers: int = 3
    d_num_scales: int = 2
    steps: int = 3000
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    g_lr: float = 1e-4
    d_lr: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.9
    lambda_fm: float = 10.0
    lambda_vgg: float = 10.0
    vgg_weights: str | None = None
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 3
    preview_every: int = 500
    preview_n: int = 6
    val_tiles: int = 64
    seed: int = 0
    max_steps: int | None = None
    resume: str | None = None

    def __post_init__(self):
        positive = (
            "z_channels",
            "spade_hidden",
            "d_channels",
            "d_num_scales",
            "steps",
            "batch_size",
            "gradient_accumulation_steps",
            "checkpoint_every",
            "checkpoints_total_limit",
            "preview_every",
        )
        require_positive(self, positive)
        require_non_negative(self, ("preview_n", "val_tiles"))
        if self.d_layers < 2:
            raise ConfigError(f"config 'd_layers': {self.d_layers} must be >= 2")
        if not self.block_out_channels or min(self.block_out_channels) < 1:
            raise ConfigError(f"config 'block_out_channels': {self.block_out_channels} needs positive widths")
        require_above_zero(self, ("g_lr", "d_lr"), finite=True)
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"config '{name}': {getattr(self, name)} must be in [0, 1)")
        for name in ("lambda_fm", "lambda_vgg"):  # NaN is refused too
            if not getattr(self, name) >= 0:
                raise ConfigError(f"config '{name}': {getattr(self, name)} must be >= 0")
        require_open_unit(self, ("ema_decay",))
        require_positive(self, ("max_steps",), optional=True)
        factor = self.size_factor
        if self.size is not None and (self.size < factor or self.size % factor):
            raise ConfigError(f"config 'size': {self.size} px is not a positive multiple of {factor}")

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run."""
        return self.steps

    @property
    def size_factor(self) -> int:
        """Tile sizes must be multiples of this (the generator's downsampling factor)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def out_dir(self) -> Path:
        """Training folder: checkpoints, previews, metrics, and the final ``pipeline/``."""
        return Path(self.out)
