"""Label map (+ height) → RGB by a SPADE generator (GauGAN, Park et al. 2019; see synthgen/models/spade.py).

One forward pass, no denoising loop: ``num_inference_steps``, ``guidance_scale`` and ``prompt`` are
accepted so that ``synthgen rgb`` drives this pipeline and the ControlNet one alike, and are checked, but do not
change the images. Each tile's noise comes from its own ``torch.Generator`` and, on CPU, each tile runs through
the generator on its own, so a tile's bytes depend on its seed and labels, not on its batch. The folder is a
diffusers pipeline folder (``model_index.json`` with ``scheme`` and ``with_height``, ``generator/``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor

from synthgen.errors import ConfigError
from synthgen.models.spade import SpadeGenerator
from synthgen.pipelines.loading import check_model_folder, loading_errors
from synthgen.pipelines.rgb_common import (
    RGBPipelineOutput,
    check_generators_and_output,
    check_heights,
    check_labels,
    check_steps_and_guidance,
    label_condition,
    to_uint8_images,
)
from synthgen.schema import load_scheme


class RGBSpadePipeline(DiffusionPipeline):
    """SPADE label→RGB pipeline; see the module docstring."""

    def __init__(self, generator: SpadeGenerator, scheme: str = "oem8", with_height: bool = False):
        super().__init__()
        num_classes = load_scheme(scheme).num_classes
        if generator.config.num_classes != num_classes or bool(generator.config.with_height) != bool(with_height):
            raise ConfigError(
                f"spade pipeline: generator built for {generator.config.num_classes} classes "
                f"(with_height={generator.config.with_height}), scheme '{scheme}' has {num_classes} "
                f"(with_height={with_height})"
            )
        self.register_modules(generator=generator)
        self.register_to_config(scheme=scheme, with_height=bool(with_height))

    @property
    def size_factor(self) -> int:
        """Tile sizes must be multiples of this."""
        return self.generator.downsample_factor

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> RGBSpadePipeline:
        """Load a folder written by ``save_pretrained`` (or a hub id); failures are one-line ConfigErrors."""
        check_model_folder(Path(pretrained_model_name_or_path), cls.__name__, "SPADE")
        with loading_errors(pretrained_model_name_or_path, "the SPADE model"):
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
    ) -> None:
        """Refuse bad labels, heights, prompts, step count, guidance, generators or output type (one line each)."""
        batch, height, width = check_labels(labels)
        factor = self.size_factor
        if height < factor or height % factor or width % factor or width < factor:
            raise ConfigError(f"tile size {height}x{width} px is not a positive multiple of {factor}")
        k = self.generator.config.num_classes
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > k):
            raise ConfigError(
                f"label values {int(labels.min())}..{int(labels.max())} are outside scheme "
                f"'{self.config.scheme}' (allowed: 0..{k})"
            )
        check_heights(heights, labels)
        if prompt is not None and len(prompt) != batch:
            raise ConfigError(f"{len(prompt)} prompts given for {batch} label maps (need one per tile or none)")
        check_steps_and_guidance(num_inference_steps, guidance_scale)
        check_generators_and_output(generator, batch, output_type)

    @torch.no_grad()
    def __call__(
        self,
        labels: torch.Tensor,
        heights: torch.Tensor | None = None,
        prompt: list[str] | None = None,
        num_inference_steps: int = 1,
        guidance_scale: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "uint8",
    ) -> RGBPipelineOutput:
        """Render one RGB image per label map.

        ``labels`` (B, H, W) scheme codes (0 = nodata), ``heights`` (B, H, W) metres (NaN = unknown; used only by a
        ``with_height`` model). ``generator``: one per tile (each tile then depends only on its own seed) or one for
        the batch. ``output_type``: ``uint8`` (B, H, W, 3) uint8, or ``np`` float32 in [0, 1] as diffusers returns
        it (``synthgen rgb`` uses it to refuse NaN before rounding).
        """
        # 1. Check inputs
        self.check_inputs(labels, heights, prompt, num_inference_steps, guidance_scale, generator, output_type)
        device = self._execution_device
        dtype = self.generator.dtype
        batch, height, width = labels.shape

        # 2. Build the condition: one-hot classes (+ height channel)
        scheme = load_scheme(self.config.scheme)
        cond = label_condition(
            labels.to(device),
            None if heights is None else heights.to(device),
            scheme,
            "onehot",
            self.config.with_height,
        ).to(dtype)

        # 3. Draw each tile's noise from its own generator
        shape = (batch, *self.generator.noise_shape(height, width))
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)

        # 4. Render: the whole batch on GPU; one tile at a time on CPU, where oneDNN convolutions round differently
        #    between batch sizes (per tile, a tile's bytes do not depend on its batch, and it is no slower there)
        if device.type == "cpu":
            images = torch.cat([self.generator(cond[i : i + 1], noise[i : i + 1]) for i in range(batch)])
        else:
            images = self.generator(cond, noise)

        # 5. Convert: uint8 for writing, or float [0, 1] for checking
        if output_type == "uint8":
            out = to_uint8_images(images)
        else:
            out = ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)

        # 6. Offload and return
        self.maybe_free_model_hooks()
        return RGBPipelineOutput(images=out)
