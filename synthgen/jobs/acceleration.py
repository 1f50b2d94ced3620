"""Speed settings every generator shares: the device of a rank, model placement, batch size, writer processes.

On GPU a pipeline runs in bf16 (fp16 VAEs give NaN/black images) on ``cuda:<local rank>``, with diffusers' default
SDPA attention (``AttnProcessor2_0``, left as it is), convolutional models in channels_last, VAE slicing, and
optionally a compiled denoiser. On CPU nothing changes, so CPU tiles stay byte-reproducible.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path

import torch

from synthgen.engine.plan import BYTES_PER_PIXEL, check_batch_fits, largest_batch_that_fits
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


def _cgroup_room() -> int | None:
    """Bytes this process's cgroup (v2) may still take, when it has a limit."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text())
    except (OSError, ValueError):
        return None


def available_memory(device: str) -> int | None:
    """Bytes free for tensors on ``device``: the GPU's free memory, or on CPU what the machine has available (and
    its cgroup allows); None when the device cannot say."""
    if device.startswith("cuda"):
        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    try:
        meminfo = Path("/proc/meminfo").read_text().split("\n")
        free = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None
    room = _cgroup_room()
    return free if room is None else min(free, room)


def tile_bytes_per_pixel(device: str) -> float:
    """The least memory a tile needs a pixel while it is generated on ``device`` (bf16 on GPU: half)."""
    return BYTES_PER_PIXEL / 2 if device.startswith("cuda") else BYTES_PER_PIXEL


def resolve_batch_size(
    value: int | str, device: str, probe: Callable[[int], object], cpu_default: int, limit: int, side: int
) -> int:
    """The batch size to run with for tiles of ``side`` px: a given number as is; ``auto`` is ``cpu_default`` on
    CPU, and on CUDA the largest power of two up to ``min(limit, MAX_AUTO_BATCH)`` that ``probe`` (one sampling step
    at that batch) fits. Either way the batch must fit in the device's free memory at the least a tile costs
    (``synthgen.engine.plan``): a given batch that cannot is refused in one line, ``auto`` stays below it."""
    available = available_memory(device)
    per_pixel = tile_bytes_per_pixel(device)
    where = "free on the GPU" if device.startswith("cuda") else "available on this machine"
    if value != "auto":
        if available is not None:
            check_batch_fits(int(value), side, available, where, per_pixel)
        return int(value)
    fits = MAX_AUTO_BATCH if available is None else largest_batch_that_fits(side, available, per_pixel)
    if fits < 1:
        check_batch_fits(1, side, available, where, per_pixel)
    if not device.startswith("cuda"):
        return min(cpu_default, fits)
    return find_batch_size(probe, largest_power_of_two(min(limit, fits, MAX_AUTO_BATCH)))


def default_writers(device: str) -> int:
    """Writer processes when ``--writers`` is not given: none on CPU (the model already uses every core), else the
    node's cores shared between its GPUs, one left for the generating process, at most 8."""
    if not device.startswith("cuda"):
        return 0
    per_gpu = (os.cpu_count() or 2) // max(1, torch.cuda.device_count())
    return max(1, min(8, per_gpu - 1))
