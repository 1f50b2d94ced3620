"""Label map (+ height) → RGB by a ControlNet beside a frozen Stable Diffusion base.

``RGBControlNetPipeline`` is diffusers' ``StableDiffusionControlNetPipeline`` (same components, same folder layout,
its ``encode_prompt`` and ``prepare_latents``) with one ``__call__`` that takes label maps instead of a control
image: the control is ``label_condition`` of the labels (K one-hot channels or the palette's 3, + height), which
``ControlNetModel(conditioning_channels=C)`` takes as is, and the prompt defaults to each tile's composition
("aerial image; 40 % building, ..."). The parent's ``__call__`` is not reused because its ``check_inputs`` checks
a control image and prompts that this pipeline builds itself, and because byte-identical output on CPU needs the
networks to run on a fixed batch shape: on CPU the tiles are denoised one at a time (oneDNN/MKL convolutions and
GEMMs sum in a batch-dependent order), on a GPU the whole batch runs at once. Each tile's noise comes from its
own ``torch.Generator``, so on CPU a tile depends only on its seed, labels and prompt, never on its batch.

The folder is a diffusers pipeline folder (``vae/ text_encoder/ tokenizer/ unet/ controlnet/ scheduler/`` and
``model_index.json`` with ``scheme``, ``cond_encoding`` and ``with_height``); the safety checker is off (it blanks
aerial images).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from diffusers.utils.torch_utils import randn_tensor

from synthgen.errors import ConfigError, SchemeError, allowed
from synthgen.pipelines.loading import check_model_folder, loading_errors
from synthgen.pipelines.rgb_common import (
    MAX_STEPS,
    RGBPipelineOutput,
    check_generators_and_output,
    check_heights,
    check_labels,
    check_steps_and_guidance,
    label_condition,
    num_condition_channels,
    to_uint8_images,
)
from synthgen.prompts import composition_prompts
from synthgen.schema import load_scheme

SIZE_MULTIPLE = 8


class RGBControlNetPipeline(StableDiffusionControlNetPipeline):
    """ControlNet label→RGB pipeline; see the module docstring."""

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        controlnet: ControlNetModel,
        scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker: bool = False,
        scheme: str = "oem8",
        cond_encoding: str = "onehot",
        with_height: bool = False,
        conditioning_scale: float = 1.0,
        guidance_scale: float = 7.5,
    ):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            controlnet=controlnet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
        channels = num_condition_channels(load_scheme(scheme), cond_encoding, with_height)
        if not isinstance(controlnet, ControlNetModel) or controlnet.config.conditioning_channels != channels:
            got = getattr(getattr(controlnet, "config", None), "conditioning_channels", type(controlnet).__name__)
            raise ConfigError(
                f"controlnet takes {got} control channels; scheme '{scheme}' with cond_encoding '{cond_encoding}' "
                f"and with_height={with_height} gives {channels}"
            )
        if not (math.isfinite(conditioning_scale) and conditioning_scale > 0):
            raise ConfigError(f"conditioning_scale {conditioning_scale} must be a finite number > 0")
        if not (math.isfinite(guidance_scale) and guidance_scale >= 0):
            raise ConfigError(f"guidance_scale {guidance_scale} must be a finite number >= 0")
        self.register_to_config(
            scheme=scheme,
            cond_encoding=cond_encoding,
            with_height=bool(with_height),
            conditioning_scale=float(conditioning_scale),
            guidance_scale=float(guidance_scale),
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> RGBControlNetPipeline:
        """Load a folder written by ``save_pretrained`` (or a hub id); failures are one-line ConfigErrors."""
        check_model_folder(Path(pretrained_model_name_or_path), cls.__name__, "ControlNet")
        with loading_errors(pretrained_model_name_or_path, "the ControlNet model"):
            return super().from_pretrained(str(pretrained_model_name_or_path), **{"use_safetensors": True, **kwargs})

    def check_inputs(
        self,
        labels: torch.Tensor,
        heights: torch.Tensor | None,
        prompt: list[str] | None,
        num_inference_steps: int,
        guidance_scale: float,
        generator,
        output_type: str = "uint8",
        scheme: str | None = None,
    ) -> None:
        """Refuse bad labels, heights, prompts, step count, guidance, generators, output type or a scheme other
        than the model's, each with a one-line ConfigError/SchemeError (replaces the parent's image checks)."""
        if scheme is not None and scheme != self.config.scheme:
            raise SchemeError(f"labels in scheme '{scheme}', the model wants '{self.config.scheme}'")
        batch, height, width = check_labels(labels)
        factor = max(SIZE_MULTIPLE, self.vae_scale_factor)
        if batch < 1 or min(height, width) < factor or height % factor or width % factor:
            raise ConfigError(f"tile size {height}x{width} px is not a positive multiple of {factor}")
        codes = load_scheme(self.config.scheme).codes
        present = torch.unique(labels).tolist()
        bad = sorted(set(present) - set(codes))
        if bad:
            raise SchemeError(
                f"label values {allowed(bad)} are not in scheme '{self.config.scheme}' (allowed: {allowed(codes)})"
            )
        check_heights(heights, labels)
        if prompt is not None and (isinstance(prompt, str) or len(prompt) != batch):
            raise ConfigError(f"prompt must be a list of {batch} strings (one per tile) or None")
        check_steps_and_guidance(
            num_inference_steps, guidance_scale, min(MAX_STEPS, self.scheduler.config.num_train_timesteps)
        )
        check_generators_and_output(generator, batch, output_type)

    @torch.no_grad()
    def __call__(
        self,
        labels: torch.Tensor,
        heights: torch.Tensor | None = None,
        prompt: list[str] | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        negative_prompt: str = "",
        extra_prompt: str | None = None,
        controlnet_conditioning_scale: float | None = None,
        scheme: str | None = None,
        output_type: str = "uint8",
        tile_by_tile: bool | None = None,
    ) -> RGBPipelineOutput:
        """Render one RGB image per label map.

        ``labels`` (B, H, W) int64 codes of the model's scheme (``scheme``, when given, must be it); ``heights``
        (B, H, W) metres or None; ``prompt`` one text per tile, None → composition prompts (+ ``extra_prompt``);
        ``guidance_scale`` > 1 turns on classifier-free guidance against ``negative_prompt`` (None: the model's own
        ``guidance_scale``, saved with it);
        ``controlnet_conditioning_scale`` multiplies the ControlNet's residuals (None: the model's own
        ``conditioning_scale``, saved with it; above 1 the label map steers harder); ``generator`` one
        per tile for batch-independent tiles. ``tile_by_tile`` None → True on CPU (byte-identical whatever the
        batch), False elsewhere. ``output_type``: ``uint8`` (B, H, W, 3), or ``np`` float32 in [0, 1] unrounded
        (``synthgen rgb`` uses it to refuse NaN before rounding).
        """
        # 1. Check inputs
        if guidance_scale is None:
            guidance_scale = self.config.get("guidance_scale", 7.5)
        labels = torch.as_tensor(labels)
        heights = None if heights is None else torch.as_tensor(heights)
        self.check_inputs(labels, heights, prompt, num_inference_steps, guidance_scale, generator, output_type, scheme)
        scheme_obj = load_scheme(self.config.scheme)
        device = self._execution_device
        batch, height, width = labels.shape
        do_cfg = guidance_scale > 1.0
        if controlnet_conditioning_scale is None:
            controlnet_conditioning_scale = self.config.get("conditioning_scale", 1.0)
        if not (math.isfinite(controlnet_conditioning_scale) and controlnet_conditioning_scale > 0):
            raise ConfigError(f"controlnet_conditioning_scale {controlnet_conditioning_scale} must be > 0")
        if tile_by_tile is None:
            tile_by_tile = device.type == "cpu"

        # 2. The control tensor from the label maps (+ heights)
        control = label_condition(
            labels.to(device),
            None if heights is None else heights.to(device),
            scheme_obj,
            self.config.cond_encoding,
            self.config.with_height,
        ).to(self.controlnet.dtype)

        # 3. Prompts: the given ones, else each tile's composition
        prompts = list(prompt) if prompt is not None else composition_prompts(labels, scheme_obj, extra_prompt)

        # 4. Denoise and decode chunk by chunk (one tile at a time on CPU, the whole batch elsewhere)
        chunk = 1 if tile_by_tile else batch
        images = []
        for start in range(0, batch, chunk):
            part = slice(start, start + chunk)
            gens = generator[part] if isinstance(generator, list) else generator
            images.append(
                self._denoise(
                    prompts[part],
                    control[part],
                    gens,
                    num_inference_steps,
                    guidance_scale,
                    do_cfg,
                    negative_prompt,
                    controlnet_conditioning_scale,
                    device,
                )
            )
        images = torch.cat(images)

        # 5. Offload and convert
        self.maybe_free_model_hooks()
        if output_type == "uint8":
            return RGBPipelineOutput(images=to_uint8_images(images))
        array = ((images.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
        return RGBPipelineOutput(images=array)

    def _denoise(
        self, prompts, control, generator, steps, guidance_scale, do_cfg, negative_prompt, cond_scale, device
    ) -> torch.Tensor:
        """Images in [-1, 1] (B, 3, H, W) for one chunk: encode prompts, draw noise, run the sampler, decode."""
        n = len(prompts)
        # a. text embeddings, unconditional first (as the parent pipeline orders them)
        prompt_embeds, negative_embeds = self.encode_prompt(
            prompts, device, 1, do_cfg, negative_prompt=[negative_prompt] * n
        )
        if do_cfg:
            prompt_embeds = torch.cat([negative_embeds, prompt_embeds])
            control = torch.cat([control, control])
        # b. initial noise from the tiles' own generators
        height, width = control.shape[-2:]
        shape = (n, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=prompt_embeds.dtype)
        self.scheduler.set_timesteps(steps, device=device)
        latents = latents * self.scheduler.init_noise_sigma
        # c. sampler: ControlNet residuals into the frozen UNet, classifier-free guidance, scheduler step
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            down, mid = self.controlnet(
                model_input,
                t,
                encoder_hidden_states=prompt_embeds,
                controlnet_cond=control,
                conditioning_scale=cond_scale,
                return_dict=False,
            )
            noise = self.unet(
                model_input,
                t,
                encoder_hidden_states=prompt_embeds,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                return_dict=False,
            )[0]
            if do_cfg:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise, t, latents, return_dict=False)[0]
        # d. decode
        return self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
