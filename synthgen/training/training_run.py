"""The frame a training loop runs in: its folder, the checkpoint it resumes from, the ``Accelerator``, seeding,
the per-micro-batch generators, checkpoints when due and ``metrics.json`` at the end.

``start_training_run`` does the setup every loop starts with (in this order: training folder with the config saved,
the checkpoint to resume from, the Accelerator, ``set_seed``); the ``TrainingRun`` it returns carries what the loop
needs from it afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from synthgen.training.checkpoints import (
    find_checkpoint,
    frozen_dtype,
    last_step,
    load_checkpoint,
    make_accelerator,
    make_out_dir,
    save_checkpoint,
)


@dataclass
class TrainingRun:
    """One training run: its config, its folder, the checkpoint it resumes from (None for a fresh run), the
    Accelerator and the dtype of frozen weights. Made by ``start_training_run``."""

    config: Any
    out_dir: Path
    checkpoint: Path | None
    accelerator: Accelerator
    weight_dtype: torch.dtype

    @property
    def device(self) -> torch.device:
        """The Accelerator's device."""
        return self.accelerator.device

    @property
    def stop(self) -> int:
        """The step this run stops at: ``total_steps``, or ``max_steps`` when that comes first."""
        return last_step(self.config)

    def resume(self, state: dict, progress: Callable[[int], None] | None = None) -> dict:
        """The trainer state to start from: ``state`` for a fresh run, else the checkpoint's (its accelerator state
        loaded); the steps already done are reported to ``progress``."""
        state = load_checkpoint(self.accelerator, self.checkpoint, state)
        if progress and state["step"]:
            progress(state["step"])
        return state

    def generator(self, step: int, micro: int) -> torch.Generator:
        """The CPU generator of one micro-batch, seeded from (run seed, step, micro-batch), so a resumed run draws
        exactly what an uninterrupted one would."""
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + step * 101 + micro)

    def checkpoint_if_due(self, state: dict) -> None:
        """On the main process, save ``checkpoint-<step>`` every ``checkpoint_every`` steps and at the last step."""
        step = state["step"]
        if self.accelerator.is_main_process and (step % self.config.checkpoint_every == 0 or step == self.stop):
            save_checkpoint(self.accelerator, self.out_dir, state, self.config.checkpoints_total_limit)

    def finish(self, metrics: dict) -> dict:
        """On the main process write ``metrics`` to ``<out>/metrics.json``; end the Accelerator's training and return
        ``metrics``."""
        if self.accelerator.is_main_process:
            (self.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        self.accelerator.end_training()
        return metrics


def start_training_run(config, resumable: Collection[str] | None = None) -> TrainingRun:
    """Create the training folder and save the config in it (with ``resumable``, first refuse a ``--resume`` into a
    folder trained with other values of the other keys), find the checkpoint to resume from, make the Accelerator
    (bf16 on GPU, fp32 on CPU) and seed every generator with ``config.seed``."""
    out_dir = make_out_dir(config, resumable)
    checkpoint = find_checkpoint(out_dir, config.resume) if config.resume else None
    accelerator = make_accelerator(config)
    set_seed(config.seed)
    return TrainingRun(config, out_dir, checkpoint, accelerator, frozen_dtype(accelerator))
