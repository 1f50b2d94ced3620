"""Self-training adaptation (``synthgen adapt``): a mean teacher in the manner of RS3DAda / DACS.

Source = labelled tiles (synthetic, + height), target = unlabelled real tiles. First a source-only model is trained
(the baseline); then a student starts from it and a teacher is its EMA. Each step the teacher labels a target batch;
pixels whose top class probability is at least ``pseudo_threshold`` (0.95) become pseudo labels (and, with the
height task, the teacher's heights there become pseudo heights). With ``classmix`` half of the classes of each source
tile are pasted onto a target tile, image and labels alike. The student sees that mix after a strong photometric
augmentation (colour jitter, grey, blur) and learns from the source labels plus the pseudo labels; the teacher, an
EMA of the student, is the adapted model. Both are tested on the test sets and compared in the report.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers.optimization import get_scheduler
from torchvision.transforms.v2 import functional as TF

from synthgen.config import save_config
from synthgen.errors import ConfigError
from synthgen.training.training_run import reuse_finished, start_model_run
from synthgen.validation.config import ValidateConfig
from synthgen.validation.crosstest import Study, check_model_settings, parse_sets, run_record, test_runs
from synthgen.validation.data import IGNORE_INDEX, ClassIndex, TileSet, TileStream, check_set, common_scheme, parse_set
from synthgen.validation.models import SegHeightModel
from synthgen.validation.report import build_report, write_report
from synthgen.validation.train import (
    RunSpec,
    run_hash,
    run_metrics,
    set_cpu_threads,
    supervised_loss,
    to_device,
    train_model,
)


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student for parameters; buffers (BatchNorm statistics) copied."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(decay).add_(s.detach().to(t.dtype), alpha=1 - decay)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)


def classmix_masks(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 1, H, W) float masks: for each class-index map, the pixels of a random half of its classes."""
    masks = torch.zeros(labels.shape[0], 1, *labels.shape[1:], device=labels.device)
    for i, label in enumerate(labels):
        present = torch.unique(label[label != IGNORE_INDEX]).cpu()
        if len(present) == 0:
            continue
        chosen = present[torch.randperm(len(present), generator=generator)[: (len(present) + 1) // 2]]
        masks[i, 0] = torch.isin(label, chosen.to(label.device)).float()
    return masks


def strong_augment(rgb: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """Per-image colour jitter (brightness, contrast, saturation in 1 ± strength), grey (p 0.2), blur (p 0.5)."""
    out = []
    for image in rgb:
        b, c, s = (1 + strength * (2 * torch.rand(3, generator=generator) - 1)).tolist()
        image = TF.adjust_brightness(image, b)
        image = TF.adjust_contrast(image, c)
        image = TF.adjust_saturation(image, s)
        if torch.rand(1, generator=generator).item() < 0.2:
            image = TF.rgb_to_grayscale(image, num_output_channels=3)
        if torch.rand(1, generator=generator).item() < 0.5:
            sigma = 0.1 + 1.9 * torch.rand(1, generator=generator).item()
            image = TF.gaussian_blur(image, kernel_size=[5, 5], sigma=[sigma, sigma])
        out.append(image.clamp(0, 1))
    return torch.stack(out)


def pseudo_loss(out: dict, labels: torch.Tensor, heights: torch.Tensor, config: ValidateConfig) -> torch.Tensor:
    """Cross-entropy on pseudo-labelled pixels (class indices) + height L1 where pseudo heights are finite."""
    loss = out["logits"].float().sum() * 0.0
    if config.with_seg and (labels != IGNORE_INDEX).any():
        loss = loss + F.cross_entropy(out["logits"].float(), labels, ignore_index=IGNORE_INDEX)
    if config.with_height and "height" in out:
        valid = torch.isfinite(heights)
        if valid.any():
            loss = loss + config.height_weight * (
                (out["height"].float()[valid] - heights[valid]).abs().mean() / config.height_scale
            )
    return loss


def self_train(
    config: ValidateConfig,
    spec: RunSpec,
    source_model: SegHeightModel,
    target: TileSet,
    classes: ClassIndex,
    progress: Callable[[int], None] | None = None,
) -> tuple[SegHeightModel, dict]:
    """Mean-teacher adaptation of ``source_model`` to ``target``; returns the teacher and its training metrics."""
    settings = {
        k: getattr(config, k)
        for k in ("adapt_steps", "pseudo_threshold", "ema_decay", "unsupervised_weight", "classmix", "strong_jitter")
    }
    digest = run_hash(config, spec, classes.scheme.name, {"adapt": settings, "target": sorted(target.df["key"])})
    folder = config.out_dir / "models" / f"{spec.name}-adapted-{digest}"
    done = reuse_finished(folder, config.adapt_steps, SegHeightModel.from_pretrained, progress)
    if done is not None:
        return done
    run = start_model_run(config, folder, config.adapt_steps, spec.seed + 1)
    accelerator = run.accelerator
    student = copy.deepcopy(source_model).train()
    teacher = copy.deepcopy(source_model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(
        "constant_with_warmup", optimizer, num_warmup_steps=min(config.warmup_steps, config.adapt_steps // 5)
    )
    student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    teacher.to(accelerator.device)
    accelerator.register_for_checkpointing(teacher)
    state = run.resume({"step": 0, "loss": [], "coverage": [], "samples": 0, "seconds": 0.0}, progress)
    world, bs = accelerator.num_processes, config.batch_size
    common = {"crop": config.crop, "batch_size": bs, "rank": accelerator.process_index, "world": world}
    start = state["step"] * world * bs
    src_stream = TileStream(
        spec.train, classes.scheme, train=True, seed=spec.seed, start=start, jitter=config.jitter, **common
    )
    tgt_stream = TileStream(
        target, classes.scheme, train=True, seed=spec.seed + 1, start=start, with_labels=False, **common
    )
    loaders = [iter(torch.utils.data.DataLoader(s, batch_size=bs, num_workers=0)) for s in (src_stream, tgt_stream)]
    raw_student = accelerator.unwrap_model(student)
    while state["step"] < config.adapt_steps:
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(spec.seed * 1_000_003 + state["step"])
        src, tgt = (to_device(next(it), accelerator.device) for it in loaders)
        with torch.no_grad(), accelerator.autocast():
            teacher_out = teacher(tgt["rgb"])
        probs = teacher_out["logits"].float().softmax(1)
        confidence, index = probs.max(1)
        confident = confidence >= config.pseudo_threshold
        pseudo = torch.where(confident, index, torch.full_like(index, IGNORE_INDEX))
        pseudo_h = torch.full_like(tgt["height"], float("nan"))
        if "height" in teacher_out:
            pseudo_h = torch.where(confident[:, None], teacher_out["height"].float().clamp(min=0), pseudo_h)
        mixed_rgb, mixed_label, mixed_h = tgt["rgb"], pseudo, pseudo_h
        if config.classmix:
            src_index = classes.to_index(src["label"])
            mask = classmix_masks(src_index, generator).to(accelerator.device)
            mixed_rgb = mask * src["rgb"] + (1 - mask) * tgt["rgb"]
            mixed_label = torch.where(mask[:, 0] > 0, src_index, pseudo)
            mixed_h = torch.where(mask > 0, src["height"], pseudo_h)
        student_in = strong_augment(mixed_rgb.cpu(), generator, config.strong_jitter).to(accelerator.device)
        with accelerator.accumulate(student), accelerator.autocast():
            loss, _ = supervised_loss(student(src["rgb"]), src, classes, config)
            unsupervised = pseudo_loss(student(student_in), mixed_label, mixed_h, config)
            total = loss + config.unsupervised_weight * unsupervised
            run.optimizer_step(total, optimizer, scheduler)
        ema_update(teacher, raw_student, config.ema_decay)
        state["samples"] += 2 * bs * world
        state["seconds"] += time.perf_counter() - started
        state["coverage"].append(round(float(confident.float().mean()), 4))
        run.step_done(state, {"loss": round(float(total.detach()), 6)}, progress)
        run.checkpoint_if_due(state)
    src_stream.close()
    tgt_stream.close()
    teacher.eval()
    coverage = state["coverage"]
    metrics = {
        **run_metrics(run, f"{spec.name}-adapted", state),
        "pseudo_label_coverage": sum(coverage[-20:]) / len(coverage[-20:]) if coverage else None,
        "coverage": coverage,
        "params": sum(p.numel() for p in teacher.parameters()),
        "settings": settings,
    }
    run.finish(metrics, teacher)
    return teacher, metrics


def run_adapt(config: ValidateConfig, progress: Callable[[int], None] | None = None, task_auto: bool = False) -> dict:
    """Source-only baseline and mean-teacher adaptation per architecture, tested on every test set; writes the report.

    ``task_auto``: segmentation, plus height when the source set has height (multi-task where height exists).
    """
    if not config.source or not config.target:
        raise ConfigError("adapt needs --source NAME=<manifest> (labelled) and --target NAME=<manifest> (unlabelled)")
    if not config.test:
        raise ConfigError("no test set: give --test NAME=<manifest> (labelled real tiles)")
    check_model_settings(config)
    source = TileSet.load(parse_set(config.source, "--source"), "train")
    target = TileSet.load(parse_set(config.target, "--target"), "train")
    tests = {s.name: TileSet.load(s, "test") for s in parse_sets(config.test, "--test")}
    if task_auto:
        config.task = ["seg", "height"] if source.has("height").any() else ["seg"]
    check_set(source, "source", config.with_seg, config.with_height)
    check_set(target, "target", need_label=False, need_height=False)
    for tiles in tests.values():  # automatic multi-task scores height only where a test set has it
        check_set(tiles, "test", config.with_seg, config.with_height and not task_auto)
    for tiles, role in ((source, "source"), (target, "target")):
        if config.crop > tiles.min_size():
            raise ConfigError(
                f"config 'crop': {config.crop} px is larger than the smallest tile of {role} set '{tiles.name}' "
                f"({tiles.min_size()} px; allowed: crop <= {tiles.min_size()})"
            )
    classes = ClassIndex(common_scheme([source, *tests.values()], config.scheme))
    set_cpu_threads(config)
    study = Study({source.name: source}, tests, classes)
    if progress is not None and hasattr(progress, "start"):
        progress.start(len(config.run_seeds) * len(config.arch) * (config.steps + config.adapt_steps))
    config.out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, config.out_dir / "config.yaml")
    records = []
    seeds = config.run_seeds
    for seed, arch in ((seed, arch) for seed in seeds for arch in config.arch):
        tag = f"-s{seed}" if len(seeds) > 1 else ""
        details = {"train": source.name, "target": target.name}
        spec = RunSpec(f"{source.name}-{arch}{tag}", "source_only", arch, source, details, seed)
        model, training = train_model(config, spec, classes, progress)
        records.append(run_record(spec, config, training, test_runs(config, model, study, spec.name, config.overlays)))
        adapted, adapt_metrics = self_train(config, spec, model, target, classes, progress)
        adapted_spec = RunSpec(f"{spec.name}-adapted", "adapted", arch, source, dict(spec.details), seed)
        tests_after = test_runs(config, adapted, study, adapted_spec.name, config.overlays)
        records.append(run_record(adapted_spec, config, adapt_metrics, tests_after))
    sets = {
        "train": {source.name: source.describe()},
        "target": {target.name: target.describe()},
        "test": {n: t.describe() for n, t in tests.items()},
    }
    report = build_report("adapt", config, classes.scheme, sets, records, missing=[])
    write_report(report, config.out_dir)
    return report
