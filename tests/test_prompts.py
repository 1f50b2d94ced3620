"""Climate prompts and site metadata (no models): templates, whitelisted fields, units, rounding, dropout,
sites tables, climate normals and cubes, and their one-line errors through the CLI."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.climate.lookup import ClimateCube, ClimateNormals
from synthgen.climate.prompts import (
    PromptError,
    PromptSpec,
    SitePrompts,
    build_prompts,
    check_prompts,
    load_prompt_spec,
    sd3_prompt_kwargs,
)
from synthgen.climate.sites import SiteSources, read_sites
from synthgen.climate.variables import extraterrestrial_radiation
from synthgen.errors import MetadataError

runner = CliRunner()
NAIP_SITE = {
    "site_id": "a",
    "lat": 47.0308,
    "lon": -99.1771,
    "date": dt.date(2020, 8, 31),
    "place": "central North Dakota, USA",
    "temperature": 20.556,
    "precipitation": 55.88,
    "solar_radiation": 6.127,
    "landcover_fractions": {"agriculture land": 0.62, "rangeland": 0.3, "water": 0.08},
}


def _spec(tmp_path, text: str) -> PromptSpec:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return load_prompt_spec(str(path))


def test_default_prompts_state_units_and_round():
    spec = load_prompt_spec()
    p = build_prompts(NAIP_SITE, spec)
    assert p.spatial == (
        "satellite image, 60 % agriculture land, 30 % rangeland, 10 % water, near central North Dakota, USA, "
        "at 47.0° -99.2°, August 2020, summer"
    )
    assert p.climate == "monthly climate, temperature 21 °C, precipitation 56 mm/month, solar radiation 6.1 kWh/m²/day"
    assert p.joined(spec.join) == p.spatial + "; " + p.climate


def test_missing_fields_drop_their_part_only():
    spec = load_prompt_spec()
    site = {"lat": -33.9, "lon": 18.4, "date": "2021-01-15"}
    p = build_prompts(site, spec)
    assert p.spatial == "satellite image, at -33.9° 18.4°, January 2021, summer"  # southern hemisphere
    assert p.climate == ""
    assert build_prompts({"lat": 0.04, "lon": -0.04}, spec).spatial == "satellite image, at 0.0° 0.0°"  # no "-0.0"


@pytest.mark.parametrize(
    "part, message",
    [
        ("at {altitude} m", "unknown template field 'altitude'"),
        ("at {lat.real}", "must be a plain {name}"),
        ("at {lat:.3f}", "must be a plain {name}"),
        ("at {lat[0]}", "must be a plain {name}"),
        ("at {lat!r}", "must be a plain {name}"),
        ("at {__class__}", "unknown template field '__class__'"),
    ],
)
def test_template_fields_are_whitelisted_never_evaluated(tmp_path, part, message):
    with pytest.raises(PromptError, match=message.replace("{", r"\{").replace("}", r"\}").replace(".", r"\.")):
        _spec(tmp_path, f"spatial: {{parts: ['{part}']}}\nclimate: {{parts: []}}\n")


def test_dropout_is_seeded_and_drops_parts():
    spec = load_prompt_spec()
    full = build_prompts(NAIP_SITE, spec)
    a = [build_prompts(NAIP_SITE, spec, np.random.default_rng([0, i])) for i in range(40)]
    b = [build_prompts(NAIP_SITE, spec, np.random.default_rng([0, i])) for i in range(40)]
    assert a == b
    assert any(p != full for p in a) and any(p.spatial == "" for p in a)
    assert all(len(p.spatial) <= len(full.spatial) for p in a)


def test_empty_prompt_is_refused(tmp_path):
    spec = _spec(tmp_path, "spatial: {lead: image, parts: ['{landcover}']}\nclimate: {parts: ['{temperature} °C']}\n")
    with pytest.raises(PromptError, match="site 'x': the spatial prompt is empty.*landcover"):
        check_prompts(build_prompts({"temperature": 3.0}, spec), spec, "site 'x'")
    check_prompts(SitePrompts("image, 100 % tree", "3 °C"), spec, "site 'x'")


def test_prompts_go_to_clip_and_t5_or_are_joined():
    spec = load_prompt_spec()
    p = [SitePrompts("s", "c")]
    assert sd3_prompt_kwargs(p, spec, has_t5=True) == {"prompt": ["s"], "prompt_2": ["s"], "prompt_3": ["c"]}
    assert sd3_prompt_kwargs(p, spec, has_t5=False)["prompt"] == ["s; c"]


def test_normals_converted_and_solar_from_hargreaves():
    normals = ClimateNormals.load("bismarck_nd")
    july = normals.monthly[7]
    assert july["temperature"] == pytest.approx(((85 + 56) / 2 - 32) * 5 / 9)
    assert july["precipitation"] == pytest.approx(2.6 * 25.4)
    assert 5.0 < july["solar_radiation"] < 8.0 and normals.monthly[12]["solar_radiation"] < 2.0
    # FAO-56 example 8: 20° S on 3 September (day 246) -> Ra = 32.2 MJ/m2/day
    assert extraterrestrial_radiation(-20.0, 246) == pytest.approx(32.2, abs=0.1)
    assert normals.lookup(47.03, -99.18, dt.date(2020, 8, 31), max_km=200) == normals.monthly[8]
    assert normals.lookup(0.0, 0.0, dt.date(2020, 8, 31), max_km=200) == {}


def _sites(tmp_path, rows: list[dict]):
    path = tmp_path / "sites.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_read_sites_checks_and_fills(tmp_path):
    path = _sites(tmp_path, [{"site_id": "a", "lat": 47.03, "lon": -99.18, "date": "2020-08-31", "lc_tree": 0.5,
                              "lc_water": 0.5, "cloud_cover": 5}])  # fmt: skip
    sites = read_sites(path, SiteSources(normals=ClimateNormals.load("bismarck_nd")), {"temperature"})
    assert sites[0]["landcover_fractions"] == {"tree": 0.5, "water": 0.5}
    assert sites[0]["temperature"] == pytest.approx(20.56, abs=0.01) and sites[0]["cloud_cover"] == 5.0


@pytest.mark.parametrize(
    "row, message",
    [
        ({"lat": 95.0}, "lat 95 is out of range"),
        ({"lon": -200.0}, "lon -200 is out of range"),
        ({"date": "31/08/2020"}, "is not a date"),
        ({"temperature": 293.0}, "temperature 293 is out of range"),
        ({"cloud_cover": 140}, "cloud_cover 140 is out of range"),
        ({"lc_forest": 0.2}, "column 'lc_forest' names no oem8 class"),
        ({"precipitation": None}, "missing climate variable\\(s\\) precipitation"),
        ({"temperature": "hot"}, r"sites.csv: site 's1' \(row 1\): temperature 'hot' is not a number \(allowed: -90"),
        ({"lc_tree": "lots"}, r"lc_tree 'lots' is not a number \(allowed: 0..1"),
        ({"lc_tree": 1.5}, "lc_tree 1.5 is out of range"),
        ({"lat": True}, "lat True is not a number"),
        ({"lat": "nan"}, "lat is empty"),
        ({"lon": "1e999"}, "lon inf is out of range"),
        ({"gsd": 0.0}, "gsd 0 is out of range"),
        ({"date": ""}, "date is empty"),
    ],
)
def test_read_sites_errors_name_site_and_allowed(tmp_path, row, message):
    base = {"site_id": "s1", "lat": 10.0, "lon": 10.0, "date": "2020-01-01", "temperature": 20.0,
            "precipitation": 30.0, "solar_radiation": 5.0}  # fmt: skip
    path = _sites(tmp_path, [{**base, **row}])
    with pytest.raises(MetadataError, match=message):
        read_sites(path, None, {"temperature", "precipitation", "solar_radiation"})


def _cube(tmp_path):
    import xarray as xr

    time = pd.date_range("2020-07-01", "2020-08-31", freq="D")
    lat, lon = np.array([46.5, 47.0, 47.5]), np.array([-99.5, -99.0])
    shape = (len(time), len(lat), len(lon))
    ds = xr.Dataset(
        {
            "tas": (("time", "lat", "lon"), np.full(shape, 293.15) + np.arange(3)[None, :, None]),
            "pr": (("time", "lat", "lon"), np.full(shape, 2.0)),
            "rsds": (("time", "lat", "lon"), np.full(shape, 250.0)),
        },
        coords={"time": time, "lat": lat, "lon": lon},
    )
    ds["tas"].attrs["units"] = "K"
    ds["pr"].attrs["units"] = "mm/day"
    ds["rsds"].attrs["units"] = "W m-2"
    path = tmp_path / "cube.nc"
    ds.to_netcdf(path, engine="scipy")
    return path


def test_climate_cube_lookup_by_month(tmp_path):
    path = _cube(tmp_path)
    near = ClimateCube(path, "nearest").lookup(47.1, -99.1, dt.date(2020, 8, 31), "site")
    assert near["temperature"] == pytest.approx(21.0)  # 294.15 K at 47.0
    assert near["precipitation"] == pytest.approx(62.0)  # 2 mm/day x 31 days
    assert near["solar_radiation"] == pytest.approx(6.0)  # 250 W/m2 x 24 h
    linear = ClimateCube(path, "linear").lookup(47.25, -99.25, dt.date(2020, 7, 10), "site")
    assert linear["temperature"] == pytest.approx(21.5)
    with pytest.raises(MetadataError, match="outside the climate cube"):
        ClimateCube(path).lookup(10.0, -99.0, dt.date(2020, 8, 1), "site")
    with pytest.raises(MetadataError, match="no time step in 2021-08"):
        ClimateCube(path).lookup(47.0, -99.0, dt.date(2021, 8, 1), "site")


def test_prompts_show_cli_and_bad_input(tmp_path):
    good = _sites(tmp_path, [{"site_id": "a", "lat": 47.03, "lon": -99.18, "date": "2020-08-31",
                              "temperature": 20.5, "precipitation": 56, "solar_radiation": 6.1}])  # fmt: skip
    result = runner.invoke(app, ["prompts", "show", "--sites", str(good)])
    assert result.exit_code == 0, result.output
    assert "climate: monthly climate, temperature 20 °C, precipitation 56 mm/month" in result.output
    bad = tmp_path / "bad.csv"
    pd.DataFrame([{"site_id": "b", "lat": 47.0, "lon": -99.0, "date": "2020-08-31"}]).to_csv(bad, index=False)
    result = runner.invoke(app, ["prompts", "show", "--sites", str(bad)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "missing climate variable(s) precipitation" in result.output
    result = runner.invoke(app, ["prompts", "show", "--sites", str(bad), "--normals", "bismarck_nd"])
    assert result.exit_code == 0 and "solar radiation 6.1 kWh/m²/day" in result.output
