"""Train one segmentation (+ height) model on a tile set, the way diffusers' examples train.

An ``Accelerator`` (bf16 on GPU, fp32 on CPU, gradient accumulation, one process per GPU), seeded init and data,
AdamW with warm-up and cosine decay, ``checkpoint-N`` folders (``accelerator.save_state`` through a temporary name,
with ``trainer_state.json``: step, loss curve, samples, seconds) and resume from the latest one; the data stream
restarts at the exact sample it stopped at (the run folder's reuse, resume, checkpoints and final save are the
training run frame's, ``training/training_run.py``, shared with ``synthgen adapt``). A run lives in
``<out>/models/<id>-<hash>/`` where the hash covers every setting that changes the weights, so a finished run is
reused and a changed setting starts a fresh one. The final model is a diffusers folder (``model/``) beside
``metrics.json`` (loss curve, images/s, parameters).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.optimization import get_scheduler

from synthgen.config import config_to_dict
from synthgen.training.training_run import TrainingRun, reuse_finished, start_model_run
from synthgen.validation.config import LR_SCHEDULES, ValidateConfig
from synthgen.validation.convergence import convergence
from synthgen.validation.data import IGNORE_INDEX, ClassIndex, TileSet, TileStream, make_loader
from synthgen.validation.evaluate import monitor_batches, monitor_loss
from synthgen.validation.models import SegHeightModel, build_model

# settings that do not change a model's weights (left out of the run hash)
NOT_HASHED = (
    "train",
    "test",
    "arch",
    "real_fraction",
    "real_set",
    "num_workers",
    "cpu_threads",
    "checkpoint_every",
    "checkpoints_total_limit",
    "eval_batch_size",
    "max_test_tiles",
    "overlays",
    "source",
    "target",
    "paper_real",
    "paper_train_tiles",
    "paper_val_tiles",
    "paper_filter",
    "out",
    "seeds",
    "plateau_tolerance",
    "mix_sets",
)
ADAPT_ONLY = ("adapt_steps", "pseudo_threshold", "ema_decay", "unsupervised_weight", "classmix", "strong_jitter")


@dataclass
class RunSpec:
    """One model to train: a name, its kind (crosstest, mixing, source_only), architecture, tiles, details and the
    seed of its init, data order and augmentation."""

    name: str
    kind: str
    arch: str
    train: TileSet
    details: dict = field(default_factory=dict)
    seed: int = 0


def set_cpu_threads(config: ValidateConfig) -> None:
    """Cap torch's CPU threads at ``cpu_threads`` (when set)."""
    if config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)


def run_hash(config: ValidateConfig, spec: RunSpec, scheme: str, extra: dict | None = None) -> str:
    """A short sha256 of everything that changes the run's weights."""
    settings = {k: v for k, v in config_to_dict(config).items() if k not in NOT_HASHED + ADAPT_ONLY}
    settings["seed"] = spec.seed
    data = {
        "settings": settings,
        "arch": spec.arch,
        "scheme": scheme,
        "tiles": sorted(spec.train.df["key"]),
        "manifests": sorted({str(Path(m).resolve()) for m in spec.train.df["manifest"]}),
        **(extra or {}),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_dir(config: ValidateConfig, spec: RunSpec, scheme: str) -> Path:
    """``<out>/models/<name>-<hash>``."""
    return config.out_dir / "models" / f"{spec.name}-{run_hash(config, spec, scheme)}"


def run_metrics(run: TrainingRun, name: str, state: dict) -> dict:
    """The metrics every model run reports: its name and folder, steps, samples, seconds, images/s and loss curve."""
    seconds = state["seconds"]
    return {
        "run": name,
        "folder": str(run.out_dir),
        "steps": state["step"],
        "samples": state["samples"],
        "seconds": round(seconds, 3),
        "images_per_s": round(state["samples"] / seconds, 3) if seconds else None,
        "loss": state["loss"],
    }


def supervised_loss(out: dict, batch: dict, classes: ClassIndex, config: ValidateConfig) -> tuple[torch.Tensor, dict]:
    """Cross-entropy on labelled pixels (+ ``height_weight`` x L1 on pixels with height, in height_scale units)."""
    loss = out["logits"].float().sum() * 0.0
    parts = {}
    if config.with_seg:
        target = classes.to_index(batch["label"])
        if (target != IGNORE_INDEX).any():
            seg = F.cross_entropy(out["logits"].float(), target, ignore_index=IGNORE_INDEX)
            loss = loss + seg
            parts["seg"] = float(seg.detach())
    if config.with_height and "height" in out:
        true = batch["height"]
        valid = torch.isfinite(true)
        if valid.any():
            diff = (out["height"].float()[valid] - true[valid]) / config.height_scale
            height = diff.abs().mean()
            loss = loss + config.height_weight * height
            parts["height"] = float(height.detach())
    return loss, parts


def weights_average(model: SegHeightModel, decay: float):
    """timm's ``ModelEmaV3`` of ``model`` (None when ``decay`` is 0): a moving average of the weights *and* of the
    batch-norm statistics, with timm's warm-up of the decay. The generators' loops average parameters with diffusers'
    ``EMAModel``; these models have batch norm, whose running statistics must belong to the averaged weights."""
    if not decay:
        return None
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(model, decay=decay, use_warmup=True)
    ema.module.eval()
    return ema


def to_device(batch: dict, device) -> dict:
    """Move a batch's tensors to ``device``."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def train_model(
    config: ValidateConfig,
    spec: RunSpec,
    classes: ClassIndex,
    progress: Callable[[int], None] | None = None,
    monitor: TileSet | None = None,
) -> tuple[SegHeightModel, dict]:
    """Train (or resume, or reuse when finished) the model of ``spec``; returns it with its training metrics. With
    ``config.monitor_every`` and a ``monitor`` set, the loss on it is recorded along the way (``val_loss``) and the
    metrics say whether it reached a plateau (``convergence``)."""
    folder = run_dir(config, spec, classes.scheme.name)
    done = reuse_finished(folder, config.steps, SegHeightModel.from_pretrained, progress)
    if done is not None:
        return done
    run = start_model_run(config, folder, config.steps, spec.seed)
    accelerator = run.accelerator
    model = build_model(config, spec.arch, classes.codes, classes.names, classes.scheme.name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(
        LR_SCHEDULES[config.lr_schedule],
        optimizer,
        num_warmup_steps=min(config.warmup_steps, config.steps // 5),
        num_training_steps=config.steps,
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    ema = weights_average(accelerator.unwrap_model(model), config.weights_ema)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    state = run.resume({"step": 0, "loss": [], "val_loss": [], "samples": 0, "seconds": 0.0}, progress)
    monitoring = None
    if config.monitor_every and monitor is not None:
        monitoring = monitor_batches(monitor.take(config.monitor_tiles), classes, config.eval_batch_size)
    world, accum = accelerator.num_processes, config.gradient_accumulation_steps
    stream = TileStream(
        spec.train,
        classes.scheme,
        train=True,
        crop=config.crop,
        batch_size=config.batch_size,
        seed=spec.seed,
        start=state["step"] * accum * world * config.batch_size,
        jitter=config.jitter,
        rank=accelerator.process_index,
        world=world,
    )
    batches = iter(make_loader(stream, config.batch_size, config.num_workers))
    model.train()
    while state["step"] < config.steps:
        started = time.perf_counter()
        total = 0.0
        for _ in range(accum):
            batch = to_device(next(batches), accelerator.device)
            with accelerator.accumulate(model), accelerator.autocast():
                loss, _ = supervised_loss(model(batch["rgb"]), batch, classes, config)
                run.optimizer_step(loss, optimizer, scheduler)
            total += loss.item() / accum
        state["samples"] += config.batch_size * accum * world
        state["seconds"] += time.perf_counter() - started
        run.step_done(state, {"loss": round(total, 6)}, progress)
        if ema is not None:
            ema.update(accelerator.unwrap_model(model), step=state["step"])
        if monitoring is not None and (state["step"] % config.monitor_every == 0 or state["step"] == config.steps):
            tested = ema.module if ema is not None else accelerator.unwrap_model(model)
            loss_on = monitor_loss(tested, monitoring)
            state["val_loss"].append([state["step"], round(loss_on, 6)])
            model.train()
        run.checkpoint_if_due(state)
    stream.close()
    raw = ema.module if ema is not None else accelerator.unwrap_model(model)
    raw.eval()
    metrics = {
        **run_metrics(run, spec.name, state),
        "params": sum(p.numel() for p in raw.parameters()),
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
    }
    if state.get("val_loss"):
        metrics["val_loss"] = state["val_loss"]
        metrics["convergence"] = convergence(state["val_loss"], config.steps, config.plateau_tolerance)
    run.finish(metrics, raw)
    return raw, metrics
