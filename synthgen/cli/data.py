"""The data commands: ``ingest`` real rasters into shards, and look at or check any job's output: ``verify``,
``info``, ``preview``, ``schemes``, ``manifest rebuild``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from synthgen.cli.common import SetOpt, echo_summary, one_line_errors, progress, set_and_options

manifest_app = typer.Typer(help="Manifests of generation jobs: rebuild from shard records.", no_args_is_help=True)


@one_line_errors
def ingest(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Ingest config: a .yaml path or a shipped name "
            "(dubai, dubai128, dronedeploy, potsdam, vaihingen, loveda, naip, elevation).",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Dataset name: names the shards, keys and manifest.")] = None,
    root: Annotated[str | None, typer.Option(help="Folder holding the data.")] = None,
    sources: Annotated[
        str | None, typer.Option(help="Glob of primary files under ROOT, e.g. '*/images/*.jpg'.")
    ] = None,
    image: Annotated[str | None, typer.Option(help="Image path template: {path} {stem} {dir} {parent}.")] = None,
    label: Annotated[str | None, typer.Option(help="Label path template, e.g. 'labels/{stem}.png'.")] = None,
    scheme: Annotated[str | None, typer.Option(help="Class scheme of the label files (name or file).")] = None,
    target_scheme: Annotated[str | None, typer.Option(help="Scheme to map labels into (default oem8).")] = None,
    tile_size: Annotated[int | None, typer.Option(help="Tile side in pixels.")] = None,
    stride: Annotated[int | None, typer.Option(help="Step between tiles in pixels (default: tile size).")] = None,
    scale: Annotated[
        float | None, typer.Option(help="Resample factor before tiling (0.5 halves the resolution).")
    ] = None,
    val_fraction: Annotated[float | None, typer.Option(help="Share of tiles (by whole areas) for validation.")] = None,
    out: Annotated[str | None, typer.Option(help="Shard folder ({name} is filled in, no other braces).")] = None,
    manifest: Annotated[str | None, typer.Option(help="Manifest path ({name} is filled in, no other braces).")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes writing shards in parallel.")] = None,
    set_: SetOpt = None,
):
    """Cut real rasters into tiles (rgb / label / height) in shards with a parquet manifest. Resumable."""
    from synthgen.config import load_config
    from synthgen.jobs.ingest import IngestConfig, make_plan, run_ingest

    options = {
        "name": name, "root": root, "sources": sources, "image": image, "label": label, "scheme": scheme,
        "target_scheme": target_scheme, "tile_size": tile_size, "stride": stride, "scale": scale,
        "val_fraction": val_fraction, "out": out, "manifest": manifest, "workers": workers,
    }  # fmt: skip
    cfg = load_config(IngestConfig, config, "ingest", set_and_options(set_, options))
    plan = make_plan(cfg)
    with progress(plan.num_tiles, f"ingest {cfg.name}") as bar:
        echo_summary(run_ingest(cfg, progress=bar, plan=plan))


@one_line_errors
def verify(
    manifest: Annotated[Path, typer.Argument(help="Manifest (.parquet) to check.")],
    subset: Annotated[
        bool,
        typer.Option(
            "--subset",
            help="Check only the rows the manifest holds, not that every tile of its job is there (a --partial "
            "rebuild, a manifest without a job plan).",
        ),
    ] = False,
):
    """Account for every tile of the manifest's job (every row of its plan, every member of its shards) and re-hash
    every member; exit 0 only if all match."""
    from synthgen.io.manifest import read_manifest, verify_manifest

    total = len(read_manifest(manifest))
    with progress(total, "verify") as bar:
        result = verify_manifest(manifest, progress=bar, subset=subset)
    rows_only = " (its rows only: a subset, not checked against its job's plan)" if result["rows_only"] else ""
    typer.echo(
        f"ok: {result['tiles']} tiles, {result['members']} members in {result['shards']} shards match {manifest}"
        f"{rows_only}"
    )


@one_line_errors
def info(
    manifest: Annotated[Path, typer.Argument(help="Manifest (.parquet) to summarise.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
):
    """Summarise a manifest: tiles, splits, classes, height statistics, size on disk."""
    from synthgen.evaluation.summary import format_summary, summarize_manifest

    summary = summarize_manifest(manifest)
    typer.echo(json.dumps(summary, indent=1) if as_json else format_summary(summary))


@one_line_errors
def preview(
    manifest: Annotated[Path, typer.Argument(help="Manifest (.parquet) to preview.")],
    out: Annotated[
        Path | None, typer.Option(help="PNG path (default: beside the manifest, <name>.preview.png).")
    ] = None,
    n: Annotated[int, typer.Option(help="Number of tiles on the sheet.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed for picking the tiles.")] = 0,
    columns: Annotated[int, typer.Option(help="Tiles per row.")] = 4,
):
    """Write a PNG contact sheet: rgb | label in its palette | height ramp, with a legend."""
    from synthgen.evaluation.preview import write_contact_sheet

    out = out or manifest.with_name(manifest.stem + ".preview.png")
    path = write_contact_sheet(manifest, out, n=n, seed=seed, columns=columns)
    typer.echo(f"wrote {path}")


@one_line_errors
def schemes(name: Annotated[str | None, typer.Argument(help="Scheme name or file to show in full.")] = None):
    """List the class schemes, or show one with its classes, colours and mappings."""
    from synthgen.schema import builtin_schemes, load_scheme

    if name is None:
        for scheme_name in builtin_schemes():
            s = load_scheme(scheme_name)
            typer.echo(
                f"{s.name:12s} {s.num_classes:3d} classes  maps to: {', '.join(s.mappings) or '-'}  {s.description}"
            )
        return
    typer.echo(json.dumps(load_scheme(name).to_dict(), indent=1))


@manifest_app.command("rebuild")
@one_line_errors
def rebuild_cmd(
    out: Annotated[Path, typer.Argument(help="Shard folder of a landcover, rgb, climate or ingest job.")],
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="Manifest to write (default: manifests/<name>.parquet, when the job wrote its manifest there; a "
            "path named in the shard records is never used)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Job name, when the folder holds several jobs.")] = None,
    partial: Annotated[
        bool, typer.Option("--partial", help="Merge the finished shards even if some are missing.")
    ] = False,
):
    """Merge the records of a job's finished shards into its manifest (atomically), e.g. after a multi-process run."""
    from synthgen.engine.rebuild import rebuild_manifest

    echo_summary(rebuild_manifest(out, manifest, name, partial))
