"""The frame a training loop runs in: its folder, the checkpoint it resumes from, the ``Accelerator``, seeding,
the per-micro-batch generators, checkpoints when due and ``metrics.json`` (+ the final model) at the end.

``start_training_run`` does the setup every generator's loop starts with (in this order: training folder with the
config saved, the checkpoint to resume from, the Accelerator, ``set_seed``); the ``TrainingRun`` it returns carries
what the loop needs from it afterwards. ``start_model_run`` starts the same frame for one of the many models a
process trains (``synthgen validate`` and ``synthgen adapt``): its own folder, length and seed, resumed from the
folder's latest checkpoint; ``finish`` then also saves the model as ``<folder>/model``, which makes the folder
finished (``finished``, ``reuse_finished``), and keeps the Accelerator's process group for the next model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable
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
    make_folder,
    make_out_dir,
    publish_folder,
    save_checkpoint,
)


def finished(folder: Path) -> bool:
    """True when a model run's folder holds its final model and metrics."""
    return (folder / "model" / "config.json").is_file() and (folder / "metrics.json").is_file()


def reuse_finished(
    folder: Path, steps: int, load: Callable[[Path], Any], progress: Callable[[int], None] | None = None
) -> tuple[Any, dict] | None:
    """The model (``load`` of ``<folder>/model``) and metrics of ``folder`` when its run is finished (its ``steps``
    reported to ``progress``), else None."""
    if not finished(folder):
        return None
    if progress:
        progress(steps)
    return load(folder / "model"), json.loads((folder / "metrics.json").read_text())


def release_device_memory() -> None:
    """Hand cached GPU memory back between runs (``accelerator.free_memory`` would also run a full, slow gc)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class TrainingRun:
    """One training run: its config, its folder, the checkpoint it resumes from (None for a fresh run), the
    Accelerator and the dtype of frozen weights. Made by ``start_training_run``, or by ``start_model_run`` with
    ``steps``, the model run's own length (one of many runs in the process)."""

    config: Any
    out_dir: Path
    checkpoint: Path | None
    accelerator: Accelerator
    weight_dtype: torch.dtype
    steps: int | None = None

    @property
    def device(self) -> torch.device:
        """The Accelerator's device."""
        return self.accelerator.device

    @property
    def stop(self) -> int:
        """The step this run stops at: a model run's ``steps``; else ``total_steps``, or ``max_steps`` when that
        comes first."""
        return last_step(self.config) if self.steps is None else self.steps

    def resume(self, state: dict, progress: Callable[[int], None] | None = None, ema=None) -> dict:
        """The trainer state to start from: ``state`` for a fresh run, else the checkpoint's (its accelerator state
        loaded); the steps already done are reported to ``progress``. An ``ema`` is checkpointed with the run (its
        weights loaded from the checkpoint) and moved to the run's device."""
        if ema is not None:
            self.accelerator.register_for_checkpointing(ema)
        state = load_checkpoint(self.accelerator, self.checkpoint, state)
        if ema is not None:
            ema.to(self.device)
        if progress and state["step"]:
            progress(state["step"])
        return state

    def optimizer_step(self, loss: torch.Tensor, optimizer, lr_scheduler=None, clip: Iterable | None = None) -> None:
        """Backpropagate ``loss``; when gradients are synchronised, clip the norm of the ``clip`` parameters to the
        config's ``max_grad_norm``; step ``optimizer`` (and ``lr_scheduler``) and zero its gradients."""
        self.accelerator.backward(loss)
        if clip is not None and self.accelerator.sync_gradients:
            self.accelerator.clip_grad_norm_(clip, self.config.max_grad_norm)
        optimizer.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        optimizer.zero_grad()

    def step_done(
        self, state: dict, curves: dict, progress: Callable[[int], None] | None = None, ema=None, params=None
    ) -> int:
        """Count one optimizer step in ``state``: the step number, an EMA step over ``params`` (when ``ema`` is
        given), each loss of ``curves`` appended to ``state[name]`` as ``[step, value]``; report it to
        ``progress``. Returns the new step number."""
        state["step"] += 1
        if ema is not None:
            ema.step(params)
        for name, value in curves.items():
            state[name].append([state["step"], value])
        if progress:
            progress(1)
        return state["step"]

    def generator(self, step: int, micro: int) -> torch.Generator:
        """The CPU generator of one micro-batch, seeded from (run seed, step, micro-batch), so a resumed run draws
        exactly what an uninterrupted one would."""
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + step * 101 + micro)

    def checkpoint_if_due(self, state: dict) -> None:
        """On the main process, save ``checkpoint-<step>`` every ``checkpoint_every`` steps and at the last step."""
        step = state["step"]
        if self.accelerator.is_main_process and (step % self.config.checkpoint_every == 0 or step == self.stop):
            save_checkpoint(self.accelerator, self.out_dir, state, self.config.checkpoints_total_limit)

    def finish(self, metrics: dict, model=None) -> dict:
        """On the main process save ``model`` (when given) as ``<out>/model`` through a temporary name and write
        ``metrics`` to ``<out>/metrics.json``; then end the Accelerator's training, or, for a model run, hand cached
        GPU memory back (the process trains more). Returns ``metrics``."""
        if self.accelerator.is_main_process:
            if model is not None:
                publish_folder(self.out_dir / "model", model.save_pretrained)
            (self.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        if self.steps is None:
            self.accelerator.end_training()
        else:
            release_device_memory()
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


def start_model_run(config, folder: Path, steps: int, seed: int) -> TrainingRun:
    """The run of one of the models a process trains, ``steps`` optimizer steps long: create ``folder`` (a one-line
    error when it cannot be written), find its latest checkpoint, make the Accelerator (bf16 on GPU, fp32 on CPU, the
    config's gradient accumulation) and seed every generator with ``seed``."""
    make_folder(folder, "run folder")
    checkpoint = find_checkpoint(folder, "latest")
    accelerator = make_accelerator(config)
    set_seed(seed)
    return TrainingRun(config, folder, checkpoint, accelerator, frozen_dtype(accelerator), steps)
