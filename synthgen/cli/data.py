"""``synthgen manifest ...`` commands, registered on the ``synthgen`` app by ``synthgen.cli.main``: ``rebuild``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from synthgen.cli.main import _one_line_errors, app

manifest_app = typer.Typer(help="Manifests of generation jobs: rebuild from shard records.", no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")


@manifest_app.command("rebuild")
@_one_line_errors
def rebuild_cmd(
    out: Annotated[Path, typer.Argument(help="Shard folder of a landcover, rgb or climate job.")],
    manifest: Annotated[
        Path | None, typer.Option(help="Manifest to write (default: the job's own manifest path).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Job name, when the folder holds several jobs.")] = None,
    partial: Annotated[
        bool, typer.Option("--partial", help="Merge the finished shards even if some are missing.")
    ] = False,
):
    """Merge the records of a job's finished shards into its manifest (atomically), e.g. after a multi-process run."""
    from synthgen.engine.rebuild import rebuild_manifest

    typer.echo(json.dumps(rebuild_manifest(out, manifest, name, partial), indent=1))
