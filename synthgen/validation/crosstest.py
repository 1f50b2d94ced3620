"""The cross-test runner: one model per (training set, architecture), each tested on every test set; and the
mixing experiment (a share of the real set alone, and with all the synthetic sets added).

Everything is checked before the first step is trained: set specs, manifests, labels and heights for the tasks,
a common class scheme, architectures, encoder, crop size. Then each run trains (or resumes, or reuses a finished
run) and is tested; the report (JSON, markdown, plots) is written at the end, atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from synthgen.config import save_config
from synthgen.errors import ConfigError, allowed
from synthgen.validation.config import ValidateConfig
from synthgen.validation.data import ClassIndex, SetSpec, TileSet, check_set, common_scheme, parse_set
from synthgen.validation.evaluate import evaluate_model
from synthgen.validation.models import architecture, check_encoder, check_encoder_weights
from synthgen.validation.report import build_report, write_report
from synthgen.validation.train import RunSpec, run_hash, set_cpu_threads, train_model


@dataclass
class Study:
    """The resolved inputs of a validation run: train and test sets by name, and the common class scheme."""

    train: dict[str, TileSet]
    test: dict[str, TileSet]
    classes: ClassIndex


def parse_sets(specs: list[str], option: str) -> list[SetSpec]:
    """Parse set specs, refusing duplicate names."""
    parsed = [parse_set(s, option) for s in specs]
    names = [s.name for s in parsed]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{option}: set name(s) {allowed(dup)} given twice (each set needs its own name)")
    return parsed


def check_model_settings(config: ValidateConfig) -> None:
    """Architectures, encoder and encoder weights, before anything is read or trained."""
    for arch in config.arch:
        architecture(arch)
    check_encoder(config.encoder)
    check_encoder_weights(config.encoder_weights)


def prepare(config: ValidateConfig) -> Study:
    """Load and check every set, and find the common scheme; raises one-line errors for bad input."""
    if not config.train:
        raise ConfigError("no training set: give --train NAME=<manifest>[,<manifest>...]")
    if not config.test:
        raise ConfigError("no test set: give --test NAME=<manifest>")
    check_model_settings(config)
    train_specs, test_specs = parse_sets(config.train, "--train"), parse_sets(config.test, "--test")
    train = {s.name: TileSet.load(s, "train") for s in train_specs}
    test = {s.name: TileSet.load(s, "test") for s in test_specs}
    for tiles in train.values():
        check_set(tiles, "train", config.with_seg, config.with_height)
        if config.crop > tiles.min_size():
            raise ConfigError(
                f"config 'crop': {config.crop} px is larger than the smallest tile of train set '{tiles.name}' "
                f"({tiles.min_size()} px; allowed: crop <= {tiles.min_size()})"
            )
    for tiles in test.values():
        check_set(tiles, "test", config.with_seg, config.with_height)
    scheme = common_scheme([*train.values(), *test.values()], config.scheme)
    if config.real_fraction:
        real = config.real_set or next(iter(train))
        if real not in train:
            raise ConfigError(f"config 'real_set': '{real}' is not a train set (allowed: {allowed(train)})")
        if len(train) < 2:
            raise ConfigError("--real-fraction needs a synthetic train set besides the real one (give two --train)")
        others = [n for n in train if n != real]
        for name in config.mix_sets:
            if name not in others:
                raise ConfigError(
                    f"config 'mix_sets': '{name}' is not a synthetic train set (allowed: {allowed(others)})"
                )
    return Study(train, test, ClassIndex(scheme))


def plan_runs(config: ValidateConfig, study: Study) -> list[RunSpec]:
    """For every seed: cross-test runs (every train set x architecture), then mixing runs (each share of the real
    set alone, and with each of ``mix_sets`` added, or with all synthetic sets together when it is empty)."""
    seeds = config.run_seeds
    runs = []
    for seed in seeds:
        tag = f"-s{seed}" if len(seeds) > 1 else ""
        runs += [
            RunSpec(f"{name}-{arch}{tag}", "crosstest", arch, tiles, {"train": name}, seed)
            for name, tiles in study.train.items()
            for arch in config.arch
        ]
        if config.real_fraction:
            runs += _mixing_runs(config, study, seed, tag)
    return runs


def _mix_groups(config: ValidateConfig, study: Study, real_name: str) -> list[list[str]]:
    """The synthetic sets added to the real share: each of ``mix_sets`` on its own, or all others together."""
    if config.mix_sets:
        return [[name] for name in config.mix_sets]
    return [[n for n in study.train if n != real_name]]


def _mixing_runs(config: ValidateConfig, study: Study, seed: int, tag: str) -> list[RunSpec]:
    real_name = config.real_set or next(iter(study.train))
    runs = []
    for fraction in sorted(set(config.real_fraction)):
        share = study.train[real_name].subset(fraction, seed)
        base = {"train": real_name, "fraction": fraction, "real_tiles": len(share)}
        for arch in config.arch:
            runs.append(
                RunSpec(f"mix{fraction:g}-real-{arch}{tag}", "mixing", arch, share, {**base, "synthetic": []}, seed)
            )
            for names in _mix_groups(config, study, real_name):
                synthetic = TileSet.concat([study.train[n] for n in names], "+".join(names))
                mixed = TileSet.concat([share, synthetic], f"{share.name}+{synthetic.name}")
                details = {**base, "synthetic": names, "synthetic_tiles": len(synthetic)}
                label = "synthetic" if not config.mix_sets else "+".join(names)
                runs.append(RunSpec(f"mix{fraction:g}-real+{label}-{arch}{tag}", "mixing", arch, mixed, details, seed))
    return runs


def test_runs(
    config: ValidateConfig, model, study: Study, run_name: str, overlays: int, tests: dict[str, TileSet] | None = None
) -> dict:
    """Scores of one model on every test set (overlay PNGs under ``<out>/plots/overlays``); height is scored on the
    test sets that have it (``prepare`` refuses a height task on a test set without height unless it was chosen
    automatically, as ``synthgen adapt`` does)."""
    if torch.cuda.is_available():
        model = model.to("cuda")
    results = {}
    for name, tiles in (tests or study.test).items():
        results[name] = evaluate_model(
            model,
            tiles.take(config.max_test_tiles),
            study.classes,
            with_seg=config.with_seg,
            with_height=config.with_height and bool(tiles.has("height").any()),
            batch_size=config.eval_batch_size,
            overlays=overlays,
            overlay_path=config.out_dir / "plots" / "overlays" / f"{run_name}__{name}.png",
        )
    return results


def run_record(spec: RunSpec, config: ValidateConfig, training: dict, tests: dict) -> dict:
    """One run as the report stores it."""
    return {
        "name": spec.name,
        "kind": spec.kind,
        "arch": spec.arch,
        "encoder": config.encoder,
        "seed": spec.seed,
        "train_tiles": len(spec.train),
        **spec.details,
        "training": training,
        "tests": tests,
    }


def run_validate(
    config: ValidateConfig,
    progress: Callable[[int], None] | None = None,
    missing: list[dict] | None = None,
    study_note: str = "",
) -> dict:
    """Check the inputs, train and test every run, write ``report.json``, ``report.md`` and plots; return the report."""
    study = prepare(config)
    set_cpu_threads(config)
    runs = plan_runs(config, study)
    if progress is not None and hasattr(progress, "start"):
        progress.start(len(runs) * config.steps)  # a progress bar learns its total once the runs are planned
    config.out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, config.out_dir / "config.yaml")
    done: dict[str, tuple[dict, dict]] = {}
    records = []
    for spec in runs:
        key = f"{spec.arch}:{run_hash(config, spec, study.classes.scheme.name)}"
        if key in done:  # e.g. mixing at share 1.0 real-only is the cross-test run of the real set
            training, tests = done[key]
            if progress:
                progress(config.steps)
        else:
            model, training = train_model(
                config, spec, study.classes, progress, monitor=next(iter(study.test.values()))
            )
            tests = test_runs(config, model, study, spec.name, config.overlays if spec.kind == "crosstest" else 0)
            done[key] = (training, tests)
        records.append(run_record(spec, config, training, tests))
    report = build_report(
        "validate",
        config,
        study.classes.scheme,
        {
            "train": {n: t.describe() for n, t in study.train.items()},
            "test": {n: t.describe() for n, t in study.test.items()},
        },
        records,
        missing=missing or [],
        note=study_note,
    )
    write_report(report, config.out_dir)
    return report


def report_path(config: ValidateConfig) -> Path:
    """Where ``run_validate`` writes the JSON report."""
    return config.out_dir / "report.json"
