"""``synthgen dataset``: the whole chain from one config into one folder; the work is in ``synthgen.dataset``."""

from __future__ import annotations

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
