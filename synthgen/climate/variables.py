"""The climate variables the prompts state (unit, plausible range, monthly aggregation), the range checks of
every site value, dates, and the radiation and distance formulas the normals use."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import pandas as pd

from synthgen.errors import MetadataError


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
RANGES = {"lat": (-90.0, 90.0), "lon": (-180.0, 180.0), "cloud_cover": (0.0, 100.0), "gsd": (1e-3, 1e4)}


def check_range(name: str, value: float, where: str) -> float:
    """``value`` of site field or climate variable ``name`` as a float; out of its range, a one-line error."""
    low, high = RANGES[name] if name in RANGES else (CLIMATE_VARIABLES[name].low, CLIMATE_VARIABLES[name].high)
    unit = {"lat": "°", "lon": "°", "cloud_cover": "%", "gsd": "m"}.get(name) or CLIMATE_VARIABLES[name].unit
    if not (math.isfinite(value) and low <= value <= high):
        raise MetadataError(f"{where}: {name} {value:g} is out of range (allowed: {low:g}..{high:g} {unit})")
    return float(value)


def is_missing(value) -> bool:
    """Whether a table cell holds no value (None, NaN or blank text)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def parse_date(value, where: str) -> dt.date:
    """A date from YYYY-MM-DD text, a datetime or a pandas Timestamp; a bad value is a one-line error."""
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise MetadataError(f"{where}: date {value!r} is not a date (allowed: YYYY-MM-DD)") from None


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
