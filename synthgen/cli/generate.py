"""The generator commands: ``landcover``, ``rgb``, ``climate``, and ``prompts show|sites`` (what the climate
generator is given per site). Each builds its job's config and runs it; the work is in ``synthgen.jobs``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from synthgen.cli.common import (
    CompileOpt,
    ConditioningScaleOpt,
    ControlNetGuidanceOpt,
    JobManifestOpt,
    JobOutOpt,
    NameOpt,
    NumShardsOpt,
    SeedOpt,
    ShardIndexOpt,
    TilesPerShardOpt,
    WritersOpt,
    job_options,
    one_line_errors,
    run_job_command,
)
from synthgen.config import GSD_MAX_M, GSD_MIN_M
from synthgen.engine.plan import PLAN_HELP, SIDE_HELP

prompts_app = typer.Typer(
    help="Prompts of the climate generator: what a model is given per site.", no_args_is_help=True
)

SitesOpt = Annotated[str, typer.Option("--sites", help="Sites table (.csv or .parquet): lat, lon, date, ...")]
PromptsOpt = Annotated[str | None, typer.Option(help="Prompt file (.yaml path or a name in prompts/).")]
LabelsOpt = Annotated[str | None, typer.Option(help="Label manifest: land-cover shares for the label_key column.")]
ClimateOpt = Annotated[str | None, typer.Option(help="Climate cube (netCDF or zarr) for values the table lacks.")]
NormalsOpt = Annotated[str | None, typer.Option(help="Normals table (name in synthgen/climate/normals or .csv).")]


@one_line_errors
def landcover(
    n: Annotated[int, typer.Option("--n", help=f"Number of tiles to generate ({PLAN_HELP}).")],
    model: Annotated[str | None, typer.Option(help="Pipeline folder (default: synthgen/weights/landcover).")] = None,
    scheme: Annotated[str | None, typer.Option(help="Scheme the labels must be in (checked).")] = None,
    size: Annotated[
        int,
        typer.Option(help=f"Tile side in px: multiple of the model's downsampling (autoencoder x UNet); {SIDE_HELP}."),
    ] = 128,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 20,
    batch_size: Annotated[
        str, typer.Option(help="Tiles per forward pass, or auto (does not change the tiles on CPU).")
    ] = "32",
    seed: SeedOpt = 0,
    gsd: Annotated[
        float, typer.Option(help=f"Ground sample distance of the tiles in metres ({GSD_MIN_M:g}..{GSD_MAX_M:g}).")
    ] = 1.0,
    name: NameOpt = "landcover",
    tiles_per_shard: TilesPerShardOpt = 256,
    out: JobOutOpt = None,
    manifest: JobManifestOpt = None,
    shard_index: ShardIndexOpt = None,
    num_shards: NumShardsOpt = None,
    writers: WritersOpt = None,
    compile: CompileOpt = False,
):
    """Generate land-cover label + height tiles into shards with a parquet manifest. Resumable."""
    from synthgen.jobs.landcover import LandCoverGenerateConfig, run_landcover

    values = {
        "n": n, "model": model, "scheme": scheme, "size": size, "steps": steps, "batch_size": batch_size,
        "seed": seed, "gsd": gsd, "name": name, "tiles_per_shard": tiles_per_shard, "out": out, "manifest": manifest,
        **job_options(shard_index, num_shards, writers, compile),
    }  # fmt: skip
    run_job_command(LandCoverGenerateConfig, values, run_landcover, lambda cfg: cfg.n, lambda cfg: "landcover")


@one_line_errors
def rgb(
    cond: Annotated[str, typer.Option(help="Manifest of label (+ height) tiles to render (.parquet).")],
    method: Annotated[str, typer.Option(help="Label->RGB method: spade or controlnet.")] = "spade",
    model: Annotated[
        str | None, typer.Option(help="Pipeline folder or hub id (default: synthgen/weights/rgb_<method>).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Sampling steps (ControlNet; SPADE renders in one pass).")] = 20,
    guidance: ControlNetGuidanceOpt = None,
    conditioning_scale: ConditioningScaleOpt = None,
    batch_size: Annotated[str, typer.Option(help="Tiles per forward pass, or auto.")] = "8",
    seed: SeedOpt = 0,
    size: Annotated[
        int | None,
        typer.Option(help=f"Tile side in px, a multiple of 8 dividing the cond tiles (default: theirs), {SIDE_HELP}."),
    ] = None,
    name: NameOpt = "rgb",
    tiles_per_shard: TilesPerShardOpt = 256,
    out: JobOutOpt = None,
    manifest: JobManifestOpt = None,
    shard_index: ShardIndexOpt = None,
    num_shards: NumShardsOpt = None,
    writers: WritersOpt = None,
    compile: CompileOpt = False,
):
    """Render an RGB image for every label map of a manifest (rgb + parent label + height, lineage). Resumable."""
    from synthgen.jobs.rgb import RGBGenerateConfig, run_rgb, tile_count

    values = {
        "cond": cond, "method": method, "model": model, "steps": steps, "guidance": guidance,
        "conditioning_scale": conditioning_scale,
        "batch_size": batch_size, "seed": seed, "size": size, "name": name, "tiles_per_shard": tiles_per_shard,
        "out": out, "manifest": manifest, **job_options(shard_index, num_shards, writers, compile),
    }  # fmt: skip
    run_job_command(RGBGenerateConfig, values, run_rgb, tile_count, lambda cfg: f"rgb {cfg.method}")


@one_line_errors
def climate(
    sites: SitesOpt,
    model: Annotated[str | None, typer.Option(help="SD3 folder or hub id (default synthgen/weights/climate).")] = None,
    control: Annotated[
        str | None, typer.Option(help="Manifest of earlier images: each site's control_key → time-series ControlNet.")
    ] = None,
    controlnet: Annotated[
        str | None, typer.Option(help="SD3 ControlNet folder/hub id (default synthgen/weights/climate_controlnet).")
    ] = None,
    n_per_site: Annotated[
        int, typer.Option(help=f"Images per site (different seeds); sites x n-per-site: {PLAN_HELP}.")
    ] = 1,
    size: Annotated[
        int | None,
        typer.Option(
            help=f"Image side in px (default: the model's training size; at most what the model can place), "
            f"{SIDE_HELP}."
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 28,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale (<= 1: none).")] = 4.5,
    seed: SeedOpt = 0,
    batch_size: Annotated[str, typer.Option(help="Images per forward pass, or auto.")] = "4",
    gsd: Annotated[
        float,
        typer.Option(
            help=f"Metres per pixel for sites without a gsd column ({GSD_MIN_M:g}..{GSD_MAX_M:g}, as the column)."
        ),
    ] = 10.0,
    labels: LabelsOpt = None,
    climate_cube: Annotated[str | None, typer.Option("--climate", help="Climate cube (netCDF/zarr).")] = None,
    climate_method: Annotated[str, typer.Option(help="Cube lookup: nearest or linear.")] = "nearest",
    normals: NormalsOpt = None,
    prompts: PromptsOpt = None,
    name: NameOpt = "climate",
    tiles_per_shard: TilesPerShardOpt = 256,
    out: JobOutOpt = None,
    manifest: JobManifestOpt = None,
    shard_index: ShardIndexOpt = None,
    num_shards: NumShardsOpt = None,
    writers: WritersOpt = None,
    compile: CompileOpt = False,
):
    """Generate images of places under given conditions (SD3 + climate prompts) into shards and a manifest."""
    from synthgen.jobs.climate import ClimateGenerateConfig, run_climate

    values = {
        "sites": sites, "model": model, "control": control, "controlnet": controlnet, "n_per_site": n_per_site,
        "size": size, "steps": steps, "guidance": guidance, "seed": seed, "batch_size": batch_size, "gsd": gsd,
        "labels": labels, "climate": climate_cube, "climate_method": climate_method, "normals": normals,
        "prompts": prompts, "name": name, "tiles_per_shard": tiles_per_shard, "out": out, "manifest": manifest,
        **job_options(shard_index, num_shards, writers, compile),
    }  # fmt: skip
    run_job_command(ClimateGenerateConfig, values, run_climate, lambda cfg: None, lambda cfg: "climate")


@prompts_app.command("show")
@one_line_errors
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
@one_line_errors
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
    from synthgen.climate.lookup import ClimateNormals
    from synthgen.climate.sites import sites_table_from_manifest

    path = sites_table_from_manifest(
        manifest, out, date, control_date, ClimateNormals.load(normals) if normals else None, place, size
    )
    typer.echo(f"wrote {path}")
