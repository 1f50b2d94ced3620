"""Where climate values come from when a sites table lacks them: a climate cube (netCDF or zarr through xarray,
looked up per site by nearest or linear interpolation over its month) or a station's monthly normals
(``synthgen/climate/normals/*.csv``, used within ``max_km`` of the station)."""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from synthgen.climate.variables import hargreaves_solar, haversine_km, number_cell
from synthgen.errors import ConfigError, MetadataError, allowed, shown

NORMALS_DIR = Path(__file__).parent / "normals"


def _check_numbers(df: pd.DataFrame, path: Path) -> None:
    """Refuse a cell of a normals table that is not a number (a boolean, text) in one line naming row and column."""
    for col in df.columns:
        numbers = pd.to_numeric(df[col], errors="coerce")
        bad = (numbers.isna() & df[col].notna()) | df[col].map(lambda v: isinstance(v, bool | np.bool_))
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise MetadataError(f"{path}: row {row + 1}, column '{col}': {shown(df[col].iloc[row])} is not a number")


@dataclass
class ClimateNormals:
    """A station's monthly normals (from a committed, sourced table) as prompt values, used near the station."""

    name: str
    station_lat: float
    station_lon: float
    monthly: dict[int, dict[str, float]]
    source: str

    @classmethod
    def load(cls, name_or_path: str | Path) -> ClimateNormals:
        """Read ``synthgen/climate/normals/<name>.csv`` (or a path): comment lines with ``station_lat`` and
        ``station_lon``, then columns ``month, tmax_f, tmin_f, precip_in`` (or ``tmax_c, tmin_c, precip_mm``)."""
        path = Path(name_or_path)
        if path.suffix != ".csv":
            path = NORMALS_DIR / f"{name_or_path}.csv"
            if not path.is_file():
                shipped = sorted(p.stem for p in NORMALS_DIR.glob("*.csv"))
                raise ConfigError(f"unknown normals table '{name_or_path}' (shipped: {allowed(shipped)}; or a .csv)")
        if not path.is_file():
            raise MetadataError(f"{path}: normals table not found")
        header = {}
        for line in path.read_text().splitlines():
            if m := re.match(r"#\s*(station_lat|station_lon):\s*(\S+)", line):
                header[m.group(1)] = number_cell(m.group(2), m.group(1)[len("station_") :], f"{path}: {m.group(1)}")
        if set(header) != {"station_lat", "station_lon"}:
            raise MetadataError(f"{path}: needs '# station_lat: ..' and '# station_lon: ..' comment lines")
        try:
            df = pd.read_csv(path, comment="#")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
            raise MetadataError(f"{path}: not a readable normals table ({str(exc).splitlines()[0][:160]})") from None
        _check_numbers(df, path)
        if "tmax_f" in df:
            df["tmax_c"], df["tmin_c"] = (df["tmax_f"] - 32) * 5 / 9, (df["tmin_f"] - 32) * 5 / 9
            df["precip_mm"] = df["precip_in"] * 25.4
        need = {"month", "tmax_c", "tmin_c", "precip_mm"}
        if not need <= set(df.columns) or sorted(df["month"]) != list(range(1, 13)):
            raise MetadataError(f"{path}: needs 12 rows (months 1..12) with tmax/tmin and precipitation columns")
        monthly = {}
        for row in df.itertuples():
            m = int(row.month)
            monthly[m] = {
                "temperature": (row.tmax_c + row.tmin_c) / 2,
                "precipitation": float(row.precip_mm),
                "solar_radiation": hargreaves_solar(header["station_lat"], m, row.tmax_c, row.tmin_c),
            }
        return cls(path.stem, header["station_lat"], header["station_lon"], monthly, str(path))

    def lookup(self, lat: float, lon: float, date: dt.date, max_km: float) -> dict[str, float]:
        """The normals of the date's month for a site within ``max_km`` of the station, else {}."""
        if haversine_km(lat, lon, self.station_lat, self.station_lon) > max_km:
            return {}
        return dict(self.monthly[date.month])


# --- climate cubes --------------------------------------------------------------------------------------------

ALIASES = {
    "temperature": ("temperature", "tas", "t2m", "tmean", "air_temperature"),
    "precipitation": ("precipitation", "pr", "tp", "prcp", "precip"),
    "solar_radiation": ("solar_radiation", "rsds", "ssrd", "srad", "ghi"),
}
# unit text -> (kind, factor, offset): value_in_prompt_unit = raw * factor + offset; kind says how a month sums up
UNITS = {
    "temperature": {"degc": ("mean", 1.0, 0.0), "°c": ("mean", 1.0, 0.0), "c": ("mean", 1.0, 0.0),
                    "celsius": ("mean", 1.0, 0.0), "k": ("mean", 1.0, -273.15), "kelvin": ("mean", 1.0, -273.15)},
    "precipitation": {"mm/month": ("mean", 1.0, 0.0), "mm month-1": ("mean", 1.0, 0.0), "mm": ("sum", 1.0, 0.0),
                      "mm/day": ("rate_day", 1.0, 0.0), "mm day-1": ("rate_day", 1.0, 0.0),
                      "mm d-1": ("rate_day", 1.0, 0.0), "kg m-2 s-1": ("rate_day", 86400.0, 0.0)},
    "solar_radiation": {"kwh/m2/day": ("mean", 1.0, 0.0), "kwh m-2 day-1": ("mean", 1.0, 0.0),
                        "kwh/m²/day": ("mean", 1.0, 0.0), "w/m2": ("mean", 0.024, 0.0), "w m-2": ("mean", 0.024, 0.0),
                        "mj/m2/day": ("mean", 1 / 3.6, 0.0), "mj m-2 day-1": ("mean", 1 / 3.6, 0.0)},
}  # fmt: skip
LOOKUP_METHODS = ("nearest", "linear")


class ClimateCube:
    """Gridded climate variables (lat/lon/time) opened with xarray, looked up per site and month."""

    def __init__(self, path: str | Path, method: str = "nearest"):
        import xarray as xr

        self.path = Path(path)
        if method not in LOOKUP_METHODS:
            raise ConfigError(f"climate lookup '{method}' is unknown (allowed: {allowed(LOOKUP_METHODS)})")
        self.method = method
        if not self.path.exists():
            raise MetadataError(f"{self.path}: climate cube not found")
        try:
            if self.path.suffix == ".zarr" or self.path.is_dir():
                ds = xr.open_zarr(self.path)
            else:
                ds = xr.open_dataset(self.path)
        except Exception as exc:  # xarray raises many types for a file it cannot read
            raise MetadataError(
                f"{self.path}: not a readable netCDF/zarr climate cube ({str(exc).splitlines()[0][:160]})"
            ) from None
        rename = {}
        for want, names in (("lat", ("lat", "latitude", "y")), ("lon", ("lon", "longitude", "x")), ("time", ("time",))):
            found = [n for n in names if n in ds.coords or n in ds.dims]
            if not found:
                raise MetadataError(f"{self.path}: no '{want}' coordinate (looked for {allowed(names)})")
            if found[0] != want:
                rename[found[0]] = want
        self.ds = ds.rename(rename)
        self.variables: dict[str, tuple[str, tuple[str, float, float]]] = {}
        for var, names in ALIASES.items():
            name = next((n for n in names if n in self.ds.data_vars), None)
            if name is None:
                continue
            unit = str(self.ds[name].attrs.get("units", "")).strip()
            table = UNITS[var]
            if unit.lower() not in table:
                raise MetadataError(
                    f"{self.path}: variable '{name}' has units {shown(unit)}, not one synthgen converts for {var} "
                    f"(allowed: {allowed(table)})"
                )
            self.variables[var] = (name, table[unit.lower()])
        if not self.variables:
            all_names = [n for names in ALIASES.values() for n in names]
            raise MetadataError(f"{self.path}: holds none of the climate variables (looked for {allowed(all_names)})")
        lat, lon = self.ds["lat"].values, self.ds["lon"].values
        self.lat_range = (float(lat.min()), float(lat.max()))
        self.lon_range = (float(lon.min()), float(lon.max()))
        self.step = max(float(np.abs(np.diff(lat)).max()) if lat.size > 1 else 0.0,
                        float(np.abs(np.diff(lon)).max()) if lon.size > 1 else 0.0)  # fmt: skip

    def lookup(self, lat: float, lon: float, date: dt.date, where: str) -> dict[str, float]:
        """Every variable of the cube for the site's place and the month of its date, in prompt units."""
        tol = self.step or 0.5
        if not (self.lat_range[0] - tol <= lat <= self.lat_range[1] + tol) or not (
            self.lon_range[0] - tol <= lon <= self.lon_range[1] + tol
        ):
            raise MetadataError(
                f"{where}: site at {lat:g}, {lon:g} is outside the climate cube {self.path.name} "
                f"(lat {self.lat_range[0]:g}..{self.lat_range[1]:g}, lon {self.lon_range[0]:g}..{self.lon_range[1]:g})"
            )
        start = np.datetime64(date.replace(day=1))
        days = calendar.monthrange(date.year, date.month)[1]
        month = self.ds.sel(time=slice(start, start + np.timedelta64(days, "D") - np.timedelta64(1, "s")))
        if month.sizes.get("time", 0) == 0:
            times = self.ds["time"].values
            raise MetadataError(
                f"{where}: the climate cube {self.path.name} has no time step in {date:%Y-%m} "
                f"(it covers {str(times.min())[:10]}..{str(times.max())[:10]})"
            )
        if self.method == "nearest":
            point = month.sel(lat=lat, lon=lon, method="nearest")
        else:
            point = month.interp(lat=lat, lon=lon)
        out = {}
        for var, (name, (kind, factor, offset)) in self.variables.items():
            series = point[name].values.astype(np.float64) * factor + offset
            if not np.isfinite(series).all():
                raise MetadataError(
                    f"{where}: the climate cube has no valid {name} at {lat:g}, {lon:g} in {date:%Y-%m}"
                )
            if kind == "sum":
                out[var] = float(series.sum())
            elif kind == "rate_day":
                out[var] = float(series.mean() * days)
            else:
                out[var] = float(series.mean())
        return out
