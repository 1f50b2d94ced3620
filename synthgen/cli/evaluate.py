"""``synthgen evaluate layout|rgb|climate``: the fidelity of generated data against real data; the work is in
``synthgen.evaluation``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthgen.cli.common import ConditioningScaleOpt, ControlNetGuidanceOpt, one_line_errors, progress
from synthgen.config import fill_path

evaluate_app = typer.Typer(help="Compare generated data with real data.", no_args_is_help=True)


@evaluate_app.command("layout")
@one_line_errors
def evaluate_layout_cmd(
    real: Annotated[Path, typer.Option(help="Manifest of the real tiles (.parquet).")],
    synthetic: Annotated[Path, typer.Option(help="Manifest of the synthetic tiles (.parquet).")],
    split: Annotated[str | None, typer.Option(help="Use only this split of the real manifest (e.g. val).")] = None,
    synthetic_split: Annotated[str | None, typer.Option(help="Use only this split of the synthetic manifest.")] = None,
    max_tiles: Annotated[int | None, typer.Option(help="At most this many tiles per manifest (evenly spaced).")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the report as JSON to this path.")] = None,
):
    """Compare synthetic label maps (and heights) with real ones: classes, components, adjacency, heights."""
    from synthgen.evaluation import evaluate_layout, format_layout_report, save_report

    report = evaluate_layout(real, synthetic, split=split, max_tiles=max_tiles, synthetic_split=synthetic_split)
    if out is not None:
        save_report(report, out)
    typer.echo(format_layout_report(report))
    if out is not None:
        typer.echo(f"wrote {out}")


@evaluate_app.command("rgb")
@one_line_errors
def evaluate_rgb_cmd(
    real: Annotated[Path, typer.Option(help="Manifest of real tiles with rgb + label (.parquet).")],
    method: Annotated[str, typer.Option(help="Label->RGB method: spade or controlnet.")] = "spade",
    model: Annotated[str | None, typer.Option(help="Pipeline folder or hub id (default: the embedded one).")] = None,
    split: Annotated[str, typer.Option(help="Split of the real manifest to render and compare.")] = "val",
    inception_weights: Annotated[
        Path | None, typer.Option(help="Local Inception weights for FID/KID (else they are skipped).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Sampling steps (ControlNet).")] = 20,
    guidance: ControlNetGuidanceOpt = None,
    conditioning_scale: ConditioningScaleOpt = None,
    batch_size: Annotated[int, typer.Option(help="Tiles per forward pass.")] = 8,
    seed: Annotated[int, typer.Option(help="Run seed; tile j of the split uses sha256(seed:j).")] = 0,
    max_tiles: Annotated[int | None, typer.Option(help="At most this many tiles (evenly spaced).")] = None,
    seg_model: Annotated[
        Path | None,
        typer.Option(help="Segmentation model folder (synthgen validate): label recovery on real vs rendered."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Report JSON path ({method} is filled in; no other braces).")] = Path(
        "reports/rgb-{method}.json"
    ),
):
    """Render RGB from the real labels of a split and compare with the real RGB: SSIM, PSNR, class colour/texture."""
    from diffusers.utils import logging as diffusers_logging

    from synthgen.evaluation import save_report
    from synthgen.evaluation.rgb import evaluate_rgb, format_rgb_report

    report_path = fill_path(str(out), "--out", method=method)
    diffusers_logging.disable_progress_bar()
    observers = {}
    if seg_model is not None:
        from synthgen.validation.label_recovery import LabelRecovery

        observers["label_recovery"] = LabelRecovery(seg_model)
    with progress(None, f"evaluate rgb {method}") as bar:
        report = evaluate_rgb(
            real,
            method,
            model,
            split,
            inception_weights,
            batch_size,
            seed,
            steps,
            guidance,
            max_tiles,
            bar,
            observers,
            conditioning_scale,
        )
    path = save_report(report, report_path)
    typer.echo(format_rgb_report(report))
    typer.echo(f"wrote {path}")


@evaluate_app.command("climate")
@one_line_errors
def evaluate_climate_cmd(
    generated: Annotated[Path, typer.Option(help="Manifest of generated tiles (synthgen climate).")],
    real: Annotated[Path, typer.Option(help="Manifest of real tiles of the same places and dates.")],
    clip_model: Annotated[str | None, typer.Option(help="Local CLIP folder for the CLIP score.")] = None,
    inception: Annotated[str | None, typer.Option(help="Local torch-fidelity Inception weights for FID.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the report as JSON to this path.")] = None,
):
    """SSIM/PSNR of generated vs real images of the same place and date; CLIP score and FID with local weights."""
    from synthgen.evaluation import save_report
    from synthgen.evaluation.climate import evaluate_climate, format_climate_report

    report = evaluate_climate(generated, real, clip_model=clip_model, inception=inception)
    if out is not None:
        save_report(report, out)
    typer.echo(format_climate_report(report))
    if out is not None:
        typer.echo(f"wrote {out}")
