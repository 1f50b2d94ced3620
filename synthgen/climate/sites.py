"""Site metadata for the climate generator: sites tables, climate cubes, climate normals, range and unit checks.

A **sites table** (CSV or parquet) has one row per place and date. Columns:

| column | unit | required |
|---|---|---|
| ``lat``, ``lon`` | decimal degrees WGS84 (-90..90, -180..180) | yes |
| ``date`` | YYYY-MM-DD | yes |
| ``site_id`` | text (default: row number) | no |
| ``place`` | text | no |
| ``cloud_cover`` | % (0..100) | no |
| ``gsd`` | metres per pixel, 0.001..1000 | no |
| ``temperature`` | °C, monthly mean | no* |
| ``precipitation`` | mm/month, monthly total | no* |
| ``solar_radiation`` | kWh/m²/day, monthly mean of daily irradiation | no* |
| ``lc_<class>`` (e.g. ``lc_tree``, ``lc_developed_space``) | share 0..1 of the oem8 class | no |
| ``label_key`` | key of a tile in a label manifest (its class histogram gives the shares) | no |
| ``control_key`` | key of the earlier image in a control manifest (time series) | with ``--control`` |

Every cell is checked for its type and range in one place (``row_cells``): a number column takes numbers (never a
boolean), a text column text, ``date`` a date; a bad cell is one line naming the file, the site and row, the
column, the value and what is allowed. Other columns are ignored.

\\* Climate values come from the table, else from a **climate cube** (netCDF or zarr through xarray: variables
by lat/lon/time, looked up per site by nearest or linear interpolation over the site's month), else from a
**normals table** (``synthgen/climate/normals/*.csv``: a station's published monthly normals, used for sites within
``max_km`` of the station). A value still missing is an error when the prompt template needs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from synthgen.climate.lookup import ClimateCube, ClimateNormals
from synthgen.climate.variables import (
    CLIMATE_VARIABLES,
    SHARE_PREFIX,
    allowed_values,
    check_range,
    is_missing,
    number_cell,
    parse_date,
    text_cell,
)
from synthgen.errors import ManifestError, MetadataError, allowed, shown
from synthgen.io.atomic import atomic_path
from synthgen.schema import load_scheme

NORMALS_DIR = Path(__file__).parent / "normals"
SITE_COLUMNS = ("site_id", "lat", "lon", "date", "place", "cloud_cover", "gsd", "label_key", "control_key")
TEXT_COLUMNS = ("site_id", "place", "label_key", "control_key")
NUMBER_COLUMNS = ("lat", "lon", "cloud_cover", "gsd", *CLIMATE_VARIABLES)
LC_PREFIX = SHARE_PREFIX


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MetadataError(f"{path}: sites table not found")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix in (".csv", ".txt"):
            df = pd.read_csv(path, comment="#", dtype={"site_id": str, "date": str, "place": str})
        else:
            raise MetadataError(f"{path}: a sites table is .csv or .parquet (got '{path.suffix}')")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        raise MetadataError(f"{path}: not a readable sites table ({str(exc).splitlines()[0][:160]})") from None
    if df.empty:
        raise MetadataError(f"{path}: the sites table has no rows")
    return df


def _lc_columns(df: pd.DataFrame, path: Path, scheme_name: str) -> dict[str, str]:
    scheme = load_scheme(scheme_name)
    names = {c.name.replace(" ", "_"): c.name for c in scheme.valid_classes}
    out = {}
    for col in df.columns:
        if col.startswith(LC_PREFIX):
            key = col[len(LC_PREFIX) :]
            if key not in names:
                raise MetadataError(
                    f"{path}: column '{col}' names no {scheme.name} class (allowed: "
                    f"{allowed(LC_PREFIX + n for n in names)})"
                )
            out[col] = names[key]
    return out


def _label_fractions(manifest: Path, scheme_name: str) -> dict[str, dict[str, float]]:
    from synthgen.io.manifest import read_manifest

    df = read_manifest(manifest)
    scheme = load_scheme(scheme_name)
    names = scheme.names
    out = {}
    for key, hist, tile_scheme in zip(df["key"], df["class_hist"], df["scheme"], strict=True):
        if tile_scheme != scheme.name or hist is None or len(hist) == 0:
            continue
        counts = {names[c]: int(n) for c, n in enumerate(hist) if c in names and c != scheme.nodata and n > 0}
        total = sum(counts.values())
        if total:
            out[key] = {k: v / total for k, v in counts.items()}
    if not out:
        raise ManifestError(f"{manifest}: no tile with {scheme.name} labels to take land-cover shares from")
    return out


def row_cells(row: dict, where: str, lc_cols: dict[str, str]) -> dict:
    """Every filled cell of a sites-table row, typed and range-checked: the one check of a table's values. Text
    columns (``TEXT_COLUMNS``) give stripped text, ``date`` a date, the rest numbers in their range (``limits``),
    ``lc_*`` shares 0..1; a bad cell is a one-line MetadataError naming ``where`` (file, site, row), the column, the
    value and what is allowed. Empty cells are left out."""
    cells: dict = {}
    for name, value in row.items():
        if name == "date":
            cell = None if is_missing(value) else parse_date(value, where)
        elif name in TEXT_COLUMNS:
            cell = text_cell(value, name, where)
        elif name in NUMBER_COLUMNS or name in lc_cols:
            cell = number_cell(value, name, where)
        else:
            continue
        if cell is not None:
            cells[name] = cell
    return cells


@dataclass
class SiteSources:
    """Where missing values of a sites table come from."""

    label_manifest: Path | None = None
    cube: ClimateCube | None = None
    normals: ClimateNormals | None = None
    normals_max_km: float = 200.0
    scheme: str = "oem8"


def read_sites(
    path: str | Path, sources: SiteSources | None = None, required: set[str] | frozenset = frozenset()
) -> list[dict]:
    """Read and check a sites table; fill climate values from the cube / normals; return one dict per site.

    ``required``: climate variables every site must end up with (those the climate prompt uses); a site missing
    one is an error naming the site and the ways to give it.
    """
    path = Path(path)
    sources = sources or SiteSources()
    df = _read_table(path)
    missing = [c for c in ("lat", "lon", "date") if c not in df.columns]
    if missing:
        known = list(SITE_COLUMNS) + list(CLIMATE_VARIABLES) + [LC_PREFIX + "<class>"]
        raise MetadataError(f"{path}: missing column(s) {allowed(missing)} (columns: {allowed(known)})")
    lc_cols = _lc_columns(df, path, sources.scheme)
    if "label_key" in df.columns and sources.label_manifest is None:
        raise MetadataError(f"{path}: has a 'label_key' column but no label manifest was given (--labels)")
    fractions = _label_fractions(sources.label_manifest, sources.scheme) if sources.label_manifest else {}
    sites = []
    seen = set()
    for i, row in enumerate(df.to_dict("records")):
        site_id = text_cell(row.get("site_id"), "site_id", f"{path}: row {i + 1}") or f"{i:05d}"
        where = f"{path}: site {shown(site_id, 40)} (row {i + 1})"
        if site_id in seen:
            raise MetadataError(f"{where}: site_id is duplicated")
        seen.add(site_id)
        site = {"site_id": site_id, **row_cells(row, where, lc_cols)}
        for name in ("lat", "lon", "date"):
            if name not in site:
                raise MetadataError(f"{where}: {name} is empty (allowed: {allowed_values(name)})")
        shares = {lc_cols[col]: site.pop(col) for col in lc_cols if col in site}
        if shares:
            if sum(shares.values()) > 1.01:
                raise MetadataError(f"{where}: land-cover shares sum to {sum(shares.values()):.3f} (allowed: <= 1)")
            site["landcover_fractions"] = shares
        if "label_key" in site:
            if site["label_key"] not in fractions:
                raise MetadataError(
                    f"{where}: label_key {shown(site['label_key'])} is not a labelled tile of {sources.label_manifest}"
                )
            site["landcover_fractions"] = fractions[site["label_key"]]
        climate = {v: site[v] for v in CLIMATE_VARIABLES if v in site}
        if set(CLIMATE_VARIABLES) - set(climate) and sources.cube is not None:
            found = sources.cube.lookup(site["lat"], site["lon"], site["date"], where)
            climate = {**found, **climate}
        if set(CLIMATE_VARIABLES) - set(climate) and sources.normals is not None:
            found = sources.normals.lookup(site["lat"], site["lon"], site["date"], sources.normals_max_km)
            climate = {**found, **climate}
        for var, value in climate.items():
            site[var] = check_range(var, value, where)
        lacking = sorted(set(required) - set(climate))
        if lacking:
            raise MetadataError(
                f"{where}: missing climate variable(s) {allowed(lacking)} (give columns "
                f"{allowed(CLIMATE_VARIABLES)} in {CLIMATE_VARIABLES['temperature'].unit}, "
                f"{CLIMATE_VARIABLES['precipitation'].unit}, {CLIMATE_VARIABLES['solar_radiation'].unit}, "
                "or --climate CUBE, or --normals NAME)"
            )
        sites.append(site)
    return sites


# --- sites from an ingested manifest ---------------------------------------------------------------------------


def tile_center_lonlat(crs: str, transform: list[float], width: int, height: int) -> tuple[float, float]:
    """WGS84 (lon, lat) of a tile's centre."""
    from rasterio.warp import transform as warp

    a, b, c, d, e, f = transform[:6]
    x = c + a * width / 2 + b * height / 2
    y = f + d * width / 2 + e * height / 2
    lons, lats = warp(crs, "EPSG:4326", [x], [y])
    return float(lons[0]), float(lats[0])


def sites_from_manifest(
    manifest: str | Path,
    normals: ClimateNormals | None = None,
    place: str | None = None,
    max_km: float = 200.0,
    df: pd.DataFrame | None = None,
) -> list[dict]:
    """One site per tile of an ingested manifest: place from a real georeference, date from ``meta``, land-cover
    shares from the class histogram, gsd from the transform, climate from ``normals`` when near enough.
    Each site also carries ``key``, ``split``, ``window``/``area`` (from meta) and the tile's shard row index."""
    from synthgen.io.manifest import read_manifest

    df = read_manifest(manifest) if df is None else df
    names = {}
    sites = []
    for row in df.itertuples(index=False):
        meta = json.loads(row.meta) if row.meta else {}
        site: dict = {"site_id": row.key, "key": row.key, "split": row.split, "tile_px": int(row.width_px)}
        if not row.synthetic_georef and row.crs:
            lon, lat = tile_center_lonlat(row.crs, list(row.transform), row.width_px, row.height_px)
            site["lat"], site["lon"] = lat, lon
        site["gsd"] = float(abs(row.transform[0]))
        if meta.get("date"):
            site["date"] = parse_date(meta["date"], f"{manifest}: {row.key}")
        for name in ("window", "area"):
            if name in meta:
                site[name] = meta[name]
        hist = row.class_hist
        if hist is not None and len(hist) and sum(hist[1:]) > 0:
            if row.scheme not in names:
                scheme = load_scheme(row.scheme)
                names[row.scheme] = (scheme.names, scheme.nodata)
            cls_names, nodata = names[row.scheme]
            total = sum(int(n) for c, n in enumerate(hist) if c != nodata)
            site["landcover_fractions"] = {
                cls_names[c]: int(n) / total for c, n in enumerate(hist) if c != nodata and c in cls_names and n > 0
            }
        if place:
            site["place"] = place
        if normals is not None and "lat" in site and "date" in site:
            site.update(normals.lookup(site["lat"], site["lon"], site["date"], max_km))
        sites.append(site)
    return sites


def write_sites(sites: list[dict], path: str | Path, rounding: int = 4, header: list[str] | None = None) -> Path:
    """Write sites as a CSV sites table (columns of ``SITE_COLUMNS``, climate variables and ``lc_*``), after
    ``# `` comment lines ``header`` (where the values come from)."""
    rows = []
    for site in sites:
        row = {k: site[k] for k in SITE_COLUMNS if k in site}
        if "date" in row:
            row["date"] = row["date"].isoformat()
        for var in CLIMATE_VARIABLES:
            if var in site:
                row[var] = round(site[var], 2)
        for cls, share in (site.get("landcover_fractions") or {}).items():
            row[LC_PREFIX + cls.replace(" ", "_")] = round(share, 3)
        for name in ("lat", "lon"):
            if name in row:
                row[name] = round(row[name], rounding)
        rows.append(row)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.writelines(f"# {line}\n" for line in header or [])
        pd.DataFrame(rows).to_csv(f, index=False)
    return Path(path)


def sites_table_from_manifest(
    manifest: str | Path,
    out: str | Path,
    date: str,
    control_date: str | None = None,
    normals: ClimateNormals | None = None,
    place: str | None = None,
    size: int = 64,
) -> Path:
    """Write a sites table: one site per tile of ``date`` in a dated, georeferenced manifest (centre lat/lon,
    climate from ``normals``, ``gsd`` = the tile's footprint over ``size`` px), with ``control_key`` = the tile of
    the same place (same window) at ``control_date``."""
    if size < 1:
        raise MetadataError(f"--size {size} must be >= 1 (the output size in px the gsd column is given for)")
    sites = sites_from_manifest(manifest, normals, place)
    want = parse_date(date, f"--date {date}")
    dates = sorted({s["date"].isoformat() for s in sites if "date" in s})
    chosen = [s for s in sites if s.get("date") == want and "lat" in s]
    if not chosen:
        raise MetadataError(f"{manifest}: no georeferenced tile dated {want} (dates: {allowed(dates)})")
    controls = {}
    if control_date is not None:
        earlier = parse_date(control_date, f"--control-date {control_date}")
        controls = {json.dumps(s.get("window")): s["key"] for s in sites if s.get("date") == earlier}
        if not controls:
            raise MetadataError(f"{manifest}: no tile dated {earlier} for control (dates: {allowed(dates)})")
    rows = []
    for s in chosen:
        site = {k: v for k, v in s.items() if k not in ("key", "split", "window", "area", "tile_px")}
        site["site_id"] = "_".join(s["key"].rsplit("_", 2)[-2:]) if s.get("window") else s["key"]
        site["gsd"] = check_range(
            "gsd", s["gsd"] * s["tile_px"] / size, f"{manifest}: tile {s['key']} at --size {size}"
        )
        if control_date is not None:
            key = controls.get(json.dumps(s.get("window")))
            if key is None:
                raise MetadataError(f"{manifest}: tile {s['key']} has no tile of the same window at {control_date}")
            site["control_key"] = key
        rows.append(site)
    header = [
        f"Sites of {Path(manifest).name}: one per tile dated {want} (centre lat/lon in WGS84)"
        + (f", control_key = the same window at {control_date}" if control_date else "")
        + f"; gsd in m per pixel of a {size} px output over the tile's footprint.",
        "Climate: "
        + (
            f"monthly normals from {Path(normals.source).name} (station {normals.station_lat}, "
            f"{normals.station_lon}), month of the date; not measurements of that year."
            if normals
            else "none (give the columns, --climate or --normals)."
        ),  # fmt: skip
        f"Written by: synthgen prompts sites --manifest {manifest} --date {date}"
        + (f" --control-date {control_date}" if control_date else "")
        + (f" --normals {normals.name}" if normals else "")
        + (f' --place "{place}"' if place else "")
        + f" --size {size} --out {out}",
    ]
    return write_sites(rows, out, header=header)
