"""The stages of ``synthgen dataset``: where each writes, how its section becomes the config of the command it runs
(``synthgen landcover``, ``rgb``, ``climate``, ``validate``), and the checks made before anything runs.

A generator section holds any key of its command's config except those the dataset sets (``name``, ``out``,
``manifest``, the rank options, and ``method`` for RGB); RGB sections add ``tiles`` (render only the first k
label maps) and default ``cond`` to this dataset's land-cover manifest. The validate section holds ``profile``
(cpu, gpu, tiny or a .yaml), ``real`` (the real manifest whose val split is the test set), ``real_baseline``
(also train on its train split), ``holdout`` (the share of label maps held out when there is no real manifest),
``sets`` (the RGB stages to train on; default: those that run) and any key of the validation profile.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from synthgen.config import build_config, load_config
from synthgen.dataset.config import RGB_STAGES, DatasetConfig, stage_paths
from synthgen.dataset.filter import filter_settings
from synthgen.errors import ConfigError, allowed, shown
from synthgen.jobs.climate import DEFAULT_CONTROLNET, ClimateGenerateConfig, run_climate
from synthgen.jobs.landcover import LandCoverGenerateConfig, run_landcover
from synthgen.jobs.rgb import RGBGenerateConfig, run_rgb, tile_count
from synthgen.pipelines.registry import HUB_ID, PIPELINES, is_trained
from synthgen.validation.config import ValidateConfig

RESERVED = ("name", "out", "manifest", "shard_index", "num_shards")


@dataclass(frozen=True)
class GeneratorStage:
    """A generator stage: its command's config class and run function, the section keys the dataset adds or
    fixes, and its embedded default weights with the make target that trains them."""

    config_cls: type
    run: Callable[..., dict]
    weights: Path
    make_target: str
    fixed: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)
    hub_ids: bool = False


def _defaults(pipeline: str) -> tuple[Path, str]:
    """The embedded default's folder and the make target that trains it, from the pipeline registry."""
    spec = PIPELINES[pipeline]
    return spec.default_weights, spec.make_target


GENERATORS: dict[str, GeneratorStage] = {
    "landcover": GeneratorStage(LandCoverGenerateConfig, run_landcover, *_defaults("landcover")),
    "rgb-controlnet": GeneratorStage(
        RGBGenerateConfig,
        run_rgb,
        *_defaults("rgb-controlnet"),
        fixed={"method": "controlnet"},
        extra={"tiles": None},
        hub_ids=True,
    ),
    "rgb-spade": GeneratorStage(
        RGBGenerateConfig,
        run_rgb,
        *_defaults("rgb-spade"),
        fixed={"method": "spade"},
        extra={"tiles": None},
        hub_ids=True,
    ),
    "climate": GeneratorStage(ClimateGenerateConfig, run_climate, *_defaults("climate"), hub_ids=True),
}
VALIDATE_EXTRA = {
    "profile": "cpu",
    "real": "manifests/dubai128.parquet",
    "real_baseline": True,
    "holdout": 0.2,
    "sets": None,
}
VALIDATE_RESERVED = ("train", "test", "out")


def section_name(stage: str) -> str:
    """The config section of a stage ('rgb-spade' -> 'rgb_spade')."""
    return stage.replace("-", "_")


def _in_section(message: str, section: str) -> str:
    """A command's one-line error, re-addressed to the section key it came from."""
    flag = re.match(r"--([a-z0-9-]+) ", message)
    if flag:
        return f"config '{section}.{flag.group(1).replace('-', '_')}': {message[flag.end() :]}"
    key = re.match(r"config '(\w+)':? ", message)
    if key:
        return f"config '{section}.{key.group(1)}': {message[key.end() :]}"
    return f"config '{section}': {message}"


def _check_keys(values: dict, known: set[str], reserved: tuple[str, ...], section: str) -> None:
    taken = sorted(k for k in values if k in reserved)
    if taken:
        raise ConfigError(
            f"config '{section}.{taken[0]}': set by synthgen dataset (every stage writes under the dataset folder)"
        )
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config '{section}': unknown key(s) {allowed(unknown)} (allowed: {allowed(known)})")


def _pop_extras(values: dict, defaults: dict, section: str) -> dict:
    extras = {k: values.pop(k, default) for k, default in defaults.items()}
    tiles = extras.get("tiles")
    if tiles is not None:
        try:
            tiles = extras["tiles"] = int(tiles)
        except (TypeError, ValueError):
            raise ConfigError(f"config '{section}.tiles': expected an integer or null, got {shown(tiles)}") from None
        if tiles < 1:
            raise ConfigError(f"config '{section}.tiles': {tiles} must be >= 1 (or null: every label map)")
    return extras


def generator_config(config: DatasetConfig, stage: str, cond: Path | None = None) -> tuple[object, dict]:
    """The config of the command a generator stage runs, and the section's dataset-only keys (``tiles``).

    ``cond`` replaces an RGB stage's cond manifest (the first-k subset). Bad keys are one line naming
    ``section.key``.
    """
    spec, section = GENERATORS[stage], section_name(stage)
    values = config.section(stage)
    known = {f.name for f in dataclasses.fields(spec.config_cls)} - set(RESERVED) - set(spec.fixed)
    _check_keys(values, known | set(spec.extra), RESERVED + tuple(spec.fixed), section)
    extras = _pop_extras(values, spec.extra, section)
    paths = stage_paths(config, stage)
    values.setdefault("seed", config.seed)
    if stage in RGB_STAGES:
        values.setdefault("cond", str(stage_paths(config, "landcover").manifest))
        if cond is not None:
            values["cond"] = str(cond)
    values.update(name=f"{config.name}-{stage}", out=str(paths.shards), manifest=str(paths.manifest), **spec.fixed)
    try:
        return build_config(spec.config_cls, values, f"config '{section}'"), extras
    except ConfigError as exc:
        message = str(exc)
        if message.startswith(f"config '{section}'"):
            raise
        raise ConfigError(_in_section(message, section)) from None


def validate_settings(config: DatasetConfig) -> tuple[dict, dict]:
    """The validate section split into the dataset's keys (profile, real, real_baseline, holdout, sets) and the
    overrides of the validation profile; checked, one line on a bad key or value."""
    values = config.section("validate")
    known = {f.name for f in dataclasses.fields(ValidateConfig)} - set(VALIDATE_RESERVED)
    _check_keys(values, known | set(VALIDATE_EXTRA), VALIDATE_RESERVED, "validate")
    extras = _pop_extras(values, VALIDATE_EXTRA, "validate")
    try:
        holdout = float(extras["holdout"])
    except (TypeError, ValueError):
        raise ConfigError(f"config 'validate.holdout': expected a number, got {shown(extras['holdout'])}") from None
    if not 0 < holdout < 1:
        raise ConfigError(f"config 'validate.holdout': {holdout} must be in (0, 1)")
    extras["holdout"] = holdout
    if isinstance(extras["real_baseline"], str):
        extras["real_baseline"] = extras["real_baseline"].lower() in ("true", "yes", "1")
    sets = extras["sets"]
    if isinstance(sets, str):
        sets = [s for s in sets.split(",") if s]
    if sets is None:
        sets = [s for s in RGB_STAGES if s in config.stages]
    bad = [s for s in sets if s not in RGB_STAGES]
    if bad:
        raise ConfigError(
            f"config 'validate.sets': {allowed(bad)} cannot be trained on (allowed: {allowed(RGB_STAGES)})"
        )
    if not sets:
        raise ConfigError(
            "stage 'validate' trains on generated RGB tiles: add rgb-controlnet or rgb-spade to 'stages' "
            "(or set validate.sets)"
        )
    extras["sets"] = sets
    return extras, values


def validate_config(config: DatasetConfig, train: list[str], test: list[str]) -> ValidateConfig:
    """The ``synthgen validate`` config of the stage: the profile, the section's overrides, these sets, and the
    stage folder as output."""
    extras, overrides = validate_settings(config)
    values = {**overrides, "train": train, "test": test, "out": str(stage_paths(config, "validate").dir)}
    try:
        return load_config(ValidateConfig, extras["profile"], "validate", values)
    except ConfigError as exc:
        raise ConfigError(_in_section(str(exc), "validate")) from None


def _check_model(stage: str, model: str | None, control: bool) -> None:
    spec, section = GENERATORS[stage], section_name(stage)
    if model is None:
        defaults = [spec.weights] + ([DEFAULT_CONTROLNET] if control else [])
        for folder in defaults:
            if not is_trained(folder):
                raise ConfigError(
                    f"stage '{stage}': the embedded default model synthgen/weights/{folder.name} is not trained yet: "
                    f"run `make {spec.make_target}`, set {section}.model to a model folder"
                    f"{' or hub id' if spec.hub_ids else ''}, or leave '{stage}' out of 'stages'"
                )
    elif not Path(model).exists() and not (spec.hub_ids and HUB_ID.fullmatch(model)):
        raise ConfigError(
            f"config '{section}.model': {model}: model folder not found (give a folder"
            f"{' or a hub id' if spec.hub_ids else ''})"
        )


def check_stages(config: DatasetConfig) -> None:
    """Every check that needs no model run, before anything is written: each section builds its command's config,
    each model exists (an embedded default that is not trained yet names its ``make weights-*`` target), each RGB
    stage has label maps to render, validation has sets to train on."""
    for stage in config.stages:
        if stage == "validate":
            validate_config(config, [], [])
            validate_settings(config)
            continue
        if stage == "filter":
            filter_settings(config)
            continue
        generator, _ = generator_config(config, stage)
        control = getattr(generator, "control", None) is not None
        _check_model(stage, generator.model, control)
        if control and generator.controlnet is not None:
            _check_model(stage, generator.controlnet, False)
        for key in ("sites", "control", "labels"):
            given = config.section(stage).get(key) if stage == "climate" else None
            if given is not None and not Path(given).is_file():
                raise ConfigError(f"config 'climate.{key}': {given}: file not found")
        if stage in RGB_STAGES and "cond" in config.section(stage) and not Path(generator.cond).is_file():
            raise ConfigError(f"config '{section_name(stage)}.cond': {generator.cond}: manifest not found")
        if stage in RGB_STAGES and "cond" not in config.section(stage) and "landcover" not in config.stages:
            if not stage_paths(config, "landcover").manifest.is_file():
                raise ConfigError(
                    f"stage '{stage}' renders the dataset's land-cover tiles, but "
                    f"{stage_paths(config, 'landcover').manifest} does not exist: add landcover to 'stages' or set "
                    f"{section_name(stage)}.cond to a label manifest"
                )


def expected_tiles(stage: str, generator) -> int | None:
    """How many tiles a generator stage makes (for its progress bar); None when it cannot tell cheaply."""
    if stage == "landcover":
        return generator.n
    if stage in RGB_STAGES:
        return tile_count(generator) if Path(generator.cond).is_file() else None
    return _site_count(Path(generator.sites), generator.n_per_site)


def _site_count(path: Path, per_site: int) -> int | None:
    import pandas as pd

    try:
        if path.suffix == ".csv":
            return len(pd.read_csv(path, comment="#")) * per_site
        if path.suffix == ".parquet":
            return len(pd.read_parquet(path)) * per_site
    except (OSError, ValueError):
        return None
    return None
