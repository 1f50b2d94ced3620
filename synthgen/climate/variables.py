"""The climate variables the prompts state (unit, plausible range, monthly aggregation); the type and range check of
every cell of a sites table (numbers, text, dates, land-cover shares: one error format, naming the value and what
is allowed); and the radiation and distance formulas the normals use."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from synthgen.config import GSD_MAX_M, GSD_MIN_M
from synthgen.errors import MetadataError, shown


@dataclass(frozen=True)
class ClimateVariable:
    """A climate variable as the prompts state it: unit, plausible range, and how a month aggregates it."""

    unit: str
    low: float
    high: float
    aggregate: str  # "mean" or "sum" over the month


CLIMATE_VARIABLES: dict[str, ClimateVariable] = {
    "temperature": ClimateVariable("°C", -90.0, 60.0, "mean"),
    "precipitation": ClimateVariable("mm/month", 0.0, 3000.0, "sum"),
    "solar_radiation": ClimateVariable("kWh/m²/day", 0.0, 12.0, "mean"),
}
GSD_M = (GSD_MIN_M, GSD_MAX_M)
RANGES = {"lat": (-90.0, 90.0), "lon": (-180.0, 180.0), "cloud_cover": (0.0, 100.0), "gsd": GSD_M}
UNITS = {"lat": "°", "lon": "°", "cloud_cover": "%", "gsd": "m"}
SHARE_PREFIX = "lc_"


def limits(name: str) -> tuple[float, float, str]:
    """(low, high, unit) of site field, climate variable or land-cover share (``lc_<class>``) ``name``."""
    if name.startswith(SHARE_PREFIX):
        return 0.0, 1.0, "(a share)"
    if name in RANGES:
        return (*RANGES[name], UNITS[name])
    variable = CLIMATE_VARIABLES[name]
    return variable.low, variable.high, variable.unit


def allowed_values(name: str) -> str:
    """What a cell of column ``name`` may hold, for messages: ``low..high unit``, or ``YYYY-MM-DD`` for a date."""
    if name == "date":
        return "YYYY-MM-DD"
    low, high, unit = limits(name)
    return f"{low:g}..{high:g} {unit}"


def check_range(name: str, value: float, where: str) -> float:
    """``value`` of site field or climate variable ``name`` as a float; out of its range, a one-line error."""
    if not (math.isfinite(value) and limits(name)[0] <= value <= limits(name)[1]):
        raise MetadataError(f"{where}: {name} {value:g} is out of range (allowed: {allowed_values(name)})")
    return float(value)


def is_missing(value) -> bool:
    """Whether a table cell holds no value (None, NaN, NaT, NA or blank text)."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def number_cell(value, name: str, where: str) -> float | None:
    """The number in a cell of column ``name`` (None when empty), within the column's range (``limits``). A
    boolean, text that is no number, or anything else is a one-line error naming the value and what is allowed."""
    if is_missing(value):
        return None
    number = None
    if isinstance(value, int | float | str | np.integer | np.floating) and not isinstance(value, bool | np.bool_):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            pass
    if number is None:
        raise MetadataError(f"{where}: {name} {shown(value)} is not a number (allowed: {allowed_values(name)})")
    return check_range(name, number, where)


def text_cell(value, name: str, where: str) -> str | None:
    """The text in a cell of column ``name`` (None when empty): text or a number written as text; a boolean or a
    list is a one-line error."""
    if is_missing(value):
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, str | int | float | np.integer | np.floating):
        raise MetadataError(f"{where}: {name} {shown(value)} is not text")
    return str(value).strip()


def parse_date(value, where: str) -> dt.date:
    """A date from YYYY-MM-DD text, a datetime or a pandas Timestamp; a bad value is a one-line error."""
    if isinstance(value, pd.Timestamp | dt.datetime) and not pd.isna(value):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise MetadataError(f"{where}: date {shown(value)} is not a date (allowed: {allowed_values('date')})") from None


# --- radiation and distance, for the normals ---------------------------------------------------------------


def extraterrestrial_radiation(lat: float, day_of_year: int) -> float:
    """Daily extraterrestrial radiation Ra in MJ/m²/day (FAO-56, eq. 21-25)."""
    phi = math.radians(lat)
    dr = 1 + 0.033 * math.cos(2 * math.pi * day_of_year / 365)
    decl = 0.409 * math.sin(2 * math.pi * day_of_year / 365 - 1.39)
    ws = math.acos(max(-1.0, min(1.0, -math.tan(phi) * math.tan(decl))))
    gsc = 0.0820
    return (
        24
        * 60
        / math.pi
        * gsc
        * dr
        * (ws * math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.sin(ws))
    )


def hargreaves_solar(lat: float, month: int, tmax_c: float, tmin_c: float, krs: float = 0.16) -> float:
    """Monthly mean daily solar radiation in kWh/m²/day from the temperature range (FAO-56 eq. 50, interior
    locations kRs = 0.16), with Ra at mid-month (day of year int(30.4 * month - 15))."""
    ra = extraterrestrial_radiation(lat, int(30.4 * month - 15))
    return krs * math.sqrt(max(tmax_c - tmin_c, 0.0)) * ra / 3.6


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(a))
