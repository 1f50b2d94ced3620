"""The components of a small Stable Diffusion 3 model, built from a typed config with diffusers/transformers classes.

``SD3Architecture`` sizes an ``SD3Transformer2DModel`` (MMDiT), a 16-channel ``AutoencoderKL`` and two
``CLIPTextModelWithProjection`` text encoders; T5 is left out (``text_encoder_3=None``), so SD3's T5 slot holds
zeros and a prompt goes to the CLIP encoders. The CLIP tokenizer is the byte-level BPE of
``synthgen.models.text_tokenizer``, trained locally on the prompts the model will see. Everything saves and loads
as a ``StableDiffusion3Pipeline`` folder, the layout of SD3-medium, so a full-size model loads the same way by
path or hub id.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    SD3ControlNetModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)

from synthgen.config import require_positive
from synthgen.errors import ConfigError, SynthgenError
from synthgen.io.weights import refuse_pickle_weights
from synthgen.models.schedulers import flow_match_scheduler
from synthgen.models.sd_components import clip_text_config

SD3_MEDIUM = {  # stabilityai/stable-diffusion-3-medium-diffusers transformer/config.json
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "out_channels": 16,
    "pos_embed_max_size": 192,
}
SD3_VAE = {  # the SD3 VAE: 16 latent channels, factor 8
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 16,
    "norm_num_groups": 32,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "scaling_factor": 1.5305,
    "shift_factor": 0.0609,
}


@contextmanager
def quiet():
    """Silence diffusers'/transformers' per-file messages and progress bars while saving or loading a folder."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])
        dlog.enable_progress_bar()
        tlog.enable_progress_bar()


@dataclass
class SD3Architecture:
    """Sizes of a small SD3 model. ``size`` is the training image side in pixels; the VAE halves it once per
    width after the first; the transformer's width is ``num_attention_heads * attention_head_dim``."""

    size: int = 64
    vae_block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    vae_layers_per_block: int = 1
    vae_norm_num_groups: int = 16
    latent_channels: int = 16
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
    text_max_length: int = 77
    vocab_size: int = 512  # of the tokenizer trained on the prompts (byte-level: at least 259)
    scheduler_shift: float = 3.0

    def __post_init__(self):
        require_positive(self, ("size", "vae_layers_per_block", "vae_norm_num_groups", "num_layers",
                                "num_attention_heads", "attention_head_dim", "patch_size", "text_hidden_size",
                                "text_layers", "text_heads", "text_intermediate_size", "text_projection_dim",
                                "text_max_length", "vocab_size"))  # fmt: skip
        bad = [w for w in self.vae_block_out_channels if w % self.vae_norm_num_groups]
        if not self.vae_block_out_channels or bad:
            raise ConfigError(
                f"config 'vae_norm_num_groups': {self.vae_norm_num_groups} must divide every VAE width "
                f"(vae_block_out_channels {self.vae_block_out_channels})"
            )
        if self.text_hidden_size % self.text_heads:
            raise ConfigError(
                f"config 'text_heads': {self.text_heads} must divide text_hidden_size {self.text_hidden_size}"
            )
        if self.size % self.pixels_per_token:
            raise ConfigError(
                f"config 'size': {self.size} px is not a multiple of {self.pixels_per_token} "
                f"(VAE factor {self.vae_factor} x patch {self.patch_size})"
            )
        if self.size // self.pixels_per_token > self.pos_embed_max_size:
            raise ConfigError(
                f"config 'pos_embed_max_size': {self.pos_embed_max_size} is below the "
                f"{self.size // self.pixels_per_token} patches per side"
            )

    @property
    def vae_factor(self) -> int:
        """Pixels per latent cell."""
        return 2 ** (len(self.vae_block_out_channels) - 1)

    @property
    def pixels_per_token(self) -> int:
        """Pixels per transformer token side (VAE factor x patch size): image sizes must be multiples of it."""
        return self.vae_factor * self.patch_size


def build_text_encoder(arch: SD3Architecture, tokenizer):
    """A small ``CLIPTextModelWithProjection`` for ``tokenizer`` (pooled at its end-of-text token)."""
    from transformers import CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(
        clip_text_config(arch, tokenizer, arch.text_projection_dim, arch.text_max_length)
    )


def build_vae(arch: SD3Architecture) -> AutoencoderKL:
    """A 16-channel ``AutoencoderKL`` (no quant convs, as in SD3) with scaling 1 and shift 0 until fitted."""
    levels = len(arch.vae_block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        block_out_channels=list(arch.vae_block_out_channels),
        layers_per_block=arch.vae_layers_per_block,
        latent_channels=arch.latent_channels,
        norm_num_groups=arch.vae_norm_num_groups,
        sample_size=arch.size,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=1.0,
        shift_factor=0.0,
    )


def build_transformer(arch: SD3Architecture) -> SD3Transformer2DModel:
    """The MMDiT: joint attention over image patches and the (two CLIP, concatenated) text tokens."""
    inner = arch.num_attention_heads * arch.attention_head_dim
    return SD3Transformer2DModel(
        sample_size=arch.size // arch.vae_factor,
        patch_size=arch.patch_size,
        in_channels=arch.latent_channels,
        num_layers=arch.num_layers,
        attention_head_dim=arch.attention_head_dim,
        num_attention_heads=arch.num_attention_heads,
        joint_attention_dim=2 * arch.text_hidden_size,
        caption_projection_dim=inner,
        pooled_projection_dim=2 * arch.text_projection_dim,
        out_channels=arch.latent_channels,
        pos_embed_max_size=arch.pos_embed_max_size,
    )


def build_sd3_pipeline(arch: SD3Architecture, tokenizer, seed: int = 0) -> StableDiffusion3Pipeline:
    """An untrained small SD3 pipeline (no T5), every component initialised from ``seed``."""
    torch.manual_seed(seed)
    text_encoder = build_text_encoder(arch, tokenizer)
    text_encoder_2 = build_text_encoder(arch, tokenizer)
    pipe = StableDiffusion3Pipeline(
        transformer=build_transformer(arch),
        scheduler=flow_match_scheduler(arch.scheduler_shift),
        vae=build_vae(arch),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def has_t5(folder: str | Path) -> bool:
    """Whether a local SD3 folder holds a T5 text encoder (hub ids are assumed to, as SD3-medium does)."""
    index = Path(folder) / "model_index.json"
    if not index.is_file():
        return True
    entry = json.loads(index.read_text()).get("text_encoder_3")
    return bool(entry and entry[0])


def load_sd3_pipeline(path_or_id: str | Path, controlnet=None, dtype: torch.dtype | None = None):
    """Load an SD3 folder or hub id as ``StableDiffusion3Pipeline`` (or the ControlNet pipeline when
    ``controlnet`` is given); a folder without T5 gets ``text_encoder_3=None, tokenizer_3=None`` explicitly."""
    from diffusers import StableDiffusion3ControlNetPipeline

    refuse_pickle_weights(path_or_id)
    kwargs: dict = {"use_safetensors": True}
    if not has_t5(path_or_id):
        kwargs.update(text_encoder_3=None, tokenizer_3=None)
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    cls = StableDiffusion3Pipeline
    if controlnet is not None:
        cls = StableDiffusion3ControlNetPipeline
        kwargs["controlnet"] = controlnet
    try:
        with quiet():
            pipe = cls.from_pretrained(str(path_or_id), **kwargs)
    except SynthgenError:
        raise
    except Exception as exc:  # diffusers, transformers and safetensors raise many types for a broken folder
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path_or_id}: cannot load an SD3 model ({message[:200]})") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_controlnet(transformer: SD3Transformer2DModel, num_layers: int) -> SD3ControlNetModel:
    """An ``SD3ControlNetModel`` copying the first ``num_layers`` blocks of ``transformer`` (zero-initialised
    outputs), whose control is an image encoded by the same VAE (16 channels, no extra channels). It takes the
    prompt's pooled embedding (``force_zeros_for_pooled_projection=False``), so the date in the prompt reaches it."""
    top = max(transformer.config.num_layers - 1, 1)  # the base's last block is context-pre-only: not copyable
    if not 1 <= num_layers <= top:
        raise ConfigError(f"config 'controlnet_layers': {num_layers} (allowed: 1..{top}, fewer than the base's layers)")
    keys = ("sample_size", "patch_size", "in_channels", "attention_head_dim", "num_attention_heads",
            "joint_attention_dim", "caption_projection_dim", "pooled_projection_dim", "out_channels",
            "pos_embed_max_size")  # fmt: skip
    config = {k: transformer.config[k] for k in keys}
    controlnet = SD3ControlNetModel(
        **config, num_layers=num_layers, extra_conditioning_channels=0, force_zeros_for_pooled_projection=False
    )
    controlnet.pos_embed.load_state_dict(transformer.pos_embed.state_dict())
    controlnet.time_text_embed.load_state_dict(transformer.time_text_embed.state_dict())
    controlnet.context_embedder.load_state_dict(transformer.context_embedder.state_dict())
    controlnet.transformer_blocks.load_state_dict(
        transformer.transformer_blocks[:num_layers].state_dict(), strict=False
    )
    return controlnet


def architecture_dict(arch: SD3Architecture) -> dict:
    """The architecture as plain data (saved beside the model)."""
    return asdict(arch)
