"""The ``synthgen`` app: the only place commands are registered. Each verb group's file defines its commands
(and sub-apps); this file adds them in the order ``synthgen --help`` lists them."""

from __future__ import annotations

from typing import Annotated

import typer

from synthgen import __version__
from synthgen.cli import data, dataset, evaluate, generate, train, validate
from synthgen.cli.common import OneLineUsageErrors

app = typer.Typer(
    cls=OneLineUsageErrors,
    name="synthgen",
    help="Synthetic remote-sensing training data: ingest real tiles, generate, inspect and verify shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool):
    if value:
        typer.echo(f"synthgen {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
):
    """synthgen: synthetic remote-sensing training data with diffusion models."""


COMMANDS = (
    data.ingest, data.verify, data.info, data.preview, data.schemes,
    generate.landcover, generate.rgb,
    validate.validate, validate.report, validate.adapt, validate.filter,
    generate.climate,
    dataset.dataset, dataset.stac, dataset.card,
)  # fmt: skip
GROUPS = {
    "evaluate": evaluate.evaluate_app,
    "train": train.train_app,
    "prompts": generate.prompts_app,
    "manifest": data.manifest_app,
}

for command in COMMANDS:
    app.command()(command)
for name, group in GROUPS.items():
    app.add_typer(group, name=name)
