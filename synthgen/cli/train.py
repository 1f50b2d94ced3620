"""``synthgen train <kind>``: one command shape over a table of trainable models. Every kind takes a config (a
.yaml path or a shipped name), its inputs, ``--out``, ``--max-steps``, ``--resume`` and ``--set``; runs its accelerate
loop with a step progress bar; and prints the run's summary. The loops are in ``synthgen.training``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import typer

from synthgen.cli.common import SetOpt, echo_summary, one_line_errors, set_and_options, with_progress

train_app = typer.Typer(help="Train the generators (accelerate; resumable from checkpoint-N).", no_args_is_help=True)

OutOpt = "Training folder: checkpoints, previews, metrics, pipeline/."
MaxStepsOpt = Annotated[int | None, typer.Option(help="Stop after this many steps (a checkpoint is written).")]
ResumeOpt = Annotated[str | None, typer.Option(help="'latest' or a checkpoint-N folder.")]
RGB_MANIFEST = "Ingested manifest with train/val rgb + label tiles."


@dataclass(frozen=True)
class TrainKind:
    """One trainable model: its config class and loop (``module:name``, imported when the command runs), the
    options it takes besides the common ones (name -> help, in order), and what its summary prints: ``keys`` of
    the run's metrics plus ``extra(cfg, metrics)``."""

    help: str
    config_class: str
    train: str
    inputs: dict[str, str]
    keys: tuple[str, ...]
    extra: Callable[[object, dict], dict] = lambda cfg, metrics: {"pipeline": str(cfg.out_dir / "pipeline")}
    int_inputs: tuple[str, ...] = ()


TRAIN_KINDS: dict[str, TrainKind] = {
    "landcover": TrainKind(
        "Train the land-cover generator: layout autoencoder, then a latent UNet; saves <out>/pipeline.",
        "synthgen.training.landcover_config:LandCoverTrainConfig",
        "synthgen.training.landcover:train_landcover",
        {"manifest": "Ingested manifest with train/val label tiles.", "out": OutOpt},
        ("step", "total_steps", "params", "val_autoencoder"),
    ),
    "spade": TrainKind(
        "Train SPADE (GauGAN) label->RGB: generator + multi-scale PatchGAN, TTUR, EMA; saves <out>/pipeline.",
        "synthgen.training.spade_config:SpadeTrainConfig",
        "synthgen.training.spade:train_spade",
        {"manifest": RGB_MANIFEST, "out": OutOpt},
        ("step", "total_steps", "params", "vgg_loss", "val_ema"),
    ),
    "sd-base": TrainKind(
        "Train a tiny Stable Diffusion base (tokenizer, VAE, UNet + CLIP text encoder); saves <out>/pipeline.",
        "synthgen.training.sd_base_config:SDBaseTrainConfig",
        "synthgen.training.sd_base:train_sd_base",
        {"manifest": RGB_MANIFEST, "out": "Training folder: tokenizer, checkpoints, pipeline/."},
        ("step", "total_steps", "params", "scaling_factor", "val_vae", "pipeline"),
        extra=lambda cfg, metrics: {},
    ),
    "controlnet": TrainKind(
        "Train a ControlNet on label maps beside a frozen SD base; saves <out>/pipeline (RGBControlNetPipeline).",
        "synthgen.training.controlnet_config:ControlNetTrainConfig",
        "synthgen.training.controlnet:train_controlnet",
        {
            "manifest": RGB_MANIFEST,
            "out": "Training folder: checkpoints, validation, pipeline/.",
            "base": "Frozen base: SD 1.5/2.x folder or hub id, or <out>/pipeline of sd-base.",
        },
        ("step", "total_steps", "params", "base_frozen", "pipeline"),
        extra=lambda cfg, metrics: {"validation": metrics["validation"][-1] if metrics["validation"] else None},
    ),
    "sd3": TrainKind(
        "Train an SD3 climate model (small, from scratch; or LoRA on a full-size SD3); saves <out>/pipeline.",
        "synthgen.training.sd3_config:SD3TrainConfig",
        "synthgen.training.sd3:train_sd3",
        {
            "manifests": "Comma-separated ingested manifests with rgb tiles.",
            "base_model": "Full-size SD3 folder/hub id: train LoRA on it.",
            "lora_rank": "LoRA rank (with --base-model).",
            "out": "Training folder: checkpoints, previews, metrics, the model.",
        },
        ("step", "total_steps", "tiles", "distinct_prompts", "params", "scaling_factor"),
        int_inputs=("lora_rank",),
    ),
    "sd3-controlnet": TrainKind(
        "Train an SD3 ControlNet: earlier image of a place → later image (date in the prompt); saves <out>/controlnet.",
        "synthgen.training.sd3_config:SD3ControlNetTrainConfig",
        "synthgen.training.sd3_controlnet:train_sd3_controlnet",
        {
            "base": "The SD3 climate model to control (folder).",
            "manifest": "Dated time-series manifest (e.g. manifests/naip.parquet).",
            "out": "Training folder: checkpoints, previews, metrics, the model.",
        },
        ("step", "total_steps", "pairs", "params"),
        extra=lambda cfg, metrics: {"controlnet": str(cfg.out_dir / "controlnet")},
    ),
}


def _load(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def train_run(kind: str, config: str, options: dict, sets: list[str] | None) -> None:
    """What ``synthgen train <kind>`` does: load the config of ``kind`` with the ``--set`` values and the options (an
    option given overrides a ``--set`` of the same key), run the loop with a step progress bar, print the summary."""
    from synthgen.config import load_config

    spec = TRAIN_KINDS[kind]
    cfg = load_config(_load(spec.config_class), config, f"train-{kind}", set_and_options(sets, options))
    total = min(cfg.total_steps, cfg.max_steps or cfg.total_steps)
    metrics = with_progress(_load(spec.train), cfg, total, f"train {kind}")
    echo_summary({**{k: metrics.get(k) for k in spec.keys}, **spec.extra(cfg, metrics)})


def _config_help(kind: str) -> str:
    from synthgen.config import builtin_configs

    return f"Train config: a .yaml path or a shipped name ({', '.join(builtin_configs(f'train-{kind}'))})."


def _command(kind: str) -> Callable:
    """The typer function of one kind: the common options around the kind's own, in the table's order."""
    spec = TRAIN_KINDS[kind]

    def command(**values):
        config, sets = values.pop("config"), values.pop("set_")
        train_run(kind, config, values, sets)

    def option(name, annotation, default=None):
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

    config_opt = Annotated[str, typer.Option("--config", "-c", help=_config_help(kind))]
    inputs = [
        option(name, Annotated[int | None if name in spec.int_inputs else str | None, typer.Option(help=text)])
        for name, text in spec.inputs.items()
    ]
    command.__signature__ = inspect.Signature(
        [option("config", config_opt, "default"), *inputs, option("max_steps", MaxStepsOpt),
         option("resume", ResumeOpt), option("set_", SetOpt)]
    )  # fmt: skip
    command.__doc__ = spec.help
    command.__name__ = f"train_{kind.replace('-', '_')}_cmd"
    return one_line_errors(command)


for _kind in TRAIN_KINDS:
    train_app.command(_kind)(_command(_kind))
