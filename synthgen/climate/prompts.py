"""Template prompts for the SD3 climate generator: a spatial prompt and a climate prompt per site.

Templates are data (``prompts/climate.yaml``): a lead and a list of parts, each part holding ``{fields}``. Field
names are read with ``string.Formatter().parse`` and must be in the whitelist ``FIELDS``; filling is plain
``str.format`` on already-formatted strings, so nothing in a template is ever evaluated (no attribute access, no
indexing, no format specs). A part is kept only when the site has every field it names; the lead is written only
when some part is kept. Numbers are rounded to the ``decimals`` of the file. For training, ``build_prompts`` with a
random generator drops parts (``dropout.part``) and whole prompts (``dropout.prompt``).

The spatial prompt goes to SD3's CLIP encoders (``prompt`` / ``prompt_2``), the climate prompt to T5
(``prompt_3``); a model without T5 gets both joined (``sd3_prompt_kwargs``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from synthgen.errors import ConfigError, PromptError, allowed, shown
from synthgen.safe_yaml import load_yaml

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
DEFAULT_PROMPTS = "climate"


@dataclass(frozen=True)
class FieldSpec:
    """One whitelisted template field: what it holds and in which unit."""

    kind: str  # "number" or "text"
    unit: str
    description: str


FIELDS: dict[str, FieldSpec] = {
    "landcover": FieldSpec("text", "", "land-cover shares, e.g. '40 % tree, 25 % agriculture land'"),
    "place": FieldSpec("text", "", "place name given by the sites table"),
    "lat": FieldSpec("number", "°", "latitude, decimal degrees WGS84 (north positive)"),
    "lon": FieldSpec("number", "°", "longitude, decimal degrees WGS84 (east positive)"),
    "date": FieldSpec("text", "", "acquisition date YYYY-MM-DD"),
    "year": FieldSpec("text", "", "year of the date"),
    "month_name": FieldSpec("text", "", "month of the date, e.g. 'August'"),
    "season": FieldSpec("text", "", "meteorological season at the site (hemisphere from latitude)"),
    "cloud_cover": FieldSpec("number", "%", "cloud cover of the image in percent"),
    "gsd": FieldSpec("number", "m", "ground sample distance in metres"),
    "temperature": FieldSpec("number", "°C", "monthly mean air temperature"),
    "precipitation": FieldSpec("number", "mm/month", "monthly precipitation total"),
    "solar_radiation": FieldSpec("number", "kWh/m²/day", "monthly mean daily global horizontal irradiation"),
}
SEASONS_NORTH = {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring", 6: "summer",
                 7: "summer", 8: "summer", 9: "autumn", 10: "autumn", 11: "autumn"}  # fmt: skip
SOUTH = {"winter": "summer", "summer": "winter", "spring": "autumn", "autumn": "spring"}


def template_fields(text: str, where: str) -> list[str]:
    """The field names in a template string, refusing anything but plain ``{name}`` fields of the whitelist."""
    names = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise PromptError(f"{where}: template {shown(text)} is malformed ({exc})") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise PromptError(
                f"{where}: template field {{{name[:40]}}} in {shown(text)} must be a plain {{name}} (no "
                "format specs, indexing or conversions)"
            )
        if name not in FIELDS:
            raise PromptError(f"{where}: unknown template field '{name}' in {shown(text)} (allowed: {allowed(FIELDS)})")
        names.append(name)
    return names


@dataclass(frozen=True)
class PromptTemplate:
    """A lead and parts; ``fields[i]`` lists the field names of ``parts[i]``."""

    lead: str
    parts: tuple[str, ...]
    fields: tuple[tuple[str, ...], ...]

    @classmethod
    def from_dict(cls, data, where: str) -> PromptTemplate:
        """Parse ``{lead, parts}`` from YAML, checking every field against the whitelist."""
        if not isinstance(data, dict) or set(data) - {"lead", "parts"}:
            raise PromptError(f"{where}: a template is a mapping with 'lead' and 'parts' (got {shown(data)})")
        lead = data.get("lead") or ""
        parts = data.get("parts") or []
        if not isinstance(lead, str) or not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
            raise PromptError(f"{where}: 'lead' must be text and 'parts' a list of texts")
        if template_fields(lead, where):
            raise PromptError(f"{where}: the lead {shown(lead)} may not hold fields (put them in a part)")
        fields = tuple(tuple(template_fields(p, where)) for p in parts)
        return cls(lead.strip(), tuple(p.strip() for p in parts), fields)

    def to_dict(self) -> dict:
        """The template as YAML-able data."""
        return {"lead": self.lead, "parts": list(self.parts)}

    @property
    def all_fields(self) -> set[str]:
        """Every field the template can use."""
        return {f for names in self.fields for f in names}

    def render(self, values: dict[str, str], separator: str, rng: np.random.Generator | None = None,
               part_dropout: float = 0.0) -> str:  # fmt: skip
        """The prompt from formatted ``values``: parts whose fields are all present (and not dropped), after the
        lead; "" when no part is kept."""
        kept = []
        for part, names in zip(self.parts, self.fields, strict=True):
            if not all(values.get(n) for n in names):
                continue
            if rng is not None and part_dropout > 0 and rng.random() < part_dropout:
                continue
            text = part.format(**{n: values[n] for n in names})
            if text:
                kept.append(text)
        if not kept:
            return ""
        return separator.join([self.lead, *kept] if self.lead else kept)


@dataclass(frozen=True)
class PromptSpec:
    """The whole prompt file: spatial and climate templates, separators, rounding and training dropout."""

    spatial: PromptTemplate
    climate: PromptTemplate
    separator: str = ", "
    join: str = "; "
    decimals: dict[str, int] = field(default_factory=dict)
    part_dropout: float = 0.0
    prompt_dropout: float = 0.0
    source: str = ""

    @classmethod
    def from_dict(cls, data, where: str) -> PromptSpec:
        """Parse and check a prompt file's content."""
        keys = {"spatial", "climate", "separator", "join", "decimals", "dropout"}
        if not isinstance(data, dict):
            raise PromptError(f"{where}: a prompt file is a mapping with keys {allowed(keys)}")
        unknown = set(data) - keys
        if unknown:
            raise PromptError(f"{where}: unknown key(s) {allowed(unknown)} (allowed: {allowed(keys)})")
        for key in ("spatial", "climate"):
            if key not in data:
                raise PromptError(f"{where}: missing the '{key}' template")
        decimals = data.get("decimals") or {}
        numbers = {k for k, v in FIELDS.items() if v.kind == "number"}
        for name, value in decimals.items():
            if name not in numbers:
                raise PromptError(f"{where}: decimals for '{name}', which is not a numeric field ({allowed(numbers)})")
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 6:
                raise PromptError(f"{where}: decimals of '{name}' must be a whole number 0..6, got {shown(value)}")
        dropout = data.get("dropout") or {}
        if set(dropout) - {"part", "prompt"}:
            raise PromptError(f"{where}: unknown dropout key(s) {allowed(set(dropout) - {'part', 'prompt'})} "
                              "(allowed: part, prompt)")  # fmt: skip
        for name in ("part", "prompt"):
            value = dropout.get(name, 0.0)
            if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise PromptError(f"{where}: dropout '{name}' must be a probability in [0, 1), got {shown(value)}")
        return cls(
            spatial=PromptTemplate.from_dict(data["spatial"], f"{where}: spatial"),
            climate=PromptTemplate.from_dict(data["climate"], f"{where}: climate"),
            separator=str(data.get("separator", ", ")),
            join=str(data.get("join", "; ")),
            decimals=dict(decimals),
            part_dropout=float(dropout.get("part", 0.0)),
            prompt_dropout=float(dropout.get("prompt", 0.0)),
            source=where,
        )

    def to_dict(self) -> dict:
        """The spec as the YAML data it came from (saved into model folders)."""
        return {
            "spatial": self.spatial.to_dict(),
            "climate": self.climate.to_dict(),
            "separator": self.separator,
            "join": self.join,
            "decimals": dict(self.decimals),
            "dropout": {"part": self.part_dropout, "prompt": self.prompt_dropout},
        }

    @property
    def climate_fields(self) -> set[str]:
        """Fields of the climate template."""
        return self.climate.all_fields


def builtin_prompt_files() -> list[str]:
    """Names of the prompt files in ``prompts/``."""
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))


def load_prompt_spec(name_or_path: str | Path | None = None) -> PromptSpec:
    """Load a prompt file: a .yaml path or the name of a file in ``prompts/`` (default ``climate``)."""
    name_or_path = name_or_path or DEFAULT_PROMPTS
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROMPTS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown prompt file '{name_or_path}' (in prompts/: {allowed(builtin_prompt_files())}; "
                "or a .yaml path)"
            )
    if not path.is_file():
        raise ConfigError(f"{path}: prompt file not found")
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise PromptError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return PromptSpec.from_dict(data, str(path))


def _round(value: float, decimals: int) -> str:
    rounded = round(float(value), decimals)
    return f"{0.0 if rounded == 0 else rounded:.{decimals}f}"  # never "-0"


def _present(value) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return not (isinstance(value, str) and not value.strip())


def landcover_text(fractions: dict[str, float], scheme: str = "oem8") -> str:
    """Land-cover shares ({class name: share}) as ``"40 % tree, 25 % road"``: the class list of
    ``synthgen.prompts.composition_prompt`` (largest first, rounded to 5 %, 0 % left out) without its lead."""
    from synthgen.prompts import PROMPT_PREFIX, composition_prompt
    from synthgen.schema import load_scheme

    text = composition_prompt(fractions, load_scheme(scheme))
    return text.removeprefix(PROMPT_PREFIX).removeprefix(";").strip()


def season_of(date: dt.date, lat: float | None) -> str:
    """Meteorological season of a date; southern hemisphere (lat < 0) swapped."""
    season = SEASONS_NORTH[date.month]
    return SOUTH[season] if lat is not None and lat < 0 else season


def field_values(site: dict, spec: PromptSpec) -> dict[str, str]:
    """Formatted text for every whitelisted field a site has (missing fields are absent).

    ``site`` holds any of: ``lat lon date (datetime.date or YYYY-MM-DD) place cloud_cover gsd temperature
    precipitation solar_radiation`` and ``landcover`` (text) or ``landcover_fractions`` ({class name: share}).
    """
    values: dict[str, str] = {}
    for name, fspec in FIELDS.items():
        if fspec.kind == "number" and _present(site.get(name)):
            values[name] = _round(site[name], spec.decimals.get(name, 1))
    for name in ("place",):
        if _present(site.get(name)):
            values[name] = str(site[name]).strip()
    if _present(site.get("landcover")):
        values["landcover"] = str(site["landcover"]).strip()
    elif site.get("landcover_fractions"):
        text = landcover_text(site["landcover_fractions"])
        if text:
            values["landcover"] = text
    date = site.get("date")
    if _present(date):
        date = date if isinstance(date, dt.date) else dt.date.fromisoformat(str(date)[:10])
        values["date"] = date.isoformat()
        values["year"] = str(date.year)
        values["month_name"] = calendar.month_name[date.month]
        lat = site.get("lat")
        values["season"] = season_of(date, float(lat) if _present(lat) else None)
    return values


@dataclass(frozen=True)
class SitePrompts:
    """The two prompts of one site."""

    spatial: str
    climate: str

    def joined(self, join: str) -> str:
        """Both prompts in one text (for a model without T5)."""
        return join.join(p for p in (self.spatial, self.climate) if p)


def build_prompts(site: dict, spec: PromptSpec, rng: np.random.Generator | None = None) -> SitePrompts:
    """The spatial and climate prompt of a site; with ``rng``, the training dropout of the spec is applied."""
    values = field_values(site, spec)
    prompts = []
    for template in (spec.spatial, spec.climate):
        if rng is not None and spec.prompt_dropout > 0 and rng.random() < spec.prompt_dropout:
            prompts.append("")
            continue
        prompts.append(template.render(values, spec.separator, rng, spec.part_dropout if rng is not None else 0.0))
    return SitePrompts(*prompts)


def check_prompts(prompts: SitePrompts, spec: PromptSpec, where: str) -> None:
    """Refuse a site whose spatial or climate prompt comes out empty, naming the fields that would fill it."""
    for kind, text, template in (
        ("spatial", prompts.spatial, spec.spatial),
        ("climate", prompts.climate, spec.climate),
    ):
        if template.parts and not text:
            raise PromptError(
                f"{where}: the {kind} prompt is empty: the site has none of its fields "
                f"({allowed(template.all_fields)}; template {spec.source})"
            )
    if not prompts.spatial and not prompts.climate:
        raise PromptError(f"{where}: both prompts are empty (template {spec.source} has no parts)")


def sd3_prompt_kwargs(prompts: list[SitePrompts], spec: PromptSpec, has_t5: bool) -> dict:
    """The ``prompt`` / ``prompt_2`` / ``prompt_3`` arguments of an SD3 pipeline call for a batch of sites."""
    if has_t5:
        spatial = [p.spatial for p in prompts]
        return {"prompt": spatial, "prompt_2": spatial, "prompt_3": [p.climate for p in prompts]}
    joined = [p.joined(spec.join) for p in prompts]
    return {"prompt": joined, "prompt_2": joined, "prompt_3": joined}


def vocabulary_texts(spec: PromptSpec) -> list[str]:
    """Texts holding every fixed word a prompt of this spec can contain (for training a tokenizer)."""
    words = [spec.spatial.lead, spec.climate.lead, spec.separator, spec.join]
    words += [p.replace("{", " ").replace("}", " ") for p in spec.spatial.parts + spec.climate.parts]
    words += list(calendar.month_name[1:]) + sorted(set(SEASONS_NORTH.values()))
    words += [f"{i} %" for i in range(0, 101, 5)] + [str(i) for i in range(-60, 130)] + ["-0.5", "12.5", "°", "²"]
    return [w for w in words if w]
