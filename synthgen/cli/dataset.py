"""``synthgen dataset``: the whole chain from one config into one folder; ``synthgen stac`` and ``synthgen card``:
its STAC catalog and data card. The work is in ``synthgen.dataset``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthgen.cli.common import one_line_errors, parse_sets
from synthgen.cli.progress import ProgressBar


@one_line_errors
def dataset(
    config: Annotated[
        str,
        typer.Option(
            "--config",
            "-c",
            help="Dataset config: a shipped name (laptop, gpu-node: synthgen/configs/dataset/<name>.yaml) or a .yaml "
            "path.",
        ),
    ] = "laptop",
    out: Annotated[
        str | None,
        typer.Option(help="Dataset folder ({name} filled in, no other braces; default: the config's out)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key: --set key=value or --set section.key=value (landcover.n=300)."),
    ] = None,
):
    """Run landcover -> rgb (ControlNet, SPADE) -> climate -> validate from one config into one folder, then write
    report.md / report.json (counts, timings, previews, the validation table). Rerun to resume: complete stages are
    skipped."""
    from diffusers.utils import logging as diffusers_logging

    from synthgen.dataset.config import load_dataset_config
    from synthgen.dataset.run import run_dataset

    diffusers_logging.disable_progress_bar()
    cfg = load_dataset_config(config, parse_sets(set_), out)
    run_dataset(cfg, bars=ProgressBar, log=lambda line: typer.echo(line, err=True))
    typer.echo(f"dataset: {cfg.root}")
    typer.echo(f"report: {cfg.root / 'report.md'} (numbers in {cfg.root / 'report.json'})")


DatasetDir = Annotated[Path, typer.Argument(help="Dataset folder (as synthgen dataset writes it).")]
License = Annotated[
    str | None,
    typer.Option(help="Licence (an SPDX id such as cc-by-4.0; default: the data card's, else 'other')."),
]


@one_line_errors
def stac(
    dataset_dir: DatasetDir,
    extract: Annotated[
        bool,
        typer.Option(
            "--extract",
            help="Also write every tile as loose COGs in <stage>/tiles/ (label tiles with a QGIS .qml style and GDAL "
            ".aux.xml category names); the catalog's assets then point at them.",
        ),
    ] = False,
    license: License = None,
):
    """Write the dataset's STAC catalog (catalog.json).

    One collection per stage (<stage>/collection.json), one item per tile (<stage>/items/<key>.json) with its
    rgb / label / height assets: GDAL /vsitar/ paths into the shards, or the loose files with --extract. See
    docs/publish.md."""
    from synthgen.dataset.stac import write_catalog

    with ProgressBar("stac", None, "item") as bar:
        summary = write_catalog(dataset_dir, extract=extract, license=license, progress=bar)
    items = ", ".join(f"{stage} {n}" for stage, n in summary["collections"].items())
    typer.echo(f"catalog: {summary['catalog']} (items: {items})")


@one_line_errors
def card(dataset_dir: DatasetDir, license: License = None):
    """(Re)write the dataset's data card (README.md, Hugging Face format).

    Configs pointing at the shards (datasets.load_dataset(folder) loads it), models and hashes, class shares,
    contact sheets, the validation table, how to load it, known limits. See docs/publish.md."""
    from synthgen.dataset.card import write_card

    typer.echo(f"card: {write_card(dataset_dir, license)}")
