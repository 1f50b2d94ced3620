"""Speed settings every generator shares: the device of a rank, model placement, batch size, writer processes.

On GPU a pipeline runs in bf16 (fp16 VAEs give NaN/black images) on ``cuda:<local rank>``, with diffusers' default
SDPA attention (``AttnProcessor2_0``, left as it is), convolutional models in channels_last, VAE slicing, and
optionally a compiled denoiser. On CPU nothing changes, so CPU tiles stay byte-reproducible.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable

import torch

from synthgen.engine.ranks import Rank
from synthgen.errors import ConfigError

CONV_MODULES = ("unet", "controlnet", "vae", "autoencoder", "generator")
DENOISERS = ("unet", "transformer", "generator", "controlnet")
MAX_AUTO_BATCH = 256


def rank_device(rank: Rank) -> str:
    """``cuda:<local rank>`` when CUDA is available, else ``cpu``."""
    return f"cuda:{rank.local_index}" if torch.cuda.is_available() else "cpu"


def place_pipeline(pipe, device: str):
    """Move a diffusers pipeline to ``device`` (bf16 on CUDA) and tune it there (``tune_pipeline``); returns it."""
    if device.startswith("cuda"):
        pipe.to(device, torch.bfloat16)
    return tune_pipeline(pipe, device)


def tune_pipeline(pipe, device: str):
    """On CUDA: channels_last for the convolutional models, VAE slicing (nothing on CPU). Returns the pipeline."""
    if device.startswith("cuda"):
        for name in CONV_MODULES:
            module = getattr(pipe, name, None)
            if isinstance(module, torch.nn.Module):
                module.to(memory_format=torch.channels_last)
        vae = getattr(pipe, "vae", None)
        if hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
    return pipe


def compile_denoisers(pipe) -> list[str]:
    """torch.compile the pipeline's denoising models in place (the pipeline keeps its modules); returns their names."""
    names = [name for name in DENOISERS if isinstance(getattr(pipe, name, None), torch.nn.Module)]
    for name in names:
        getattr(pipe, name).compile()
    return names


def parse_batch_size(value: int | str) -> int | str:
    """A batch size: an integer >= 1 or ``auto``; anything else is a one-line ConfigError."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ConfigError(f"--batch-size {value} must be >= 1 (an integer) or auto")


def largest_power_of_two(limit: int) -> int:
    """The largest power of two <= ``limit`` (>= 1)."""
    return 1 << (max(1, limit).bit_length() - 1)


def find_batch_size(probe: Callable[[int], object], start: int) -> int:
    """The largest of ``start, start/2, ..., 1`` for which ``probe(size)`` runs without CUDA running out of memory."""
    size = start
    while size >= 1:
        try:
            probe(size)
            return size
        except torch.cuda.OutOfMemoryError:
            pass
        if torch.cuda.is_available():  # give the failed try's memory back before the next
            gc.collect()
            torch.cuda.empty_cache()
        size //= 2
    raise ConfigError("--batch-size auto: out of GPU memory even at batch size 1 (try a smaller --size)")


def resolve_batch_size(
    value: int | str, device: str, probe: Callable[[int], object], cpu_default: int, limit: int
) -> int:
    """The batch size to run with: a given number as is; ``auto`` is ``cpu_default`` on CPU, and on CUDA the largest
    power of two up to ``min(limit, MAX_AUTO_BATCH)`` that ``probe`` (one sampling step at that batch) fits."""
    if value != "auto":
        return int(value)
    if not device.startswith("cuda"):
        return cpu_default
    return find_batch_size(probe, largest_power_of_two(min(limit, MAX_AUTO_BATCH)))


def default_writers(device: str) -> int:
    """Writer processes when ``--writers`` is not given: none on CPU (the model already uses every core), else the
    node's cores shared between its GPUs, one left for the generating process, at most 8."""
    if not device.startswith("cuda"):
        return 0
    per_gpu = (os.cpu_count() or 2) // max(1, torch.cuda.device_count())
    return max(1, min(8, per_gpu - 1))
