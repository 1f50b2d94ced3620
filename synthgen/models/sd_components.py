"""The Stable Diffusion family's components at any size, from a typed config: the same classes as SD 1.5.

``AutoencoderKL`` (RGB ↔ 4 latent channels, factor 2^(levels-1): 3 levels → 4, 4 levels → 8),
``UNet2DConditionModel`` (cross-attention on text at the deepest levels) and ``CLIPTextModel`` (+ ``CLIPTextConfig``,
whose sizes ``clip_text_config`` also sets for SD3's encoders) over a locally trained tokenizer; SD's DDPM noise
schedule is ``schedulers.sd_noise_scheduler``. A tiny base built here and a full-size SD 1.5/2.x folder or hub id
(``load_base_components``) give the same objects, so the ControlNet training and pipeline never ask which one they
got.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from synthgen.config import require_positive
from synthgen.errors import ConfigError
from synthgen.io.weights import refuse_pickle_weights

BASE_SUBFOLDERS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")


@dataclass
class SDArchitecture:
    """Sizes of a small SD-family base. The UNet's last ``unet_cross_attention_levels`` levels attend to the text."""

    latent_channels: int = 4
    vae_block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    vae_layers_per_block: int = 1
    vae_norm_num_groups: int = 8
    unet_block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    unet_layers_per_block: int = 1
    unet_norm_num_groups: int = 8
    unet_cross_attention_levels: int = 2
    unet_attention_heads: int = 4
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 2
    text_intermediate_size: int = 128
    num_train_timesteps: int = 1000

    def __post_init__(self):
        for name in ("vae_block_out_channels", "unet_block_out_channels"):
            widths = getattr(self, name)
            groups = getattr(self, name.replace("block_out_channels", "norm_num_groups"))
            if not widths or any(w < 1 or w % groups for w in widths):
                raise ConfigError(f"config '{name}': {widths} must be non-empty widths divisible by {groups}")
        if len(self.vae_block_out_channels) not in (3, 4):
            raise ConfigError(
                f"config 'vae_block_out_channels': {len(self.vae_block_out_channels)} levels (allowed: 3 or 4, "
                "for a latent factor of 4 or 8)"
            )
        levels = len(self.unet_block_out_channels)
        if not 0 <= self.unet_cross_attention_levels <= levels:
            raise ConfigError(
                f"config 'unet_cross_attention_levels': {self.unet_cross_attention_levels} not in 0..{levels}"
            )
        for w in self.unet_block_out_channels[levels - self.unet_cross_attention_levels :]:
            if w % self.unet_attention_heads:
                raise ConfigError(f"config 'unet_attention_heads': {self.unet_attention_heads} does not divide {w}")
        if self.text_hidden_size % self.text_heads:
            raise ConfigError(f"config 'text_heads': {self.text_heads} does not divide text_hidden_size")
        require_positive(self, ("latent_channels", "text_layers", "text_intermediate_size", "num_train_timesteps"))

    @property
    def latent_factor(self) -> int:
        """Pixels per latent cell of the VAE."""
        return 2 ** (len(self.vae_block_out_channels) - 1)


def build_vae(arch: SDArchitecture) -> AutoencoderKL:
    """An untrained RGB ``AutoencoderKL``."""
    levels = len(arch.vae_block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(arch.vae_block_out_channels),
        layers_per_block=arch.vae_layers_per_block,
        latent_channels=arch.latent_channels,
        norm_num_groups=arch.vae_norm_num_groups,
    )


def build_unet(arch: SDArchitecture, sample_size: int) -> UNet2DConditionModel:
    """An untrained text-conditioned ``UNet2DConditionModel`` for latents of side ``sample_size``."""
    levels = len(arch.unet_block_out_channels)
    plain = levels - arch.unet_cross_attention_levels
    down = ("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * arch.unet_cross_attention_levels
    up = ("CrossAttnUpBlock2D",) * arch.unet_cross_attention_levels + ("UpBlock2D",) * plain
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=arch.latent_channels,
        out_channels=arch.latent_channels,
        block_out_channels=tuple(arch.unet_block_out_channels),
        layers_per_block=arch.unet_layers_per_block,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn" if arch.unet_cross_attention_levels else "UNetMidBlock2D",
        cross_attention_dim=arch.text_hidden_size,
        attention_head_dim=arch.unet_attention_heads,
        norm_num_groups=arch.unet_norm_num_groups,
    )


def clip_text_config(arch, tokenizer, projection_dim: int, max_positions: int) -> CLIPTextConfig:
    """The ``CLIPTextConfig`` of a small CLIP text encoder over ``tokenizer``'s vocabulary and special tokens, sized by
    ``arch``'s ``text_hidden_size``, ``text_intermediate_size``, ``text_layers`` and ``text_heads`` (an
    ``SDArchitecture`` or an ``SD3Architecture``)."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.text_hidden_size,
        intermediate_size=arch.text_intermediate_size,
        num_hidden_layers=arch.text_layers,
        num_attention_heads=arch.text_heads,
        max_position_embeddings=max_positions,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_text_encoder(arch: SDArchitecture, tokenizer) -> CLIPTextModel:
    """An untrained ``CLIPTextModel`` over ``tokenizer``'s vocabulary (77 positions, like CLIP)."""
    return CLIPTextModel(clip_text_config(arch, tokenizer, arch.text_hidden_size, tokenizer.model_max_length))


def vae_latent_factor(vae: AutoencoderKL) -> int:
    """Pixels per latent cell of any ``AutoencoderKL``."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def conditioning_embedding_channels(vae: AutoencoderKL, widths: list[int] | None = None) -> tuple[int, ...]:
    """ControlNet conditioning-embedding widths that bring a pixel-size control down to the VAE's latent size.

    ``widths`` empty or None: SD's (16, 32, 96, 256) cut to log2(factor) + 1 entries; otherwise they are checked.
    """
    needed = int(math.log2(vae_latent_factor(vae))) + 1
    widths = list(widths or [16, 32, 96, 256][:needed])
    if len(widths) != needed:
        raise ConfigError(
            f"config 'conditioning_embedding_out_channels': {widths} has {len(widths)} widths; the VAE's factor "
            f"{vae_latent_factor(vae)} needs {needed}"
        )
    return tuple(widths)


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence huggingface_hub's warnings and transformers' progress bars while loading: an unreachable hub is
    reported once, as one line, and a bad run prints nothing but its error."""
    from transformers.utils import logging as transformers_logging

    hub_logger = logging.getLogger("huggingface_hub")
    level, bars = hub_logger.level, transformers_logging.is_progress_bar_enabled()
    hub_logger.setLevel(logging.ERROR)
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="huggingface_hub")
            yield
    finally:
        hub_logger.setLevel(level)
        if bars:
            transformers_logging.enable_progress_bar()


def load_base_components(base: str | Path) -> dict:
    """``vae``, ``text_encoder``, ``tokenizer``, ``unet``, ``scheduler`` (DDPM, for training) of an SD folder or hub id.

    The folder has the ``StableDiffusionPipeline`` layout (SD 1.5/2.x, or the tiny base of ``synthgen train
    sd-base``). A missing folder or component is a one-line ConfigError.
    """
    from synthgen.models.text_tokenizer import load_tokenizer

    path = Path(base)
    looks_local = path.exists() or str(base).startswith((".", "/", "~")) or str(base).count("/") != 1
    if looks_local and not (path / "model_index.json").is_file():
        raise ConfigError(
            f"--base {base}: not a Stable Diffusion folder (no model_index.json); give a folder or hub id"
        )
    refuse_pickle_weights(path)
    name = str(base)
    try:
        with quiet_loading():
            components = {
                "vae": AutoencoderKL.from_pretrained(name, subfolder="vae"),
                "text_encoder": CLIPTextModel.from_pretrained(name, subfolder="text_encoder"),
                "unet": UNet2DConditionModel.from_pretrained(name, subfolder="unet"),
                "scheduler": DDPMScheduler.from_pretrained(name, subfolder="scheduler"),
            }
    except (OSError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--base {base}: cannot load the Stable Diffusion components ({message})") from None
    components["tokenizer"] = load_tokenizer(name, "tokenizer")
    return components


def num_parameters(*models) -> int:
    """Total parameters of the given modules."""
    return sum(p.numel() for m in models for p in m.parameters())
