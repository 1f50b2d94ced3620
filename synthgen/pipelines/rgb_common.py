"""What the two label→RGB pipelines (ControlNet and SPADE) share: the control tensor built from a label map
(+ height), the output dataclass, the input checks both make (labels, heights, step count and guidance, generators
and output type), and the conversion of model output to uint8 images.

Both pipelines take ``labels`` (B, H, W) int64 scheme codes (0 = nodata) and ``heights`` (B, H, W) float32 metres
(NaN = unknown) and return ``RGBPipelineOutput.images`` (B, H, W, 3) uint8, so ``synthgen rgb`` drives either one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput

from synthgen.errors import ConfigError, allowed
from synthgen.schema import ClassScheme

COND_ENCODINGS = ("onehot", "palette")
HEIGHT_SCALE_M = 20.0
OUTPUT_TYPES = ("uint8", "np")
MAX_STEPS = 1000
MAX_GUIDANCE = 50.0


@dataclass
class RGBPipelineOutput(BaseOutput):
    """``images``: (B, H, W, 3) uint8 RGB, one per input label map."""

    images: np.ndarray


def num_condition_channels(scheme: ClassScheme, encoding: str, with_height: bool) -> int:
    """Channels of the control tensor: K one-hot classes or 3 palette colours, plus one for height."""
    if encoding not in COND_ENCODINGS:
        raise ConfigError(f"cond encoding '{encoding}' is not one of {allowed(COND_ENCODINGS)}")
    return (scheme.num_classes if encoding == "onehot" else 3) + int(with_height)


def label_condition(
    labels: torch.Tensor,
    heights: torch.Tensor | None,
    scheme: ClassScheme,
    encoding: str = "onehot",
    with_height: bool = False,
) -> torch.Tensor:
    """The (B, C, H, W) float32 control tensor in [0, 1] for ``labels`` (B, H, W) and optional ``heights``.

    ``onehot``: channel k-1 is 1 where the label is code k (nodata = all zeros). ``palette``: the scheme's colours,
    as the segmentation ControlNets of the SD ecosystem expect. With ``with_height``, one more channel holds
    height / 20 m clipped to [0, 1] (unknown height = 0).
    """
    num_condition_channels(scheme, encoding, with_height)
    if labels.ndim != 3:
        raise ConfigError(f"labels must be (batch, height, width), got shape {tuple(labels.shape)}")
    labels = labels.long()
    if encoding == "onehot":
        k = scheme.num_classes
        if int(labels.max()) > k or int(labels.min()) < 0:
            raise ConfigError(f"label values must be 0..{k} for scheme '{scheme.name}'")
        cond = torch.nn.functional.one_hot(labels, k + 1)[..., 1:].permute(0, 3, 1, 2).float()
    else:
        lut = torch.from_numpy(scheme.palette_lut()).float() / 255.0
        cond = lut[labels.cpu()].permute(0, 3, 1, 2).to(labels.device)
    if with_height:
        if heights is None:
            height = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
        else:
            height = torch.nan_to_num(heights.float(), nan=0.0).clamp(0, HEIGHT_SCALE_M) / HEIGHT_SCALE_M
        cond = torch.cat([cond, height[:, None].to(cond.device)], 1)
    return cond


def check_labels(labels) -> tuple[int, int, int]:
    """(batch, height, width) of an integer label tensor; anything else is a one-line ConfigError."""
    if not isinstance(labels, torch.Tensor) or labels.ndim != 3 or labels.is_floating_point():
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ConfigError(f"labels must be an integer tensor (batch, height, width), got {got}")
    return tuple(labels.shape)


def check_heights(heights: torch.Tensor | None, labels: torch.Tensor) -> None:
    """Refuse heights (when given) whose shape is not the labels'."""
    if heights is not None and tuple(heights.shape) != tuple(labels.shape):
        raise ConfigError(f"heights shape {tuple(heights.shape)} differs from labels {tuple(labels.shape)}")


def check_steps_and_guidance(num_inference_steps, guidance_scale, max_steps: int = MAX_STEPS) -> None:
    """Refuse a step count that is not an integer in 1..``max_steps`` and a guidance scale that is not a finite
    number in 0..``MAX_GUIDANCE``, each as a one-line ConfigError naming the allowed range."""
    if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= max_steps:
        raise ConfigError(f"num_inference_steps {num_inference_steps} is out of range (allowed: 1..{max_steps})")
    if not (math.isfinite(guidance_scale) and 0 <= guidance_scale <= MAX_GUIDANCE):
        raise ConfigError(f"guidance_scale {guidance_scale} is out of range (allowed: 0..{MAX_GUIDANCE:g})")


def check_generators_and_output(generator, batch: int, output_type: str) -> None:
    """Refuse a generator list that is not one per tile, and an output type other than ``OUTPUT_TYPES``."""
    if isinstance(generator, list) and len(generator) != batch:
        raise ConfigError(f"{len(generator)} generators given for {batch} label maps (need one per tile)")
    if output_type not in OUTPUT_TYPES:
        raise ConfigError(f"output_type '{output_type}' is not one of {allowed(OUTPUT_TYPES)}")


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float images in [-1, 1] → (B, H, W, 3) uint8, rounding as diffusers' image processor does."""
    array = ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    return (array * 255).round().astype(np.uint8)
