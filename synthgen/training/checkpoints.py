"""What every training loop shares: the training folder, the ``Accelerator``, ``checkpoint-N`` folders and resume,
EMA weight swaps, folders published through a temporary name, and preview strips.

A checkpoint is ``<out>/checkpoint-<step>``: ``accelerator.save_state`` plus ``trainer_state.json`` (the loop's
step, loss curves and timings), written under ``.tmp-checkpoint-<step>`` and renamed when complete, so a folder
named ``checkpoint-N`` holding ``trainer_state.json`` is always whole. ``resume="latest"`` takes the highest one.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image

from synthgen.config import config_to_dict, read_yaml_mapping, save_config
from synthgen.errors import ConfigError, SynthgenError

STATE_FILE = "trainer_state.json"
CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)")


def find_checkpoint(out_dir: Path, resume: str) -> Path | None:
    """The checkpoint to resume from: ``latest`` (None when there is none yet) or a given folder."""
    if resume == "latest":
        done = [
            p for p in out_dir.glob("checkpoint-*") if CHECKPOINT_RE.fullmatch(p.name) and (p / STATE_FILE).is_file()
        ]
        return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(
            f"resume: '{resume}' is not a finished checkpoint folder (allowed: latest or a checkpoint-N path)"
        )
    return path


def load_checkpoint(accelerator: Accelerator, checkpoint: Path | None, state: dict) -> dict:
    """Load ``checkpoint``'s accelerator state and return its trainer state; ``state`` as it is when None."""
    if checkpoint is None:
        return state
    accelerator.load_state(str(checkpoint))
    return json.loads((checkpoint / STATE_FILE).read_text())


def publish_folder(final: Path, write: Callable[[Path], object]) -> Path:
    """Let ``write`` fill ``.tmp-<name>`` beside ``final``, then replace ``final`` by it (no half-written folder)."""
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def save_checkpoint(accelerator: Accelerator, out_dir: Path, state: dict, limit: int) -> Path:
    """``accelerator.save_state`` into ``checkpoint-<step>`` through a temporary name; keep the last ``limit``."""

    def write(tmp: Path) -> None:
        accelerator.save_state(str(tmp))
        (tmp / STATE_FILE).write_text(json.dumps(state))

    final = publish_folder(out_dir / f"checkpoint-{state['step']}", write)
    done = sorted(
        (p for p in out_dir.glob("checkpoint-*") if CHECKPOINT_RE.fullmatch(p.name)),
        key=lambda p: int(p.name.split("-")[1]),
    )
    for old in done[: -max(limit, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def check_same_run(config, out_dir: Path, resumable: Collection[str]) -> None:
    """On ``--resume``, refuse a folder whose checkpoints were made with other values of keys outside ``resumable``
    (they change the models or the batches); call it before the new config is saved over the old one."""
    saved = out_dir / "config.yaml"
    if not config.resume or not saved.is_file():
        return
    before = read_yaml_mapping(saved)
    now = config_to_dict(config)
    changed = sorted(k for k in now if k not in resumable and k in before and before[k] != now[k])
    if changed:
        raise ConfigError(
            f"{out_dir}: its checkpoints were trained with other values of {', '.join(changed)}; "
            "use another --out, or train without --resume"
        )


def make_folder(folder: Path, what: str) -> Path:
    """Create ``folder`` and its parents; one that cannot be written is a one-line error naming it as ``what``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SynthgenError(f"{folder}: cannot write the {what} ({exc.strerror})") from None
    return folder


def make_out_dir(config, resumable: Collection[str] | None = None) -> Path:
    """Create the training folder ``config.out_dir`` and save the resolved config in it; with ``resumable``, first
    refuse a ``--resume`` into a folder trained with other values of the other keys (``check_same_run``)."""
    out_dir = make_folder(config.out_dir, "output folder")
    if resumable is not None:
        check_same_run(config, out_dir, resumable)
    if getattr(config, "resume", None):
        find_checkpoint(out_dir, config.resume)  # a --resume that names no checkpoint fails before anything is saved
    save_config(config, out_dir / "config.yaml")
    return out_dir


def make_accelerator(config) -> Accelerator:
    """bf16 on GPU, fp32 on CPU, with the config's gradient accumulation."""
    return Accelerator(
        mixed_precision="bf16" if torch.cuda.is_available() else "no",
        gradient_accumulation_steps=config.gradient_accumulation_steps,
    )


def frozen_dtype(accelerator: Accelerator) -> torch.dtype:
    """The dtype of frozen weights: bf16 under bf16 mixed precision, else fp32."""
    return torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32


def freeze(module, device, dtype: torch.dtype) -> None:
    """No gradients, on ``device``, cast to ``dtype`` only when it is not fp32 (a no-op cast warns in diffusers)."""
    if module is None:
        return
    module.requires_grad_(False).to(device)
    if dtype != torch.float32:
        module.to(dtype)


def last_step(config) -> int:
    """The step a run stops at: ``total_steps``, or ``max_steps`` when that comes first."""
    return min(config.total_steps, config.max_steps or config.total_steps)


def ema_model(model, ema):
    """A new model of ``model``'s class and config holding its state (buffers such as spectral-norm vectors) with
    ``ema``'s weights as its parameters: the model a training run saves."""
    final = type(model).from_config(model.config)
    final.load_state_dict(model.state_dict())
    ema.copy_to(final.parameters())
    return final


@torch.no_grad()
def unit_std_scale(encode: Callable, tiles, config, size: int) -> float:
    """The latent scaling factor that gives unit std: 1 / the std of ``encode``'s latents of four seeded batches of
    ``tiles`` (``config.seed + 1``, ``config.batch_size`` crops of ``size`` px); 1 when the latents are constant."""
    latents = [encode(tiles.batch(config.seed + 1, 0, i, config.batch_size, size)).float() for i in range(4)]
    std = torch.cat(latents).std().item()
    return 1.0 / std if std > 1e-6 else 1.0


@contextmanager
def ema_weights(ema, params: Iterable) -> Iterator[None]:
    """Swap the EMA weights into ``params`` for the duration of a ``with`` block (nothing when ``ema`` is None)."""
    if ema is None:
        yield
        return
    params = list(params)
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def save_strip(rows: list, path: Path) -> Path:
    """A PNG of image rows (each a sequence of (H, W, 3) uint8 images), tiles padded white, rows stacked."""
    padded = [[np.pad(im, ((2, 2), (2, 2), (0, 0)), constant_values=255) for im in row] for row in rows]
    lines = [np.concatenate(row, 1) for row in padded]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(lines, 0)).save(path)
    return path
