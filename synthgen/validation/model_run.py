"""The run folder of one validation model (``synthgen validate`` and ``synthgen adapt``): reuse it when finished,
create it, make the ``Accelerator`` and seed, resume from its latest ``checkpoint-N``, save checkpoints when due,
and write the final model (``model/``) and ``metrics.json``.

A folder holding ``model/config.json`` and ``metrics.json`` is finished and is reused as it is; otherwise the run
resumes from the latest checkpoint in it (``training/checkpoints.py``), or starts afresh.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from synthgen.errors import SynthgenError
from synthgen.training.checkpoints import (
    find_checkpoint,
    load_checkpoint,
    make_accelerator,
    publish_folder,
    save_checkpoint,
)
from synthgen.validation.config import ValidateConfig
from synthgen.validation.models import SegHeightModel


def finished(folder: Path) -> bool:
    """True when a run folder holds its final model and metrics."""
    return (folder / "model" / "config.json").is_file() and (folder / "metrics.json").is_file()


def save_model(model: SegHeightModel, folder: Path) -> Path:
    """``save_pretrained`` into ``folder`` through a temporary name."""
    return publish_folder(folder, model.save_pretrained)


def release_device_memory() -> None:
    """Hand cached GPU memory back between runs (``accelerator.free_memory`` would also run a full, slow gc)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def reuse_finished(
    folder: Path, steps: int, progress: Callable[[int], None] | None = None
) -> tuple[SegHeightModel, dict] | None:
    """The model and metrics of ``folder`` when its run is finished (its ``steps`` reported to ``progress``),
    else None."""
    if not finished(folder):
        return None
    if progress:
        progress(steps)
    return SegHeightModel.from_pretrained(folder / "model"), json.loads((folder / "metrics.json").read_text())


@dataclass
class ModelRun:
    """One model's run in ``folder``, ``steps`` optimizer steps long, on ``accelerator``; made by
    ``start_model_run``."""

    config: ValidateConfig
    folder: Path
    steps: int
    accelerator: Accelerator

    def resume(self, state: dict, progress: Callable[[int], None] | None = None) -> dict:
        """The trainer state to start from: ``state``, or that of the folder's latest checkpoint (its accelerator
        state loaded, its steps reported to ``progress``)."""
        checkpoint = find_checkpoint(self.folder, "latest")
        state = load_checkpoint(self.accelerator, checkpoint, state)
        if progress and checkpoint is not None:
            progress(state["step"])
        return state

    def checkpoint_if_due(self, state: dict) -> None:
        """On the main process, save ``checkpoint-<step>`` every ``checkpoint_every`` steps and at the last step."""
        step = state["step"]
        if self.accelerator.is_main_process and (step % self.config.checkpoint_every == 0 or step == self.steps):
            save_checkpoint(self.accelerator, self.folder, state, self.config.checkpoints_total_limit)

    def metrics(self, name: str, state: dict) -> dict:
        """The metrics every run reports: its name and folder, steps, samples, seconds, images/s and loss curve."""
        seconds = state["seconds"]
        return {
            "run": name,
            "folder": str(self.folder),
            "steps": state["step"],
            "samples": state["samples"],
            "seconds": round(seconds, 3),
            "images_per_s": round(state["samples"] / seconds, 3) if seconds else None,
            "loss": state["loss"],
        }

    def finish(self, model: SegHeightModel, metrics: dict) -> None:
        """On the main process, save ``model`` as ``<folder>/model`` and ``metrics`` as ``metrics.json`` (the
        folder is finished then); hand cached GPU memory back."""
        if self.accelerator.is_main_process:
            save_model(model, self.folder / "model")
            (self.folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
        release_device_memory()


def start_model_run(config: ValidateConfig, folder: Path, steps: int, seed: int) -> ModelRun:
    """Create ``folder`` (a one-line error when it cannot be written), make the Accelerator (bf16 on GPU, fp32 on
    CPU, the config's gradient accumulation) and seed every generator with ``seed``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SynthgenError(f"{folder}: cannot write the run folder ({exc.strerror})") from None
    accelerator = make_accelerator(config)
    set_seed(seed)
    return ModelRun(config, folder, steps, accelerator)
