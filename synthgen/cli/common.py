"""What every command shares: one-line errors (usage errors included), ``--set`` parsing, progress bars, the
summary printer and the option types several commands take."""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Callable
from contextlib import contextmanager
from functools import wraps
from typing import Annotated

import numpy as np
import typer
from typer.core import TyperGroup

from synthgen.engine.plan import MAX_SHARDS
from synthgen.errors import MAX_SHOWN, ConfigError, JobInterrupted, SynthgenError, shown

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as _click_exceptions
    from typer._click.globals import get_current_context
except ImportError:  # older typer uses click itself
    from click import exceptions as _click_exceptions
    from click.globals import get_current_context

_NoArgsIsHelpError = getattr(_click_exceptions, "NoArgsIsHelpError", ())
INVOCATION = "synthgen.invocation"  # where the root context keeps the command line (see OneLineUsageErrors)


def _usage_message(exc: _click_exceptions.UsageError) -> str:
    """The usage error's message on one line, with the rejected value when the parser kept it; a quoted value the
    parser put in its message is cut as ``shown`` cuts values."""
    message = " ".join(exc.format_message().split())
    message = re.sub(rf"'([^']{{{MAX_SHOWN},}})'", lambda m: shown(m.group(1)), message)
    errors = getattr(exc.__cause__, "errors", None)
    if callable(errors):
        try:
            value = errors()[0]["input"]
        except (LookupError, TypeError):
            return message
        if shown(value) not in message:
            message += f" (got {shown(value)})"
    return message


@contextmanager
def _usage_errors_as_one_line():
    try:
        yield
    except _NoArgsIsHelpError:
        raise
    except _click_exceptions.UsageError as exc:
        typer.echo(f"error: {_usage_message(exc)}", err=True)
        raise typer.Exit(exc.exit_code) from None


class OneLineUsageErrors(TyperGroup):
    """A command group whose usage errors (a bad option value, an unknown option or command, a missing argument)
    are one 'error: ...' line like every other error, instead of the usage text and an error box. It keeps the
    command line it was given (``invocation``), for the resume hint of a stopped job."""

    def make_context(self, info_name, args, parent=None, **extra):
        argv = [info_name or "synthgen", *args]
        with _usage_errors_as_one_line():
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        if parent is None:
            ctx.meta[INVOCATION] = argv
        return ctx

    def invoke(self, ctx):
        with _usage_errors_as_one_line():
            return super().invoke(ctx)


MAX_MESSAGE = 1000


def one_line(message: str) -> str:
    """An error message as one line of at most ``MAX_MESSAGE`` characters: the last guard, should a message hold a
    value that was not cut by ``errors.shown`` where it was made."""
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else f"{message[: MAX_MESSAGE - 30]}... ({len(message)} characters)"


def invocation() -> str:
    """The command line this run of the CLI was given, to be pasted into a shell ('synthgen ...' when unknown)."""
    ctx = get_current_context(silent=True)
    argv = ctx.meta.get(INVOCATION) if ctx is not None else None
    if not argv:
        return "synthgen ..."
    program = shlex.quote(argv[0])
    if argv[0].startswith("python -m "):  # click's name for `python -m synthgen`: the interpreter that ran it
        program = f"{shlex.quote(sys.executable)} -m {argv[0].removeprefix('python -m ')}"
    return " ".join([program, *map(shlex.quote, argv[1:])])


def one_line_errors(fn: Callable) -> Callable:
    """Turn SynthgenError (and a few OS errors) into one line on stderr and a non-zero exit; a job stopped by
    SIGINT or SIGTERM says what it kept and, on a second line, the command that resumes it."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except JobInterrupted as exc:
            typer.echo(f"{exc}", err=True)
            typer.echo(f"resume with: {invocation()}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except SynthgenError as exc:
            typer.echo(f"error: {one_line(str(exc))}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # a full disk, a read-only folder: one line, naming the file when the OS does
            name = str(exc.filename)
            where = "" if not exc.filename else f"{name}: " if len(name) <= 200 else f"{shown(name, 200)}: "
            reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror or str(exc)
            typer.echo(f"error: {where}{reason}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def parse_sets(sets: list[str] | None) -> dict:
    """``--set KEY=VALUE`` items as a dict (dashes in keys become underscores)."""
    out = {}
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set {shown(item)} is not KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = value
    return out


def set_and_options(sets: list[str] | None, options: dict) -> dict:
    """Config overrides: the ``--set`` values, then the options given (an option left unset, None, keeps a ``--set``
    of the same key)."""
    return {**parse_sets(sets), **{k: v for k, v in options.items() if v is not None}}


def progress(total: int | None, desc: str, unit: str = "tile"):
    """The progress bar of a long command (opened at its first update)."""
    from synthgen.cli.progress import ProgressBar

    return ProgressBar(desc, total, unit)


def with_progress(run: Callable, cfg, total: int | None, desc: str):
    """``run(cfg, progress=...)`` with a progress bar that opens at the first update; returns what ``run`` returns."""
    with progress(total, desc) as bar:
        return run(cfg, progress=bar)


def _json_default(value):
    return value.item() if isinstance(value, np.generic) else str(value)


def echo_summary(summary: dict) -> None:
    """Print what a job or a training run did, as indented JSON: the one way every command reports."""
    typer.echo(json.dumps(summary, indent=1, default=_json_default))


def run_job_command(config_cls: type, values: dict, run: Callable, total: Callable, desc: Callable) -> None:
    """What every generator command does: build its config from the options given (None: the default), run the
    job with a progress bar of ``total(cfg)`` tiles named ``desc(cfg)``, and print the job's summary."""
    from diffusers.utils import logging as diffusers_logging

    from synthgen.config import build_config

    diffusers_logging.disable_progress_bar()
    cfg = build_config(config_cls, {k: v for k, v in values.items() if v is not None})
    echo_summary(with_progress(run, cfg, total(cfg), desc(cfg)))


SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Any other config key: --set key=value.")]
SETS_HELP = "NAME=<manifest>[:split][,<manifest>[:split]...] (split: train, val or all)"

# the options every generator command (landcover, rgb, climate) shares
SeedOpt = Annotated[int, typer.Option(help="Run seed; tile i uses sha256(seed:i).")]
NameOpt = Annotated[str, typer.Option(help="Names the shards, keys and manifest.")]
TilesPerShardOpt = Annotated[int, typer.Option(help=f"Tiles per shard (at most {MAX_SHARDS:,} shards a job).")]
JobOutOpt = Annotated[
    str | None, typer.Option(help="Shard folder ({name} is filled in, no other braces; default data/{name}).")
]
JobManifestOpt = Annotated[
    str | None,
    typer.Option(help="Manifest path ({name} is filled in, no other braces; default manifests/{name}.parquet)."),
]
ShardIndexOpt = Annotated[
    int | None, typer.Option(help="Part of the shards this process writes (e.g. $SLURM_ARRAY_TASK_ID), 0-based.")
]
NumShardsOpt = Annotated[int | None, typer.Option(help="Number of parts the shards are split into (array size).")]
WritersOpt = Annotated[
    int | None,
    typer.Option(help="Processes encoding tiles beside generation (default: 0 on CPU, a share of the cores on GPU)."),
]
ControlNetGuidanceOpt = Annotated[
    float | None,
    typer.Option("--guidance", help="Classifier-free guidance scale (ControlNet; default: the model's own)."),
]
ConditioningScaleOpt = Annotated[
    float | None,
    typer.Option(help="ControlNet residual scale (default: the model's own; higher follows the labels harder)."),
]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the denoiser (slow start, faster steps).")]


def job_options(shard_index: int | None, num_shards: int | None, writers: int | None, compile: bool) -> dict:
    """The JobOptions values of a generator command."""
    return {"shard_index": shard_index, "num_shards": num_shards, "writers": writers, "compile": compile}
