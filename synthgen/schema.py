"""Class schemes as data: names, palette, nodata value and mappings between schemes; the tile spec.

A scheme is a JSON or YAML file. The built-in ones live in ``synthgen/schemes/``; a user adds one by passing
the path of a file of the same form wherever a scheme name is accepted::

    {"name": "myscheme", "nodata": 0,
     "classes": [{"code": 0, "name": "nodata", "color": "#000000"}, {"code": 1, "name": "forest", ...}],
     "to": {"oem8": {"0": 0, "1": 5}}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from synthgen.errors import ConfigError, SchemeError, allowed, shown
from synthgen.safe_yaml import load_yaml

SCHEMES_DIR = Path(__file__).parent / "schemes"
DEFAULT_SCHEME = "oem8"


@dataclass(frozen=True)
class ClassInfo:
    """One class of a scheme: its code in label rasters, its name and its display colour."""

    code: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ClassScheme:
    """A labelling scheme: classes by code, the nodata code (or None) and mappings into other schemes."""

    name: str
    classes: tuple[ClassInfo, ...]
    nodata: int | None = None
    mappings: dict[str, dict[int, int]] = field(default_factory=dict)
    description: str = ""

    @property
    def codes(self) -> list[int]:
        """Every code a label raster of this scheme may hold, nodata included."""
        return [c.code for c in self.classes]

    @property
    def valid_classes(self) -> list[ClassInfo]:
        """The classes that are not nodata."""
        return [c for c in self.classes if c.code != self.nodata]

    @property
    def num_classes(self) -> int:
        """Number of real classes (nodata excluded): the K of a model's one-hot input."""
        return len(self.valid_classes)

    @property
    def names(self) -> dict[int, str]:
        """Class name by code."""
        return {c.code: c.name for c in self.classes}

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A GDAL colour table (code -> RGBA) for embedding in a label GeoTIFF."""
        return {c.code: (*c.color, 255) for c in self.classes}

    def palette_lut(self) -> np.ndarray:
        """A 256x3 uint8 lookup table from code to colour; codes outside the scheme are black."""
        lut = np.zeros((256, 3), np.uint8)
        for c in self.classes:
            lut[c.code] = c.color
        return lut

    def check_values(self, label: np.ndarray, where: str) -> None:
        """Raise SchemeError if ``label`` holds a value this scheme does not define."""
        present = np.unique(label)
        unknown = sorted(set(present.tolist()) - set(self.codes))
        if unknown:
            raise SchemeError(
                f"{where}: label value(s) {allowed(unknown)} are not in scheme '{self.name}' "
                f"(allowed: {allowed(self.codes)})"
            )

    def mapping_to(self, target: ClassScheme) -> np.ndarray:
        """A 256-entry uint8 lookup table mapping this scheme's codes to ``target``'s.

        Codes this scheme does not define map to 255 so that ``map_labels`` can report them.
        """
        if target.name == self.name:
            table = {c: c for c in self.codes}
        elif target.name in self.mappings:
            table = self.mappings[target.name]
        else:
            raise SchemeError(
                f"scheme '{self.name}' has no mapping to '{target.name}' "
                f"(it maps to: {allowed(self.mappings) or 'none'})"
            )
        lut = np.full(256, 255, np.uint8)
        for src, dst in table.items():
            if dst not in target.codes:
                raise SchemeError(
                    f"scheme '{self.name}' maps {src} to {dst}, which is not a code of '{target.name}' "
                    f"(allowed: {allowed(target.codes)})"
                )
            lut[src] = dst
        return lut

    def to_dict(self) -> dict:
        """The scheme as the JSON-able dict it was loaded from."""
        return {
            "name": self.name,
            "description": self.description,
            "nodata": self.nodata,
            "classes": [
                {"code": c.code, "name": c.name, "color": "#{:02x}{:02x}{:02x}".format(*c.color)} for c in self.classes
            ],
            "to": {k: {str(s): d for s, d in v.items()} for k, v in self.mappings.items()},
        }


def map_labels(label: np.ndarray, source: ClassScheme, target: ClassScheme, where: str) -> np.ndarray:
    """Map a label array from ``source`` codes to ``target`` codes; unknown values raise SchemeError."""
    source.check_values(label, where)
    return source.mapping_to(target)[label]


def _parse_color(value, where: str) -> tuple[int, int, int]:
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    if isinstance(value, list | tuple) and len(value) == 3:
        try:
            rgb = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            rgb = ()
        if rgb and all(0 <= v <= 255 for v in rgb):
            return rgb  # type: ignore[return-value]
    raise SchemeError(f"{where}: colour {shown(value)} is neither '#rrggbb' nor [r, g, b] with values 0-255")


def scheme_from_dict(data: dict, where: str = "scheme") -> ClassScheme:
    """Build a ClassScheme from its dict form, checking every field."""
    for key in ("name", "classes"):
        if key not in data:
            raise SchemeError(f"{where}: missing field '{key}' (a scheme needs name, classes, optional nodata, to)")
    if not isinstance(data["classes"], list):
        got = data["classes"]
        raise SchemeError(f"{where}: 'classes' must be a list of {{code, name, color}} entries, got {shown(got)}")
    classes = []
    for i, entry in enumerate(data["classes"]):
        try:
            code = int(entry["code"])
            name = str(entry["name"])
        except (KeyError, TypeError, ValueError):
            raise SchemeError(f"{where}: class #{i} needs an integer 'code' and a 'name', got {shown(entry)}") from None
        if not 0 <= code <= 255:
            raise SchemeError(f"{where}: class code {code} is outside 0-255 (labels are uint8)")
        classes.append(ClassInfo(code, name, _parse_color(entry.get("color", "#808080"), where)))
    codes = [c.code for c in classes]
    if len(set(codes)) != len(codes):
        raise SchemeError(f"{where}: duplicate class codes in {codes}")
    nodata = data.get("nodata")
    if nodata is not None:
        try:
            nodata = int(nodata)
        except (TypeError, ValueError):
            raise SchemeError(
                f"{where}: nodata {shown(nodata)} is not an integer class code ({allowed(codes)})"
            ) from None
        if nodata not in codes:
            raise SchemeError(f"{where}: nodata {nodata} is not one of the class codes ({allowed(codes)})")
    to = data.get("to") or {}
    if not isinstance(to, dict):
        raise SchemeError(f"{where}: 'to' must map scheme names to {{code: code}} tables, got {shown(to)}")
    mappings: dict[str, dict[int, int]] = {}
    for target, table in to.items():
        try:
            table = {int(k): int(v) for k, v in table.items()}
        except (AttributeError, TypeError, ValueError):
            raise SchemeError(
                f"{where}: mapping to '{target}' must be a table of integer codes, got {shown(table)}"
            ) from None
        missing = sorted(set(codes) - set(table))
        if missing:
            raise SchemeError(f"{where}: mapping to '{target}' does not say where codes {allowed(missing)} go")
        mappings[str(target)] = table
    return ClassScheme(
        name=str(data["name"]),
        classes=tuple(classes),
        nodata=None if nodata is None else int(nodata),
        mappings=mappings,
        description=str(data.get("description", "")),
    )


def builtin_schemes() -> list[str]:
    """Names of the schemes shipped with synthgen."""
    return sorted(p.stem for p in SCHEMES_DIR.glob("*.json"))


@lru_cache(maxsize=64)
def load_scheme(name_or_path: str) -> ClassScheme:
    """Load a built-in scheme by name, or a user's scheme from a .json/.yaml file."""
    path = Path(name_or_path)
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise SchemeError(f"{path}: scheme file not found")
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix.lower() == ".json" else load_yaml(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise SchemeError(f"{path}: not valid {path.suffix[1:].upper()}: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise SchemeError(f"{path}: a scheme file must hold a mapping, got {type(data).__name__}")
        return scheme_from_dict(data, str(path))
    builtin = SCHEMES_DIR / f"{name_or_path}.json"
    if not builtin.is_file():
        raise SchemeError(
            f"unknown scheme '{name_or_path}' (built-in: {allowed(builtin_schemes())}; or give a .json/.yaml path)"
        )
    return scheme_from_dict(json.loads(builtin.read_text()), str(builtin))


@dataclass(frozen=True)
class TileSpec:
    """The shape of a tile: square side in pixels and ground sample distance in metres."""

    size: int = 512
    gsd: float = 0.5

    def __post_init__(self):
        if self.size < 8:
            raise ConfigError(f"tile size {self.size} is too small (at least 8 px)")
        if not self.gsd > 0:
            raise ConfigError(f"tile gsd {self.gsd} must be > 0 metres")
