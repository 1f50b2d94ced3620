"""The config of ``synthgen dataset``: which stages run, into which folder, and one section of settings per stage.

A dataset config is YAML (a path, or a name shipped in ``synthgen/configs/dataset/``: ``laptop``, ``gpu-node``)::

    name: laptop                  # names the folder (out: datasets/{name}) and the tile keys (<name>-<stage>_<i>)
    stages: [landcover, rgb-controlnet, rgb-spade, climate, filter, validate]
    landcover: {n: 256, ...}      # any key of `synthgen landcover` but the paths
    rgb_controlnet: {tiles: 64, steps: 20, ...}   # any key of `synthgen rgb`; tiles: render only the first k labels
    rgb_spade: {...}
    climate: {sites: examples/sites_naip.csv, ...}   # any key of `synthgen climate`
    filter: {threshold: 0.5, ...}  # label-consistency filter of the RGB stages (synthgen filter)
    validate: {profile: cpu, real: manifests/dubai128.parquet, steps: 40, ...}   # + any key of the profile

``--set key=value`` overrides a top-level key, ``--set section.key=value`` a key of a section. Sections are checked
by building the stage's own config (``synthgen.dataset.stages``), so an unknown or bad key is one line at load time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from synthgen.config import (
    build_config,
    fill_path,
    read_yaml_mapping,
    require_name,
    require_non_negative,
    resolve_config_path,
)
from synthgen.errors import ConfigError, allowed, shown

KIND = "dataset"
STAGES = ("landcover", "rgb-controlnet", "rgb-spade", "climate", "filter", "validate")
RGB_STAGES = ("rgb-controlnet", "rgb-spade")
SECTIONS = tuple(s.replace("-", "_") for s in STAGES)


@dataclass
class DatasetConfig:
    """A ``synthgen dataset`` run: stages in order (a subset of ``STAGES``), the output folder (``{name}`` filled
    in), the run seed every generator uses unless its section sets one, tiles per preview sheet, whether the
    published folder gets loose tiles beside the shards (``loose_tiles``: ``synthgen stac --extract``), and the raw
    section of each stage (checked by ``dataset.stages.check_stages``)."""

    name: str = "dataset"
    out: str = "datasets/{name}"
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    seed: int = 0
    preview_n: int = 16
    loose_tiles: bool = False
    landcover: dict = field(default_factory=dict)
    rgb_controlnet: dict = field(default_factory=dict)
    rgb_spade: dict = field(default_factory=dict)
    climate: dict = field(default_factory=dict)
    filter: dict = field(default_factory=dict)
    validate: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        require_name(self)
        self.root  # noqa: B018 (checks the out template)
        require_non_negative(self, ("preview_n",))
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"config 'stages': unknown stage(s) {allowed(unknown)} (allowed: {', '.join(STAGES)})")
        if not self.stages:
            raise ConfigError(f"config 'stages': empty (allowed: {', '.join(STAGES)})")
        dup = sorted({s for s in self.stages if self.stages.count(s) > 1})
        if dup:
            raise ConfigError(f"config 'stages': {allowed(dup)} listed twice")
        for name in SECTIONS:
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(
                    f"config '{name}': expected a mapping of keys to values, got {shown(getattr(self, name))}"
                )
        self.stages = [s for s in STAGES if s in self.stages]  # always run in data-flow order

    @property
    def root(self) -> Path:
        """The dataset folder."""
        return fill_path(self.out, "--out", name=self.name)

    def section(self, stage: str) -> dict:
        """A copy of the raw settings of ``stage`` (e.g. 'rgb-spade' -> the ``rgb_spade`` section)."""
        return copy.deepcopy(getattr(self, stage.replace("-", "_")))


@dataclass(frozen=True)
class StagePaths:
    """Where a stage writes under the dataset folder."""

    dir: Path

    @property
    def shards(self) -> Path:
        """Folder of the shards (and the generator's config.yaml)."""
        return self.dir / "shards"

    @property
    def manifest(self) -> Path:
        """The stage's manifest."""
        return self.dir / "manifest.parquet"

    @property
    def state(self) -> Path:
        """The stage's done-marker: written last, it holds the fingerprint, counts and timings."""
        return self.dir / "stage.json"

    @property
    def cond(self) -> Path:
        """The cond manifest an RGB stage renders when its section sets ``tiles``."""
        return self.dir / "cond.parquet"


def stage_paths(config: DatasetConfig, stage: str) -> StagePaths:
    """The folders and files of ``stage`` in the dataset."""
    return StagePaths(config.root / stage)


def _apply_override(values: dict, key: str, value) -> None:
    if isinstance(value, str) and value.strip().lower() in ("null", "~"):
        value = None  # as in YAML: e.g. --set rgb_spade.model=null for the embedded default
    section, dot, sub = key.partition(".")
    section = section.replace("-", "_")
    if not dot:
        values[section] = value
        return
    if section not in SECTIONS:
        raise ConfigError(f"--set '{key}': unknown section '{section}' (sections: {', '.join(SECTIONS)})")
    if not sub:
        raise ConfigError(f"--set '{key}': give section.key=value")
    current = values.get(section)
    if current is None:
        current = values[section] = {}
    if not isinstance(current, dict):
        raise ConfigError(f"config '{section}': expected a mapping of keys to values, got {shown(current)}")
    current[sub.replace("-", "_")] = value


def load_dataset_config(source: str | Path, overrides: dict | None = None, out: str | None = None) -> DatasetConfig:
    """Load a dataset config (a .yaml path or a shipped name) with ``--set`` overrides (``key`` or ``section.key``)
    and ``--out``; structural errors are one line here, section keys are checked by the stages."""
    path = resolve_config_path(source, KIND)
    values = read_yaml_mapping(path)
    if "source" in values:
        raise ConfigError(f"{path}: 'source' is set by synthgen (the config file's path)")
    for key, value in (overrides or {}).items():
        _apply_override(values, key, value)
    if out is not None:
        values["out"] = out
    values = {k: ({} if k in SECTIONS and v is None else v) for k, v in values.items()}
    return build_config(DatasetConfig, {**values, "source": str(path)}, str(path))
