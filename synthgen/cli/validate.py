"""``synthgen validate``, ``adapt`` and ``report``: segmentation and height models trained on the data and tested
on real tiles, as cross-test tables and plots; the work is in ``synthgen.validation``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthgen.cli.common import SETS_HELP, SetOpt, one_line_errors, parse_sets, progress, set_and_options


def _validation_config(config: str, values: dict, sets: list[str] | None):
    """The ValidateConfig of a profile (or .yaml) with the ``--set`` values and the options given."""
    from synthgen.config import load_config
    from synthgen.validation.config import ValidateConfig

    return load_config(ValidateConfig, config, "validate", set_and_options(sets, values))


def _print_validation(report: dict, out_dir: Path) -> None:
    """The report's table, its missing sets and where it was written."""
    from synthgen.validation.report import adapt_table, crosstest_table

    if "seg" in report["config"]["task"]:
        table = adapt_table(report) if report["kind"] == "adapt" else crosstest_table(report)
        typer.echo("\n".join(table))
    for m in report["missing"]:
        typer.echo(f"missing {m['set']}: {m['reason']}")
    plots = len(list((out_dir / "plots").rglob("*.png")))
    typer.echo(f"wrote {out_dir / 'report.json'}, {out_dir / 'report.md'} and {plots} plots in {out_dir / 'plots'}")


@one_line_errors
def validate(
    train: Annotated[list[str] | None, typer.Option(help=f"Training set: {SETS_HELP}. Repeat for more.")] = None,
    test: Annotated[list[str] | None, typer.Option(help=f"Test set: {SETS_HELP}. Repeat for more.")] = None,
    arch: Annotated[
        str | None, typer.Option(help="Architectures, comma-separated: unet,unetplusplus,deeplabv3plus.")
    ] = None,
    task: Annotated[str | None, typer.Option(help="seg, height or seg,height.")] = None,
    real_fraction: Annotated[
        str | None, typer.Option(help="Mixing: shares of the real set, e.g. 0.1,0.25,0.5,1.0 (alone and + synthetic).")
    ] = None,
    real_set: Annotated[str | None, typer.Option(help="Which train set is the real one (default: the first).")] = None,
    scheme: Annotated[str | None, typer.Option(help="Common class scheme (default: the sets' own, else oem8).")] = None,
    encoder: Annotated[str | None, typer.Option(help="smp encoder or tu-<timm model>.")] = None,
    encoder_weights: Annotated[str | None, typer.Option(help="Local encoder weights file (default: none).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps per model.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of init, data order and augmentation.")] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Seeds, comma-separated: one model per seed and run, mean ± sd in the report.")
    ] = None,
    paper: Annotated[
        bool, typer.Option("--paper", help="The published study: build its four training sets (what exists) first.")
    ] = False,
    config: Annotated[
        str, typer.Option("--config", "--profile", "-c", help="Profile: cpu, gpu, tiny, or a .yaml path.")
    ] = "cpu",
    out: Annotated[str | None, typer.Option(help="Output folder: report.json, report.md, plots/, models/.")] = None,
    set_: SetOpt = None,
):
    """Train one model per (training set, architecture), test each on every test set; JSON + markdown + plots."""
    from synthgen.validation.crosstest import run_validate
    from synthgen.validation.paper import run_paper

    values = {
        "train": train or None,
        "test": test or None,
        "arch": arch,
        "task": task,
        "real_fraction": real_fraction,
        "real_set": real_set,
        "scheme": scheme,
        "encoder": encoder,
        "encoder_weights": encoder_weights,
        "steps": steps,
        "seed": seed,
        "seeds": seeds,
        "out": out,
    }
    cfg = _validation_config(config, values, set_)
    with progress(None, "validate", "step") as bar:
        if paper:
            report = run_paper(cfg, bar, log=lambda line: typer.echo(line, err=True))
        else:
            report = run_validate(cfg, bar)
    _print_validation(report, cfg.out_dir)


@one_line_errors
def report(
    path: Annotated[Path, typer.Argument(help="report.json written by synthgen validate or adapt.")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for report.md and plots/ (default: beside the JSON).")
    ] = None,
):
    """Re-render the markdown tables and PNG plots of a validation report from its JSON."""
    from synthgen.validation.report import load_report, render

    paths = render(load_report(path), out or path.parent)
    for name, written in paths.items():
        typer.echo(f"{name}: {written}")


@one_line_errors
def adapt(
    source: Annotated[str, typer.Option(help=f"Labelled source tiles (synthetic): {SETS_HELP}.")],
    target: Annotated[str, typer.Option(help=f"Unlabelled target tiles (real): {SETS_HELP}.")],
    test: Annotated[list[str] | None, typer.Option(help=f"Labelled test set: {SETS_HELP}. Repeat for more.")] = None,
    arch: Annotated[str, typer.Option(help="Architectures, comma-separated.")] = "unet",
    task: Annotated[
        str | None, typer.Option(help="seg, height or seg,height (default: seg, + height if the source has it).")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="Pseudo-label confidence threshold (default 0.95).")] = None,
    steps: Annotated[int | None, typer.Option(help="Source-only training steps.")] = None,
    adapt_steps: Annotated[int | None, typer.Option(help="Self-training steps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Seeds, comma-separated: both models per seed, mean ± sd in the report.")
    ] = None,
    config: Annotated[
        str, typer.Option("--config", "--profile", "-c", help="Profile: cpu, gpu, tiny, or a .yaml path.")
    ] = "cpu",
    out: Annotated[str | None, typer.Option(help="Output folder (default: <profile out>-adapt).")] = None,
    set_: SetOpt = None,
):
    """Mean-teacher self-training from labelled source to unlabelled target tiles, compared with source only."""
    from synthgen.validation.adapt import run_adapt

    values = {
        "source": source,
        "target": target,
        "test": test or None,
        "arch": arch,
        "task": task,
        "pseudo_threshold": threshold,
        "steps": steps,
        "adapt_steps": adapt_steps,
        "seed": seed,
        "seeds": seeds,
        "out": out,
    }
    cfg = _validation_config(config, values, set_)
    if out is None and "out" not in parse_sets(set_):
        cfg.out = cfg.out.rstrip("/") + "-adapt"
    with progress(None, "adapt", "step") as bar:
        report = run_adapt(cfg, bar, task_auto=task is None)
    _print_validation(report, cfg.out_dir)


@one_line_errors
def filter(  # noqa: A001 - the command's name
    manifest: Annotated[Path, typer.Option(help="Manifest of generated tiles with rgb + label (.parquet).")],
    seg_model: Annotated[
        Path | None,
        typer.Option(
            help="Segmentation model folder trained on real tiles (synthgen validate: <run>/model); default: the "
            "embedded UNet trained on the real Dubai train split (make weights-label-filter)."
        ),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            help="Keep tiles whose label agreement (per-tile mIoU) is at least this; 0.3 is what 70 % of the real "
            "Dubai val tiles reach under the embedded model."
        ),
    ] = 0.3,
    out: Annotated[Path | None, typer.Option(help="Filtered manifest (default: <manifest>.filtered.parquet).")] = None,
    scored: Annotated[
        Path | None, typer.Option(help="Every tile with its score in meta (default: <manifest>.scored.parquet).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Tiles per forward pass.")] = 16,
    split: Annotated[
        str, typer.Option(help="Score only the tiles of this split of the manifest ('all': every tile).")
    ] = "all",
):
    """Score every generated tile by how well a model trained on real tiles finds its label in its image; write the
    scores and a manifest of the tiles above the threshold (the shards stay where they are)."""
    from synthgen.cli.common import echo_summary
    from synthgen.io.manifest import read_manifest
    from synthgen.validation.label_filter import filter_manifest, filter_model

    seg_model = filter_model(seg_model, "--seg-model")
    stem = manifest.with_suffix("")
    rows = read_manifest(manifest)
    total = len(rows) if split == "all" else int((rows["split"] == split).sum())
    with progress(total, "filter") as bar:
        summary = filter_manifest(
            manifest,
            seg_model,
            threshold,
            out or Path(f"{stem}.filtered.parquet"),
            scored or Path(f"{stem}.scored.parquet"),
            batch_size,
            bar,
            split,
        )
    echo_summary(summary)
