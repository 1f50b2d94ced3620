"""Climate-aware image generation: sites (place, date, land cover, climate) → RGB images through diffusers' SD3.

``ClimatePipeline`` wraps a ``StableDiffusion3Pipeline`` — or, for time series, a
``StableDiffusion3ControlNetPipeline`` whose ``SD3ControlNetModel`` takes the earlier image of the same place as
control — with the prompt templates the model was trained with. Per site it builds the spatial and the climate
prompt (``synthgen.climate.prompts``), sends the spatial prompt to the CLIP encoders and the climate prompt to T5,
or both joined when the model has no T5, and returns uint8 images.

A model folder is an SD3 diffusers folder plus ``climate.json`` (``ClimateModelInfo``: the prompt templates, the T5
sequence length the model was trained with, its training size and gsd). A folder or hub id without ``climate.json``
(e.g. SD3-medium) uses ``prompts/climate.yaml`` and SD3's defaults.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput

from synthgen.climate.prompts import (
    PromptError,
    PromptSpec,
    SitePrompts,
    build_prompts,
    check_prompts,
    load_prompt_spec,
    sd3_prompt_kwargs,
)
from synthgen.errors import ConfigError, SynthgenError, shown
from synthgen.io.weights import refuse_pickle_weights
from synthgen.models.sd3_components import has_t5, load_sd3_pipeline
from synthgen.pipelines.loading import loading_errors

INFO_FILE = "climate.json"
LORA_FILE = "pytorch_lora_weights.safetensors"


@dataclass
class ClimateModelInfo:
    """What a climate model folder records beside the diffusers files."""

    prompts: dict = field(default_factory=dict)
    max_sequence_length: int = 256
    size: int = 512
    gsd: float | None = None
    base: str | None = None  # for a ControlNet or LoRA folder: the base model it was trained on
    trained_on: list[str] = field(default_factory=list)

    def save(self, folder: Path) -> Path:
        """Write ``climate.json`` into ``folder``."""
        path = Path(folder) / INFO_FILE
        path.write_text(json.dumps(asdict(self), indent=1, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> ClimateModelInfo | None:
        """Read ``climate.json`` of a local folder (None when there is none, e.g. a hub id)."""
        path = Path(folder) / INFO_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"{path}: not a valid climate model description ({exc})") from None


@dataclass
class ClimatePipelineOutput(BaseOutput):
    """``images`` (B, H, W, 3) uint8 RGB and the prompts each was made from."""

    images: np.ndarray
    prompts: list[SitePrompts]


def control_tensor(images: list[np.ndarray], size: int) -> torch.Tensor:
    """(B, 3, size, size) float in [-1, 1] from HxWx3 uint8 control images, area-resampled to ``size``."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if batch.shape[-1] != size or batch.shape[-2] != size:
        batch = F.interpolate(batch, size=(size, size), mode="area" if batch.shape[-1] > size else "bilinear")
    return batch.clamp(-1, 1)


class ClimatePipeline:
    """Sites → images with an SD3 model (and optionally an SD3 ControlNet); see the module docstring."""

    def __init__(self, sd3, spec: PromptSpec, info: ClimateModelInfo, with_t5: bool):
        self.sd3 = sd3
        self.spec = spec
        self.info = info
        self.with_t5 = with_t5
        self.has_controlnet = hasattr(sd3, "controlnet") and sd3.controlnet is not None

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        controlnet: str | Path | None = None,
        prompts: str | Path | None = None,
        device: str | None = None,
    ) -> ClimatePipeline:
        """Load an SD3 folder/hub id (+ an SD3ControlNetModel folder/hub id), on CUDA in bf16 when there is one."""
        from diffusers import SD3ControlNetModel

        info = ClimateModelInfo.load(model) or ClimateModelInfo()
        spec = load_prompt_spec(prompts) if prompts else None
        if spec is None:
            spec = PromptSpec.from_dict(info.prompts, f"{model}/{INFO_FILE}") if info.prompts else load_prompt_spec()
        cn = None
        if controlnet is not None:
            refuse_pickle_weights(controlnet)
            with loading_errors(controlnet, "an SD3 ControlNet"):
                cn = SD3ControlNetModel.from_pretrained(str(controlnet), use_safetensors=True)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.startswith("cuda") else None
        lora = Path(model) / LORA_FILE
        if lora.is_file():
            if not info.base:
                raise ConfigError(f"{model}: LoRA weights without a base model in {INFO_FILE}")
            sd3 = load_sd3_pipeline(info.base, controlnet=cn, dtype=dtype)
            sd3.load_lora_weights(str(model))
            model = info.base
        else:
            sd3 = load_sd3_pipeline(model, controlnet=cn, dtype=dtype)
        if cn is not None and cn.config.in_channels != sd3.transformer.config.in_channels:
            raise ConfigError(f"{controlnet}: ControlNet latent channels do not match the model {model}")
        sd3.to(device)
        return cls(sd3, spec, info, with_t5=has_t5(model) and sd3.text_encoder_3 is not None)

    @property
    def pixels_per_token(self) -> int:
        """Image sides must be multiples of this (VAE factor x patch size)."""
        return self.sd3.vae_scale_factor * self.sd3.transformer.config.patch_size

    @property
    def max_size(self) -> int | None:
        """The largest image side the transformer (and ControlNet) can place: their position embeddings' size in
        tokens x ``pixels_per_token``; None when they have no bound."""
        models = [self.sd3.transformer, getattr(self.sd3, "controlnet", None)]
        tokens = [getattr(m.config, "pos_embed_max_size", None) for m in models if m is not None]
        tokens = [t for t in tokens if t]
        return min(tokens) * self.pixels_per_token if tokens else None

    def prompts_for(self, sites: list[dict]) -> list[SitePrompts]:
        """The prompts of each site, refusing empty ones (a one-line PromptError naming the site)."""
        out = []
        for site in sites:
            prompts = build_prompts(site, self.spec)
            check_prompts(prompts, self.spec, f"site {shown(site.get('site_id', '?'))}")
            out.append(prompts)
        return out

    def check_inputs(
        self,
        sites: list[dict],
        size: int,
        num_inference_steps: int,
        guidance_scale: float,
        generator,
        control_images,
    ) -> None:
        """Refuse bad sizes, steps, guidance, generator lists, control images and over-long prompts (one line)."""
        if not sites:
            raise ConfigError("no sites to generate")
        factor = self.pixels_per_token
        if size < factor or size % factor:
            raise ConfigError(f"size {size} px is not a positive multiple of {factor} (VAE factor x patch size)")
        if self.max_size is not None and size > self.max_size:
            raise ConfigError(f"size {size} px is over the model's largest image side, {self.max_size} px")
        if num_inference_steps < 1:
            raise ConfigError(f"steps {num_inference_steps} must be >= 1")
        if not (np.isfinite(guidance_scale) and 0 <= guidance_scale <= 30):
            raise ConfigError(f"guidance {guidance_scale} is out of range (allowed: 0..30; 1 or less = no guidance)")
        if isinstance(generator, list) and len(generator) != len(sites):
            raise ConfigError(f"{len(generator)} generators for {len(sites)} sites (need one per image)")
        if control_images is not None and not self.has_controlnet:
            raise ConfigError("control images given but the model has no ControlNet (pass --controlnet)")
        if self.has_controlnet and control_images is None:
            raise ConfigError("the model has a ControlNet: every site needs a control image (--control MANIFEST)")
        if control_images is not None and len(control_images) != len(sites):
            raise ConfigError(f"{len(control_images)} control images for {len(sites)} sites (need one per site)")

    def check_prompt_lengths(self, sites: list[dict], prompts: list[SitePrompts]) -> None:
        """Refuse a prompt longer than its text encoder takes (diffusers would cut it with a warning): the CLIP
        prompt against the CLIP tokenizer's length, the T5 prompt against the model's T5 sequence length."""
        kwargs = sd3_prompt_kwargs(prompts, self.spec, self.with_t5)
        checks = [("CLIP", "prompt", self.sd3.tokenizer, self.sd3.tokenizer.model_max_length)]
        if self.with_t5 and self.sd3.tokenizer_3 is not None:
            checks.append(("T5", "prompt_3", self.sd3.tokenizer_3, self.info.max_sequence_length))
        for name, key, tokenizer, limit in checks:
            for site, text in zip(sites, kwargs[key], strict=True):
                n = len(tokenizer(text).input_ids)
                if n > limit:
                    raise PromptError(
                        f"site {shown(site.get('site_id', '?'))}: the {name} prompt is {n} tokens, more than the "
                        f"{limit} the model takes; shorten the template or the place name (prompt: {shown(text)})"
                    )

    @torch.no_grad()
    def __call__(
        self,
        sites: list[dict],
        size: int = 64,
        num_inference_steps: int = 28,
        guidance_scale: float = 4.5,
        generator: list[torch.Generator] | None = None,
        control_images: list[np.ndarray] | None = None,
    ) -> ClimatePipelineOutput:
        """Generate one image per site. ``generator``: one per site (a site's image then depends only on its own
        seed); ``control_images``: HxWx3 uint8 earlier images of the same places, for a ControlNet model."""
        # 1. Check inputs
        self.check_inputs(sites, size, num_inference_steps, guidance_scale, generator, control_images)
        generator = generator or [torch.Generator().manual_seed(i) for i in range(len(sites))]

        # 2. Build the prompts (spatial -> CLIP, climate -> T5, joined without T5)
        prompts = self.prompts_for(sites)
        self.check_prompt_lengths(sites, prompts)
        kwargs = sd3_prompt_kwargs(prompts, self.spec, self.with_t5)
        common = {
            "height": size,
            "width": size,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "max_sequence_length": self.info.max_sequence_length,
            "output_type": "np",
        }

        # 3. Denoise: the whole batch at once, or per site with its control image (the pipeline encodes the
        #    control with the VAE's sampled posterior, drawn here from the site's own seed)
        if control_images is None:
            images = self.sd3(**kwargs, generator=generator, **common).images
        else:
            control = control_tensor(control_images, size)
            images = []
            for i, gen in enumerate(generator):
                one = {k: v[i : i + 1] for k, v in kwargs.items()}
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(gen.initial_seed())
                    out = self.sd3(**one, control_image=control[i : i + 1], generator=[gen], **common)
                images.append(out.images[0])
            images = np.stack(images)

        # 4. Check and convert to uint8
        if not np.isfinite(images).all():
            raise SynthgenError("the model produced NaN/inf pixels; refusing to write them (try fp32 or bf16)")
        uint8 = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
        return ClimatePipelineOutput(images=uint8, prompts=prompts)
