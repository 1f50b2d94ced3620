"""The ``synthgen`` command line: one thin function per command; the work is in the library."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from synthgen import __version__
from synthgen.errors import ConfigError, SynthgenError

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as _click_exceptions
except ImportError:  # older typer uses click itself
    from click import exceptions as _click_exceptions

_NoArgsIsHelpError = getattr(_click_exceptions, "NoArgsIsHelpError", ())


def _usage_message(exc: _click_exceptions.UsageError) -> str:
    """The usage error's message on one line, with the rejected value when the parser kept it."""
    message = " ".join(exc.format_message().split())
    errors = getattr(exc.__cause__, "errors", None)
    if callable(errors):
        try:
            value = errors()[0]["input"]
        except (LookupError, TypeError):
            return message
        if repr(value) not in message:
            message += f" (got {value!r})"
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


class _OneLineUsageErrors(TyperGroup):
    """A command group whose usage errors (a bad option value, an unknown option or command, a missing argument)
    are one 'error: ...' line like every other error, instead of the usage text and an error box."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _usage_errors_as_one_line():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _usage_errors_as_one_line():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_OneLineUsageErrors,
    name="synthgen",
    help="Synthetic remote-sensing training data: ingest real tiles, generate, inspect and verify shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _one_line_errors(fn: Callable) -> Callable:
    """Turn SynthgenError (and a few OS errors) into one line on stderr and a non-zero exit."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SynthgenError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # a full disk, a read-only folder: one line, naming the file when the OS does
            where = f"{exc.filename}: " if exc.filename else ""
            reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror or str(exc)
            typer.echo(f"error: {where}{reason}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _parse_sets(sets: list[str] | None) -> dict:
    out = {}
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set '{item}' is not KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = value
    return out


def _progress(total: int | None, desc: str, unit: str = "tile"):
    from synthgen.cli.progress import ProgressBar

    return ProgressBar(desc, total, unit)


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


@app.command()
@_one_line_errors
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
    out: Annotated[str | None, typer.Option(help="Shard folder ({name} is filled in).")] = None,
    manifest: Annotated[str | None, typer.Option(help="Manifest path ({name} is filled in).")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes writing shards in parallel.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other config key: --set key=value.")] = None,
):
    """Cut real rasters into tiles (rgb / label / height) in shards with a parquet manifest. Resumable."""
    from synthgen.config import load_config
    from synthgen.jobs.ingest import IngestConfig, make_plan, run_ingest

    options = {
        "name": name,
        "root": root,
        "sources": sources,
        "image": image,
        "label": label,
        "scheme": scheme,
        "target_scheme": target_scheme,
        "tile_size": tile_size,
        "stride": stride,
        "scale": scale,
        "val_fraction": val_fraction,
        "out": out,
        "manifest": manifest,
        "workers": workers,
    }
    # options left unset (None) must not wipe out a --set of the same key
    overrides = {**_parse_sets(set_), **{k: v for k, v in options.items() if v is not None}}
    cfg = load_config(IngestConfig, config, "ingest", overrides)
    plan = make_plan(cfg)
    with _progress(plan.num_tiles, f"ingest {cfg.name}") as bar:
        summary = run_ingest(cfg, progress=bar, plan=plan)
    typer.echo(json.dumps(summary, indent=1))


@app.command()
@_one_line_errors
def verify(manifest: Annotated[Path, typer.Argument(help="Manifest (.parquet) to check.")]):
    """Re-hash every shard member against the manifest; exit 0 only if all match."""
    from synthgen.io.manifest import read_manifest, verify_manifest

    total = len(read_manifest(manifest))
    with _progress(total, "verify") as bar:
        result = verify_manifest(manifest, progress=bar)
    typer.echo(
        f"ok: {result['tiles']} tiles, {result['members']} members in {result['shards']} shards match {manifest}"
    )


@app.command()
@_one_line_errors
def info(
    manifest: Annotated[Path, typer.Argument(help="Manifest (.parquet) to summarise.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
):
    """Summarise a manifest: tiles, splits, classes, height statistics, size on disk."""
    from synthgen.evaluation.summary import format_summary, summarize_manifest

    summary = summarize_manifest(manifest)
    typer.echo(json.dumps(summary, indent=1) if as_json else format_summary(summary))


@app.command()
@_one_line_errors
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


@app.command()
@_one_line_errors
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


evaluate_app = typer.Typer(help="Compare generated data with real data.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.command("layout")
@_one_line_errors
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
@_one_line_errors
def evaluate_rgb_cmd(
    real: Annotated[Path, typer.Option(help="Manifest of real tiles with rgb + label (.parquet).")],
    method: Annotated[str, typer.Option(help="Label->RGB method: spade or controlnet.")] = "spade",
    model: Annotated[str | None, typer.Option(help="Pipeline folder or hub id (default: the embedded one).")] = None,
    split: Annotated[str, typer.Option(help="Split of the real manifest to render and compare.")] = "val",
    inception_weights: Annotated[
        Path | None, typer.Option(help="Local Inception weights for FID/KID (else they are skipped).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Sampling steps (ControlNet).")] = 20,
    guidance: Annotated[float, typer.Option(help="Guidance scale (ControlNet).")] = 7.5,
    batch_size: Annotated[int, typer.Option(help="Tiles per forward pass.")] = 8,
    seed: Annotated[int, typer.Option(help="Run seed; tile j of the split uses sha256(seed:j).")] = 0,
    max_tiles: Annotated[int | None, typer.Option(help="At most this many tiles (evenly spaced).")] = None,
    out: Annotated[Path, typer.Option(help="Report JSON path.")] = Path("reports/rgb-{method}.json"),
):
    """Render RGB from the real labels of a split and compare with the real RGB: SSIM, PSNR, class colour/texture."""
    from diffusers.utils import logging as diffusers_logging

    from synthgen.evaluation import save_report
    from synthgen.evaluation.rgb import evaluate_rgb, format_rgb_report

    diffusers_logging.disable_progress_bar()
    with _progress(None, f"evaluate rgb {method}") as progress:
        report = evaluate_rgb(
            real, method, model, split, inception_weights, batch_size, seed, steps, guidance, max_tiles, progress
        )
    path = save_report(report, Path(str(out).format(method=method)))
    typer.echo(format_rgb_report(report))
    typer.echo(f"wrote {path}")


def _with_progress(run: Callable, cfg, total: int | None, desc: str):
    """``run(cfg, progress=...)`` with a progress bar that opens at the first update; returns what ``run`` returns."""
    with _progress(total, desc) as progress:
        return run(cfg, progress=progress)


train_app = typer.Typer(help="Train the generators (accelerate; resumable from checkpoint-N).", no_args_is_help=True)
app.add_typer(train_app, name="train")


def _train(train_fn: Callable, config_cls: type, kind: str, config: str, options: dict, sets: list[str] | None):
    """What every ``train`` command does: load the config of ``kind`` (a .yaml path or a shipped name) with the
    ``--set`` values and the options (an option overrides a ``--set`` of the same key), run ``train_fn`` with a step
    progress bar ("train <command>", opened at the first step), and return (config, metrics)."""
    from synthgen.config import load_config

    cfg = load_config(config_cls, config, kind, {**_parse_sets(sets), **options})
    total = min(cfg.total_steps, cfg.max_steps or cfg.total_steps)
    return cfg, _with_progress(train_fn, cfg, total, kind.replace("-", " ", 1))


def _echo_json(metrics: dict, keys: tuple[str, ...], **extra) -> None:
    """Print ``keys`` of a run's metrics (None when missing) and ``extra`` as indented JSON."""
    typer.echo(json.dumps({**{k: metrics.get(k) for k in keys}, **extra}, indent=1))


@train_app.command("landcover")
@_one_line_errors
def train_landcover_cmd(
    config: Annotated[
        str, typer.Option("--config", "-c", help="Train config: a .yaml path or a shipped name (default, tiny).")
    ] = "default",
    manifest: Annotated[str | None, typer.Option(help="Ingested manifest with train/val label tiles.")] = None,
    out: Annotated[str | None, typer.Option(help="Training folder: checkpoints, previews, metrics, pipeline/.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (a checkpoint is written).")] = None,
    resume: Annotated[str | None, typer.Option(help="'latest' or a checkpoint-N folder.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other config key: --set key=value.")] = None,
):
    """Train the land-cover generator: layout autoencoder, then a latent UNet; saves <out>/pipeline."""
    from synthgen.training.landcover import train_landcover
    from synthgen.training.landcover_config import LandCoverTrainConfig

    options = {"manifest": manifest, "out": out, "max_steps": max_steps, "resume": resume}
    cfg, metrics = _train(train_landcover, LandCoverTrainConfig, "train-landcover", config, options, set_)
    keys = ("step", "total_steps", "params", "val_autoencoder")
    _echo_json(metrics, keys, pipeline=str(cfg.out_dir / "pipeline"))


@train_app.command("spade")
@_one_line_errors
def train_spade_cmd(
    config: Annotated[
        str, typer.Option("--config", "-c", help="Train config: a .yaml path or a shipped name (default, tiny).")
    ] = "default",
    manifest: Annotated[str | None, typer.Option(help="Ingested manifest with train/val rgb + label tiles.")] = None,
    out: Annotated[str | None, typer.Option(help="Training folder: checkpoints, previews, metrics, pipeline/.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (a checkpoint is written).")] = None,
    resume: Annotated[str | None, typer.Option(help="'latest' or a checkpoint-N folder.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other config key: --set key=value.")] = None,
):
    """Train SPADE (GauGAN) label->RGB: generator + multi-scale PatchGAN, TTUR, EMA; saves <out>/pipeline."""
    from synthgen.training.spade import train_spade
    from synthgen.training.spade_config import SpadeTrainConfig

    options = {"manifest": manifest, "out": out, "max_steps": max_steps, "resume": resume}
    cfg, metrics = _train(train_spade, SpadeTrainConfig, "train-spade", config, options, set_)
    keys = ("step", "total_steps", "params", "vgg_loss", "val_ema")
    _echo_json(metrics, keys, pipeline=str(cfg.out_dir / "pipeline"))


@train_app.command("sd-base")
@_one_line_errors
def train_sd_base_cmd(
    config: Annotated[
        str, typer.Option("--config", "-c", help="Train config: a .yaml path or a shipped name (default, tiny).")
    ] = "default",
    manifest: Annotated[str | None, typer.Option(help="Ingested manifest with train/val rgb + label tiles.")] = None,
    out: Annotated[str | None, typer.Option(help="Training folder: tokenizer, checkpoints, pipeline/.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (a checkpoint is written).")] = None,
    resume: Annotated[str | None, typer.Option(help="'latest' or a checkpoint-N folder.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other config key: --set key=value.")] = None,
):
    """Train a tiny Stable Diffusion base (tokenizer, VAE, UNet + CLIP text encoder); saves <out>/pipeline."""
    from synthgen.training.sd_base import train_sd_base
    from synthgen.training.sd_base_config import SDBaseTrainConfig

    options = {"manifest": manifest, "out": out, "max_steps": max_steps, "resume": resume}
    _, metrics = _train(train_sd_base, SDBaseTrainConfig, "train-sd-base", config, options, set_)
    _echo_json(metrics, ("step", "total_steps", "params", "scaling_factor", "val_vae", "pipeline"))


@train_app.command("controlnet")
@_one_line_errors
def train_controlnet_cmd(
    config: Annotated[
        str, typer.Option("--config", "-c", help="Train config: a .yaml path or a shipped name (default, tiny).")
    ] = "default",
    manifest: Annotated[str | None, typer.Option(help="Ingested manifest with train/val rgb + label tiles.")] = None,
    out: Annotated[str | None, typer.Option(help="Training folder: checkpoints, validation, pipeline/.")] = None,
    base: Annotated[
        str | None, typer.Option(help="Frozen base: SD 1.5/2.x folder or hub id, or <out>/pipeline of sd-base.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (a checkpoint is written).")] = None,
    resume: Annotated[str | None, typer.Option(help="'latest' or a checkpoint-N folder.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other config key: --set key=value.")] = None,
):
    """Train a ControlNet on label maps beside a frozen SD base; saves <out>/pipeline (RGBControlNetPipeline)."""
    from synthgen.training.controlnet import train_controlnet
    from synthgen.training.controlnet_config import ControlNetTrainConfig

    options = {"manifest": manifest, "out": out, "base": base, "max_steps": max_steps, "resume": resume}
    _, metrics = _train(train_controlnet, ControlNetTrainConfig, "train-controlnet", config, options, set_)
    validation = metrics["validation"][-1] if metrics["validation"] else None
    _echo_json(metrics, ("step", "total_steps", "params", "base_frozen", "pipeline"), validation=validation)


ShardIndexOpt = Annotated[
    int | None, typer.Option(help="Part of the shards this process writes (e.g. $SLURM_ARRAY_TASK_ID), 0-based.")
]
NumShardsOpt = Annotated[int | None, typer.Option(help="Number of parts the shards are split into (array size).")]
WritersOpt = Annotated[
    int | None,
    typer.Option(help="Processes encoding tiles beside generation (default: 0 on CPU, a share of the cores on GPU)."),
]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the denoiser (slow start, faster steps).")]


def _job_options(shard_index: int | None, num_shards: int | None, writers: int | None, compile: bool) -> dict:
    """The JobOptions values of a generator command."""
    return {"shard_index": shard_index, "num_shards": num_shards, "writers": writers, "compile": compile}


@app.command()
@_one_line_errors
def landcover(
    n: Annotated[int, typer.Option("--n", help="Number of tiles to generate.")],
    model: Annotated[str | None, typer.Option(help="Pipeline folder (default: synthgen/weights/landcover).")] = None,
    scheme: Annotated[str | None, typer.Option(help="Scheme the labels must be in (checked).")] = None,
    size: Annotated[int, typer.Option(help="Tile side in pixels (a multiple of the latent factor).")] = 128,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 20,
    batch_size: Annotated[
        str, typer.Option(help="Tiles per forward pass, or auto (does not change the tiles on CPU).")
    ] = "32",
    seed: Annotated[int, typer.Option(help="Run seed; tile i uses sha256(seed:i).")] = 0,
    gsd: Annotated[float, typer.Option(help="Ground sample distance of the tiles in metres.")] = 1.0,
    name: Annotated[str, typer.Option(help="Names the shards, keys and manifest.")] = "landcover",
    tiles_per_shard: Annotated[int, typer.Option(help="Tiles per shard.")] = 256,
    out: Annotated[str | None, typer.Option(help="Shard folder ({name} is filled in; default data/{name}).")] = None,
    manifest: Annotated[str | None, typer.Option(help="Manifest path (default manifests/{name}.parquet).")] = None,
    shard_index: ShardIndexOpt = None,
    num_shards: NumShardsOpt = None,
    writers: WritersOpt = None,
    compile: CompileOpt = False,
):
    """Generate land-cover label + height tiles into shards with a parquet manifest. Resumable."""
    from diffusers.utils import logging as diffusers_logging

    from synthgen.config import build_config
    from synthgen.jobs.landcover import LandCoverGenerateConfig, run_landcover

    diffusers_logging.disable_progress_bar()
    values = {
        "n": n,
        "model": model,
        "scheme": scheme,
        "size": size,
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "gsd": gsd,
        "name": name,
        "tiles_per_shard": tiles_per_shard,
        "out": out,
        "manifest": manifest,
        **_job_options(shard_index, num_shards, writers, compile),
    }
    cfg = build_config(LandCoverGenerateConfig, {k: v for k, v in values.items() if v is not None})
    summary = _with_progress(run_landcover, cfg, cfg.n, "landcover")
    typer.echo(json.dumps(summary, indent=1))


@app.command()
@_one_line_errors
def rgb(
    cond: Annotated[str, typer.Option(help="Manifest of label (+ height) tiles to render (.parquet).")],
    method: Annotated[str, typer.Option(help="Label->RGB method: spade or controlnet.")] = "spade",
    model: Annotated[
        str | None, typer.Option(help="Pipeline folder or hub id (default: synthgen/weights/rgb_<method>).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Sampling steps (ControlNet; SPADE renders in one pass).")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale (ControlNet).")] = 7.5,
    batch_size: Annotated[str, typer.Option(help="Tiles per forward pass, or auto.")] = "8",
    seed: Annotated[int, typer.Option(help="Run seed; tile i uses sha256(seed:i).")] = 0,
    size: Annotated[
        int | None, typer.Option(help="Tile side in px, a multiple of 8 dividing the cond tiles (default: theirs).")
    ] = None,
    name: Annotated[str, typer.Option(help="Names the shards, keys and manifest.")] = "rgb",
    tiles_per_shard: Annotated[int, typer.Option(help="Tiles per shard.")] = 256,
    out: Annotated[str | None, typer.Option(help="Shard folder ({name} is filled in; default data/{name}).")] = None,
    manifest: Annotated[str | None, typer.Option(help="Manifest path (default manifests/{name}.parquet).")] = None,
    shard_index: ShardIndexOpt = None,
    num_shards: NumShardsOpt = None,
    writers: WritersOpt = None,
    compile: CompileOpt = False,
):
    """Render an RGB image for every label map of a manifest (rgb + parent label + height, lineage). Resumable."""
    from diffusers.utils import logging as diffusers_logging

    from synthgen.config import build_config
    from synthgen.jobs.rgb import RGBGenerateConfig, describe, run_rgb, tile_count

    diffusers_logging.disable_progress_bar()
    values = {
        "cond": cond,
        "method": method,
        "model": model,
        "steps": steps,
        "guidance": guidance,
        "batch_size": batch_size,
        "seed": seed,
        "size": size,
        "name": name,
        "tiles_per_shard": tiles_per_shard,
        "out": out,
        "manifest": manifest,
        **_job_options(shard_index, num_shards, writers, compile),
    }
    cfg = build_config(RGBGenerateConfig, {k: v for k, v in values.items() if v is not None})
    summary = _with_progress(run_rgb, cfg, tile_count(cfg), f"rgb {cfg.method}")
    typer.echo(describe(summary))


_SETS_HELP = "NAME=<manifest>[:split][,<manifest>[:split]...] (split: train, val or all)"


def _validation_config(config: str, values: dict, sets: list[str] | None):
    from synthgen.config import load_config
    from synthgen.validation.config import ValidateConfig

    return load_config(ValidateConfig, config, "validate", {**_parse_sets(sets), **values})


def _print_validation(report: dict, out_dir: Path) -> None:
    from synthgen.validation.report import adapt_table, crosstest_table

    if "seg" in report["config"]["task"]:
        table = adapt_table(report) if report["kind"] == "adapt" else crosstest_table(report)
        typer.echo("\n".join(table))
    for m in report["missing"]:
        typer.echo(f"missing {m['set']}: {m['reason']}")
    plots = len(list((out_dir / "plots").rglob("*.png")))
    typer.echo(f"wrote {out_dir / 'report.json'}, {out_dir / 'report.md'} and {plots} plots in {out_dir / 'plots'}")


@app.command()
@_one_line_errors
def validate(
    train: Annotated[list[str] | None, typer.Option(help=f"Training set: {_SETS_HELP}. Repeat for more.")] = None,
    test: Annotated[list[str] | None, typer.Option(help=f"Test set: {_SETS_HELP}. Repeat for more.")] = None,
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
    paper: Annotated[
        bool, typer.Option("--paper", help="The published study: build its four training sets (what exists) first.")
    ] = False,
    config: Annotated[
        str, typer.Option("--config", "--profile", "-c", help="Profile: cpu, gpu, tiny, or a .yaml path.")
    ] = "cpu",
    out: Annotated[str | None, typer.Option(help="Output folder: report.json, report.md, plots/, models/.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other config key: --set key=value.")] = None,
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
        "out": out,
    }
    cfg = _validation_config(config, values, set_)
    with _progress(None, "validate", "step") as bar:
        if paper:
            report = run_paper(cfg, bar, log=lambda line: typer.echo(line, err=True))
        else:
            report = run_validate(cfg, bar)
    _print_validation(report, cfg.out_dir)


@app.command()
@_one_line_errors
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


@app.command()
@_one_line_errors
def adapt(
    source: Annotated[str, typer.Option(help=f"Labelled source tiles (synthetic): {_SETS_HELP}.")],
    target: Annotated[str, typer.Option(help=f"Unlabelled target tiles (real): {_SETS_HELP}.")],
    test: Annotated[list[str] | None, typer.Option(help=f"Labelled test set: {_SETS_HELP}. Repeat for more.")] = None,
    arch: Annotated[str, typer.Option(help="Architectures, comma-separated.")] = "unet",
    task: Annotated[
        str | None, typer.Option(help="seg, height or seg,height (default: seg, + height if the source has it).")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="Pseudo-label confidence threshold (default 0.95).")] = None,
    steps: Annotated[int | None, typer.Option(help="Source-only training steps.")] = None,
    adapt_steps: Annotated[int | None, typer.Option(help="Self-training steps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    config: Annotated[
        str, typer.Option("--config", "--profile", "-c", help="Profile: cpu, gpu, tiny, or a .yaml path.")
    ] = "cpu",
    out: Annotated[str | None, typer.Option(help="Output folder (default: <profile out>-adapt).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other config key: --set key=value.")] = None,
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
        "out": out,
    }
    cfg = _validation_config(config, values, set_)
    if out is None and "out" not in _parse_sets(set_):
        cfg.out = cfg.out.rstrip("/") + "-adapt"
    with _progress(None, "adapt", "step") as bar:
        report = run_adapt(cfg, bar, task_auto=task is None)
    _print_validation(report, cfg.out_dir)


from synthgen.cli import data, dataset, generate  # noqa: E402,F401  (register their commands)
