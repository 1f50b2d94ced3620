"""Typed configs: dataclasses loaded from YAML, overridden from the command line, saved and hashed.

Every command's config is a dataclass. ``load_config`` reads a YAML file (a path, or the name of a config shipped
in ``synthgen/configs/<kind>/``), applies overrides, checks every value's type and refuses unknown keys, naming
the allowed ones. The resolved config is saved next to every output and hashed into the manifest.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from synthgen.errors import ConfigError, allowed, shown
from synthgen.io.atomic import atomic_write
from synthgen.safe_yaml import load_yaml

CONFIGS_DIR = Path(__file__).parent / "configs"
T = TypeVar("T")


def fill_path(template: str, label: str, **fields: str) -> Path:
    """The path a template names: each ``{field}`` of ``fields`` is replaced by its value, and nothing else. A path
    is never a format string: any other brace (``{v2}``, ``{1}``, ``{name.attr}``, ``{{``) is a one-line ConfigError
    naming ``label`` (e.g. ``--out``), the template and the fields allowed."""
    rest = template
    for field in fields:
        rest = rest.replace("{" + field + "}", "")
    if "{" in rest or "}" in rest:
        names = allowed("{" + field + "}" for field in fields)
        raise ConfigError(f"{label} {shown(template)}: braces in a path may only hold {names} (filled in)")
    for field, value in fields.items():
        template = template.replace("{" + field + "}", value)
    return Path(template)


class OutputPaths:
    """For configs with ``name``, ``out`` (shard folder) and ``manifest`` path templates in which ``{name}``, and
    only it, is filled in (``fill_path``)."""

    name: str
    out: str
    manifest: str

    @property
    def out_dir(self) -> Path:
        """Folder of the shards."""
        return fill_path(self.out, "--out", name=self.name)

    @property
    def manifest_path(self) -> Path:
        """Path of the manifest."""
        return fill_path(self.manifest, "--manifest", name=self.name)

    def check_output_paths(self) -> None:
        """Refuse a bad path template in one line before anything runs (call after ``require_name``)."""
        self.out_dir, self.manifest_path  # noqa: B018 (each one checks its template)


def builtin_configs(kind: str) -> list[str]:
    """Names of the configs shipped for a command kind (e.g. 'ingest')."""
    return sorted(p.stem for p in (CONFIGS_DIR / kind).glob("*.yaml"))


NULLS = ("", "null", "none", "~")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in NULLS)):
            return None  # as in YAML: --set key=null (or key=) gives None where None is allowed
        inner = [a for a in args if a is not type(None)]
        for annotation_i in inner[:-1]:  # e.g. int | str: a number if it is one, else the string
            try:
                return _coerce(value, annotation_i, key)
            except ConfigError:
                pass
        return _coerce(value, inner[-1], key)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config '{key}': expected a list, got {shown(value)}")
        return [_coerce(v, args[0], key) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"config '{key}': expected true or false, got {shown(value)}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"config '{key}': expected a number, got {shown(value)}")
        try:
            number = annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config '{key}': expected {annotation.__name__}, got {shown(value)}") from None
        if annotation is int and isinstance(value, float) and value != number:
            raise ConfigError(f"config '{key}': expected an integer, got {shown(value)}")
        return number
    if annotation is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"config '{key}': expected a string, got {shown(value)}")
        return str(value)
    return value


def resolve_config_path(name_or_path: str | Path, kind: str) -> Path:
    """A config file path from a path or the name of a shipped config of this kind."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    shipped = CONFIGS_DIR / kind / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ConfigError(
            f"unknown {kind} config '{name_or_path}' (shipped: {allowed(builtin_configs(kind))}; or a .yaml path)"
        )
    return shipped


def check_known_keys(cls: type, keys: Iterable[str], where: str) -> None:
    """Refuse keys that are not fields of the config dataclass ``cls``: ``<where>: unknown key(s) ... (did you
    mean ...? allowed: ...)``, ``where`` naming the place the keys came from."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(keys) - set(fields))
    if unknown:
        close = [m for k in unknown for m in difflib.get_close_matches(k, fields, n=1)]
        hint = f"did you mean {allowed(close)}? " if close else ""
        raise ConfigError(f"{where}: unknown key(s) {allowed(unknown)} ({hint}allowed: {allowed(fields)})")


def build_config(cls: type[T], values: dict, where: str = "config") -> T:
    """Instantiate a config dataclass from a dict, refusing unknown keys and wrongly typed values."""
    check_known_keys(cls, values, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], k) for k, v in values.items()}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {allowed(missing)}")
    return cls(**kwargs)


def read_yaml_mapping(path: Path) -> dict:
    """The mapping a YAML config file holds; not YAML or not a mapping is a one-line ConfigError."""
    try:
        loaded = load_yaml(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values")
    return loaded


def load_config(
    cls: type[T], source: str | Path | None, kind: str, overrides: dict | None = None, overrides_from: str = "--set"
) -> T:
    """Load a config dataclass from YAML (path or shipped name, or None for defaults) plus overrides.

    Overrides whose value is None are ignored, so CLI options left unset do not replace file values. An unknown key
    is reported with its source: the config file's name, or ``overrides_from`` for an override (the command line's
    options are always known keys, so there an unknown one came from ``--set``).
    """
    values: dict = {}
    where = "config"
    if source is not None:
        path = resolve_config_path(source, kind)
        where = str(path)
        loaded = read_yaml_mapping(path)
        check_known_keys(cls, loaded, where)
        values.update(loaded)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_known_keys(cls, overrides, overrides_from)
    values.update(overrides)
    return build_config(cls, values, where)


def config_to_dict(config) -> dict:
    """A config dataclass as a plain dict (YAML/JSON-able)."""
    return dataclasses.asdict(config)


def config_hash(config, exclude: tuple[str, ...] = ()) -> str:
    """sha256 of the config's canonical JSON, leaving out keys that do not change the output (paths, workers)."""
    data = {k: v for k, v in config_to_dict(config).items() if k not in exclude}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def save_config(config, path: Path) -> Path:
    """Write the resolved config as YAML through a temporary file."""
    return atomic_write(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


# Checks for a config dataclass's ``__post_init__``. Each raises a one-line ConfigError naming the key and its value,
# ``config '<key>': <value> must be ...``, or with ``flags`` the command-line option, ``--<key> <value> must be ...``.
NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
GSD_MIN_M, GSD_MAX_M = 0.001, 1000.0  # metres a pixel a tile may have: 1 mm (a drone) to 1 km (coarse satellites)


def _label(name: str, flags: bool) -> str:
    return f"--{name.replace('_', '-')}" if flags else f"config '{name}':"


def require_positive(config, names: Iterable[str], *, optional: bool = False, flags: bool = False) -> None:
    """Refuse a value of ``names`` below 1 (``... must be >= 1``); with ``optional``, None passes."""
    for name in names:
        value = getattr(config, name)
        if optional and value is None:
            continue
        if value < 1:
            raise ConfigError(f"{_label(name, flags)} {shown(value)} must be >= 1")


def require_non_negative(config, names: Iterable[str], *, flags: bool = False) -> None:
    """Refuse a value of ``names`` below 0 (``... must be >= 0``)."""
    for name in names:
        value = getattr(config, name)
        if value < 0:
            raise ConfigError(f"{_label(name, flags)} {shown(value)} must be >= 0")


def require_above_zero(
    config, names: Iterable[str], *, finite: bool = False, unit: str = "", flags: bool = False
) -> None:
    """Refuse a value of ``names`` that is not > 0 (``... must be > 0[ unit]``); with ``finite``, also inf."""
    for name in names:
        value = getattr(config, name)
        if not ((not finite or math.isfinite(value)) and value > 0):
            raise ConfigError(f"{_label(name, flags)} {shown(value)} must be > 0{' ' + unit if unit else ''}")


def require_between(
    config, names: Iterable[str], low: float, high: float, *, unit: str = "", flags: bool = False
) -> None:
    """Refuse a value of ``names`` outside [low, high] or not finite (``... is out of range (allowed: low..high
    unit)``)."""
    for name in names:
        value = getattr(config, name)
        if not (math.isfinite(value) and low <= value <= high):
            unit_text = f" {unit}" if unit else ""
            raise ConfigError(
                f"{_label(name, flags)} {shown(value)} is out of range (allowed: {low:g}..{high:g}{unit_text})"
            )


def require_open_unit(config, names: Iterable[str]) -> None:
    """Refuse a value of ``names`` outside (0, 1) (``config '<key>': <value> must be in (0, 1)``)."""
    for name in names:
        value = getattr(config, name)
        if not 0 < value < 1:
            raise ConfigError(f"config '{name}': {shown(value)} must be in (0, 1)")


def require_choice(config, name: str, choices: Iterable[str], *, label: str | None = None) -> None:
    """Refuse a value of ``name`` outside ``choices``: ``<label> '<value>' is not one of <choices>`` (the label
    defaults to ``config '<key>':``)."""
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(f"{label or _label(name, False)} {shown(value)} is not one of {allowed(choices)}")


def require_name(config, *, label: str = "name") -> None:
    """Refuse a ``name`` (it names files and keys) with other characters than letters, digits, '_' and '-'."""
    if not NAME_RE.fullmatch(config.name):
        raise ConfigError(f"{label} {shown(config.name)} may hold only letters, digits, '_' and '-'")
