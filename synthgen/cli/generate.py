"""The climate generator's commands, registered on the ``synthgen`` app by ``synthgen.cli.main``: ``climate``,
``prompts show|sites``, ``train sd3``, ``train sd3-controlnet``, ``evaluate climate``. Thin typer functions, like
every command: the work is in the library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from synthgen.cli.main import (
    CompileOpt,
    NumShardsOpt,
    ShardIndexOpt,
    WritersOpt,
    _echo_json,
    _job_options,
    _one_line_errors,
    _train,
    _with_progress,
    app,
    evaluate_app,
    train_app,
)

prompts_app = typer.Typer(
    help="Prompts of the climate generator: what a model is given per site.", no_args_is_help=True
)
app.add_typer(prompts_app, name="prompts")

SitesOpt = Annotated[str, typer.Option("--sites", help="Sites table (.csv or .parquet): lat, lon, date, ...")]
PromptsOpt = Annotated[str | None, typer.Option(help="Prompt file (.yaml path or a name in prompts/).")]
LabelsOpt = Annotated[str | None, typer.Option(help="Label manifest: land-cover shares for the label_key column.")]
ClimateOpt = Annotated[str | None, typer.Option(help="Climate cube (netCDF or zarr) for values the table lacks.")]
NormalsOpt = Annotated[str | None, typer.Option(help="Normals table (name in synthgen/climate/normals or .csv).")]


@prompts_app.command("show")
@_one_line_errors
def prompts_show_cmd(
    sites: SitesOpt,
    prompts: PromptsOpt = None,
    model: Annotated[str | None, typer.Option(help="Model folder: use the prompts it was trained with.")] = None,
    labels: LabelsOpt = None,
    climate: ClimateOpt = None,
    normals: NormalsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of text.")] = False,
):
    """Print the spatial and climate prompt of every site (what a model would be given)."""
    from synthgen.jobs.climate import show_prompts

    for item in show_prompts(sites, prompts, model, labels=labels, climate=climate, normals=normals):
        if as_json:
            typer.echo(json.dumps(item, ensure_ascii=False))
        else:
            typer.echo(f"{item['site_id']}\n  spatial: {item['spatial']}\n  climate: {item['climate']}")


@prompts_app.command("sites")
@_one_line_errors
def prompts_sites_cmd(
    manifest: Annotated[
        str, typer.Option(help="Ingested, georeferenced, dated manifest (e.g. manifests/naip.parquet).")
    ],
    out: Annotated[Path, typer.Option(help="Sites table to write (.csv).")],
    date: Annotated[str, typer.Option(help="Date of the sites (YYYY-MM-DD): one site per tile of this date.")],
    control_date: Annotated[
        str | None, typer.Option(help="Earlier date whose tile of the same place becomes control_key.")
    ] = None,
    normals: NormalsOpt = "bismarck_nd",
    place: Annotated[str | None, typer.Option(help="Place name written into every site.")] = None,
    size: Annotated[int, typer.Option(help="Output size in px the gsd column is given for.")] = 64,
):
    """Write a sites table from the tiles of one date of a manifest (climate from a normals table)."""
    from synthgen.climate.sites import ClimateNormals, sites_table_from_manifest

    path = sites_table_from_manifest(
        manifest, out, date, control_date, ClimateNormals.load(normals) if normals else None, place, size
    )
    typer.echo(f"wrote {path}")


@app.command()
@_one_line_errors
def climate(
    sites: SitesOpt,
    model: Annotated[str | None, typer.Option(help="SD3 folder or hub id (default synthgen/weights/climate).")] = None,
    control: Annotated[
        str | None, typer.Option(help="Manifest of earlier images: each site's control_key → time-series ControlNet.")
    ] = None,
    controlnet: Annotated[
        str | None, typer.Option(help="SD3 ControlNet folder/hub id (default synthgen/weights/climate_controlnet).")
    ] = None,
    n_per_site: Annotated[int, typer.Option(help="Images per site (different seeds).")] = 1,
    size: Annotated[int | None, typer.Option(help="Image side in px (default: the model's training size).")] = None,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 28,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale (<= 1: none).")] = 4.5,
    seed: Annotated[int, typer.Option(help="Run seed; tile i uses sha256(seed:i).")] = 0,
    batch_size: Annotated[str, typer.Option(help="Images per forward pass, or auto.")] = "4",
    gsd: Annotated[float, typer.Option(help="Metres per pixel for sites without a gsd column.")] = 10.0,
    labels: LabelsOpt = None,
    climate_cube: Annotated[str | None, typer.Option("--climate", help="Climate cube (netCDF/zarr).")] = None,
    climate_method: Annotated[str, typer.Option(help="Cube lookup: nearest or linear.")] = "nearest",
    normals: NormalsOpt = None,
    prompts: PromptsOpt = None,
    name: Annotated[str, typer.Option(help="Names the shards, keys and manifest.")] = "climate",
    tiles_per_shard: Annotated[int, typer.Option(help="Tiles per shard.")] = 256,
    out: Annotated[str | None, typer.Option(help="Shard folder ({name} is filled in; default data/{name}).")] = None,
    manifest: Annotated[str | None, typer.Option(help="Manifest path (default manifests/{name}.parquet).")] = None,
    shard_index: ShardIndexOpt = None,
    num_shards: NumShardsOpt = None,
    writers: WritersOpt = None,
    compile: CompileOpt = False,
):
    """Generate images of places under given conditions (SD3 + climate prompts) into shards and a manifest."""
    from diffusers.utils import logging as diffusers_logging

    from synthgen.config import build_config
    from synthgen.jobs.climate import ClimateGenerateConfig, run_climate

    diffusers_logging.disable_progress_bar()
    values = {
        "sites": sites, "model": model, "control": control, "controlnet": controlnet, "n_per_site": n_per_site,
        "size": size, "steps": steps, "guidance": guidance, "seed": seed, "batch_size": batch_size, "gsd": gsd,
        "labels": labels, "climate": climate_cube, "climate_method": climate_method, "normals": normals,
        "prompts": prompts, "name": name, "tiles_per_shard": tiles_per_shard, "out": out, "manifest": manifest,
        **_job_options(shard_index, num_shards, writers, compile),
    }  # fmt: skip
    cfg = build_config(ClimateGenerateConfig, {k: v for k, v in values.items() if v is not None})
    summary = _with_progress(run_climate, cfg, None, "climate")
    typer.echo(json.dumps(summary, indent=1))


ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="Train config: a .yaml path or a shipped name.")]
OutOpt = Annotated[str | None, typer.Option(help="Training folder: checkpoints, previews, metrics, the model.")]
MaxStepsOpt = Annotated[int | None, typer.Option(help="Stop after this many steps (a checkpoint is written).")]
ResumeOpt = Annotated[str | None, typer.Option(help="'latest' or a checkpoint-N folder.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Any other config key: --set key=value.")]


@train_app.command("sd3")
@_one_line_errors
def train_sd3_cmd(
    config: ConfigOpt = "default",
    manifests: Annotated[str | None, typer.Option(help="Comma-separated ingested manifests with rgb tiles.")] = None,
    base_model: Annotated[str | None, typer.Option(help="Full-size SD3 folder/hub id: train LoRA on it.")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank (with --base-model).")] = None,
    out: OutOpt = None,
    max_steps: MaxStepsOpt = None,
    resume: ResumeOpt = None,
    set_: SetOpt = None,
):
    """Train an SD3 climate model (small, from scratch; or LoRA on a full-size SD3); saves <out>/pipeline."""
    from synthgen.training.sd3 import train_sd3
    from synthgen.training.sd3_config import SD3TrainConfig

    options = {"manifests": manifests, "base_model": base_model, "lora_rank": lora_rank, "out": out,
               "max_steps": max_steps, "resume": resume}  # fmt: skip
    cfg, metrics = _train(train_sd3, SD3TrainConfig, "train-sd3", config, options, set_)
    keys = ("step", "total_steps", "tiles", "distinct_prompts", "params", "scaling_factor")
    _echo_json(metrics, keys, pipeline=str(cfg.out_dir / "pipeline"))


@train_app.command("sd3-controlnet")
@_one_line_errors
def train_sd3_controlnet_cmd(
    config: ConfigOpt = "default",
    base: Annotated[str | None, typer.Option(help="The SD3 climate model to control (folder).")] = None,
    manifest: Annotated[
        str | None, typer.Option(help="Dated time-series manifest (e.g. manifests/naip.parquet).")
    ] = None,
    out: OutOpt = None,
    max_steps: MaxStepsOpt = None,
    resume: ResumeOpt = None,
    set_: SetOpt = None,
):
    """Train an SD3 ControlNet: earlier image of a place → later image (date in the prompt); saves <out>/controlnet."""
    from synthgen.training.sd3_config import SD3ControlNetTrainConfig
    from synthgen.training.sd3_controlnet import train_sd3_controlnet

    options = {"base": base, "manifest": manifest, "out": out, "max_steps": max_steps, "resume": resume}
    cfg, metrics = _train(train_sd3_controlnet, SD3ControlNetTrainConfig, "train-sd3-controlnet", config, options, set_)
    _echo_json(metrics, ("step", "total_steps", "pairs", "params"), controlnet=str(cfg.out_dir / "controlnet"))


@evaluate_app.command("climate")
@_one_line_errors
def evaluate_climate_cmd(
    generated: Annotated[Path, typer.Option(help="Manifest of generated tiles (synthgen climate).")],
    real: Annotated[Path, typer.Option(help="Manifest of real tiles of the same places and dates.")],
    clip_model: Annotated[str | None, typer.Option(help="Local CLIP folder for the CLIP score.")] = None,
    inception: Annotated[str | None, typer.Option(help="Local torch-fidelity Inception weights for FID.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the report as JSON to this path.")] = None,
):
    """SSIM/PSNR of generated vs real images of the same place and date; CLIP score and FID with local weights."""
    from synthgen.evaluation.climate import evaluate_climate, format_climate_report

    report = evaluate_climate(generated, real, clip_model=clip_model, inception=inception)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(out)
    typer.echo(format_climate_report(report))
    if out is not None:
        typer.echo(f"wrote {out}")
