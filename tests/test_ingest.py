"""Ingest on seeded fixtures and on the real data: tiling, alignment, split by area, determinism, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import rasterio
import yaml
from affine import Affine

from synthgen.config import build_config, load_config
from synthgen.engine.rebuild import rebuild_manifest
from synthgen.io.manifest import iter_samples, verify_manifest
from synthgen.io.shards import RECORD_SUFFIX
from synthgen.jobs.ingest import IngestConfig, assign_splits, make_plan, run_ingest, window_starts
from tests.conftest import REAL_DATA

REPO = Path(__file__).resolve().parents[1]


def _run(values: dict) -> tuple[dict, pd.DataFrame]:
    config = build_config(IngestConfig, values)
    summary = run_ingest(config)
    return summary, pd.read_parquet(config.manifest_path)


def _manifest_path(config: dict) -> Path:
    return Path(config["manifest"].format(name=config["name"]))


def _config_for(fixtures_dir: Path, tmp_path: Path, name: str, **values) -> dict:
    return {
        "name": name,
        "root": str(fixtures_dir / name),
        "out": str(tmp_path / "out" / "{name}"),
        "manifest": str(tmp_path / "manifests" / "{name}.parquet"),
        **values,
    }


def test_window_starts_cover_the_edge_or_drop_it():
    assert window_starts(100, 32, 32) == [0, 32, 64, 68]
    assert window_starts(100, 32, 32, "drop") == [0, 32, 64]
    assert window_starts(64, 32, 16) == [0, 16, 32]


def test_split_is_by_area_deterministic_and_balanced():
    areas = ["a"] * 50 + ["b"] * 10 + ["c"] * 10 + ["d"] * 10 + ["e"] * 20
    split = assign_splits(areas, 0.2, seed=0)
    assert split == assign_splits(list(reversed(areas)), 0.2, seed=0)
    n_val = sum(1 for a in areas if split[a] == "val")
    assert 0.75 * 20 <= n_val <= 1.25 * 20
    assert set(split.values()) == {"train", "val"}
    assert set(assign_splits(["x", "y"], 0.01, seed=3).values()) == {"train", "val"}
    assert set(assign_splits(["x"] * 5, 0.5, seed=0).values()) == {"train"}


def test_scene_tiles_labels_reprojected_and_split_by_area(scene_config):
    summary, df = _run(scene_config)
    # 96x80 px sources in 32 px tiles: 3 columns x 3 rows (last row shifted to the edge) x 3 sources
    assert summary["tiles"] == len(df) == 27 and summary["shards"] == 7
    assert df.groupby("source")["split"].nunique().max() == 1
    assert set(df["split"]) == {"train", "val"}
    samples = {s["key"]: s for s in iter_samples(_manifest_path(scene_config))}
    a = samples["scene_area_a-images-t0_y00000_x00000"]
    assert a["rgb"].shape == (32, 32, 3) and a["label"].shape == (32, 32)
    assert set(np.unique(a["label"])) <= set(range(9))
    with rasterio.open(Path(scene_config["root"]) / "area_a/labels/t0.tif") as ds:
        native = ds.read(1, window=((0, 32), (0, 32)))
    isprs_to_oem8 = np.array([0, 3, 8, 2, 5, 3, 1], np.uint8)
    np.testing.assert_array_equal(a["label"], isprs_to_oem8[native])
    # area_b's label grid starts one pixel east and south of its image: reprojected onto the image grid, the
    # first row and column fall outside the label raster (nodata) and the rest moves by one pixel
    b = samples["scene_area_b-images-t2_y00000_x00000"]
    with rasterio.open(Path(scene_config["root"]) / "area_b/labels/t2.tif") as ds:
        native_b = ds.read(1, window=((0, 31), (0, 31)))
    assert (b["label"][0, :] == 0).all() and (b["label"][:, 0] == 0).all()
    np.testing.assert_array_equal(b["label"][1:, 1:], isprs_to_oem8[native_b])
    assert a["crs"] == "EPSG:32633" and a["transform"] == Affine(0.5, 0, 500000.0, 0, -0.5, 5500000.0)


def test_time_series_aligned_to_first_grid_with_dates(fixtures_dir, tmp_path):
    values = _config_for(
        fixtures_dir,
        tmp_path,
        "series",
        sources="*.tif",
        image="{path}",
        align="first",
        date_regex=r"_(\d{8})\.tif$",
        tile_size=32,
        area="{block}",
        area_block=32,
    )
    summary, df = _run(values)
    assert summary["sources"] == 3 and summary["tiles"] == 3 * 2 * 3
    # every date is cut on the first date's grid: 6 tile positions shared by the 3 dates
    assert len({tuple(t) for t in df["transform"]}) == 6
    dates = sorted({json.loads(m)["date"] for m in df["meta"]})
    assert dates == ["2010-06-01", "2012-07-01", "2014-08-01"]
    same_place = df.groupby(df["transform"].map(tuple))["split"].nunique()
    assert same_place.max() == 1


def test_lidar_ndsm_and_footprints(fixtures_dir, tmp_path):
    values = _config_for(
        fixtures_dir,
        tmp_path,
        "lidar",
        sources="dsm.tif",
        dsm="{path}",
        dtm="dtm.tif",
        footprints="buildings.geojson",
        tile_size=16,
        area="{block}",
        area_block=16,
    )
    _, df = _run(values)
    samples = list(iter_samples(_manifest_path(values)))
    first = next(s for s in samples if s["key"].endswith("_y00000_x00000"))
    assert np.isnan(first["height"][0, 0])  # DSM nodata -9999 becomes NaN
    assert first["rgb"] is None
    roof = first["label"] == 8
    assert roof.sum() > 50 and np.nanmean(first["height"][roof]) > 10 > np.nanmean(first["height"][~roof])
    assert df["height_max"].max() > 11 and (df["height_min"].dropna() >= 0).all()
    assert df["crs"].iloc[0] == "EPSG:26918" and not df["synthetic_georef"].any()


def test_plain_pngs_get_documented_synthetic_georef(fixtures_dir, tmp_path):
    values = _config_for(
        fixtures_dir,
        tmp_path,
        "plain",
        sources="images/*.png",
        image="{path}",
        label="labels/{stem}.png",
        scheme="dubai",
        tile_size=32,
        gsd=0.3,
    )
    _, df = _run(values)
    assert df["synthetic_georef"].all() and set(df["crs"]) == {"EPSG:3857"}
    t0 = df[df["key"] == "plain_images-p0_y00000_x00000"]["transform"].iloc[0]
    t1 = df[df["key"] == "plain_images-p1_y00000_x00000"]["transform"].iloc[0]
    assert t0[0] == 0.3 and t1[2] - t0[2] == 1_000_000.0


def test_two_runs_and_two_workers_give_identical_manifests(scene_config, tmp_path):
    _, first = _run(scene_config)
    again = {**scene_config, "out": str(tmp_path / "again/{name}"), "manifest": str(tmp_path / "again/m.parquet")}
    _, second = _run({**again, "workers": 2})
    cols = ["key", "split", "source", "class_hist"]
    assert first[cols].astype(str).equals(second[cols].astype(str))
    assert [list(h) for h in first["sha256"]] == [list(h) for h in second["sha256"]]


def test_rerun_skips_finished_shards(scene_config):
    _run(scene_config)
    summary, _ = _run(scene_config)
    assert summary["shards_written"] == 0 and summary["shards_skipped"] == 7


def _big_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "big"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    transform = Affine(1.0, 0, 300000, 0, -1.0, 4000000)
    labels = np.kron(rng.integers(0, 7, (32, 32)), np.ones((16, 16), int)).astype(np.uint8)
    image = rng.integers(0, 256, (3, 512, 512), dtype=np.uint8)
    for path, array in [(root / "images/a.tif", image), (root / "labels/a.tif", labels[None])]:
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=512,
            height=512,
            count=array.shape[0],
            dtype="uint8",
            crs="EPSG:32633",
            transform=transform,
        ) as ds:
            ds.write(array)
    return root


BIG = {
    "name": "big",
    "sources": "images/*.tif",
    "image": "{path}",
    "label": "labels/{stem}.tif",
    "scheme": "isprs",
    "tile_size": 32,
    "tiles_per_shard": 1,
    "area": "{block}",
    "area_block": 128,
}


def _kill_when_done(config: Path, shards: Path, wait_for: int) -> tuple[subprocess.Popen, list]:
    """Run ``synthgen ingest --config <config>`` and SIGKILL it once ``wait_for`` of its shards are done (unless it
    finished first); returns the process (ended) and the processes it had started when it was killed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthgen", "ingest", "--config", str(config)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=config.parent,
    )
    children = []
    while proc.poll() is None and len(list(shards.glob(f"*{RECORD_SUFFIX}"))) < wait_for:
        time.sleep(0.002)
    if proc.poll() is None:
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not shards.with_suffix(".parquet").exists() or proc.returncode == 0
    return proc, children


def _assert_same_as_clean_run(tmp_path: Path, base: dict, resumed: dict) -> None:
    clean = run_ingest(
        build_config(
            IngestConfig, {**base, "out": str(tmp_path / "clean"), "manifest": str(tmp_path / "clean.parquet")}
        )
    )
    assert clean["tiles"] == resumed["tiles"] == 256
    killed_df, clean_df = pd.read_parquet(tmp_path / "killed.parquet"), pd.read_parquet(tmp_path / "clean.parquet")
    assert list(killed_df["key"]) == list(clean_df["key"]) and killed_df["key"].is_unique
    assert [list(h) for h in killed_df["sha256"]] == [list(h) for h in clean_df["sha256"]]
    for name in sorted(p.name for p in (tmp_path / "clean").glob("*.tar"))[::50]:
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
    assert not list((tmp_path / "killed").glob("*.tmp"))
    assert verify_manifest(tmp_path / "killed.parquet")["tiles"] == 256


def _killed_config(tmp_path: Path, base: dict) -> Path:
    path = tmp_path / "killed.yaml"
    path.write_text(
        yaml.safe_dump({**base, "out": str(tmp_path / "killed"), "manifest": str(tmp_path / "killed.parquet")})
    )
    return path


def test_ingest_killed_with_sigkill_then_rerun_equals_clean_run(tmp_path):
    base = {**BIG, "root": str(_big_fixture(tmp_path))}
    killed_cfg = _killed_config(tmp_path, base)
    kills = 0
    for wait_for in (3, 60, 150):
        proc, _ = _kill_when_done(killed_cfg, tmp_path / "killed", wait_for)
        kills += proc.returncode == -signal.SIGKILL
    assert kills >= 2, "ingest finished before it could be killed: the fixture is too small"
    resumed = run_ingest(load_config(IngestConfig, killed_cfg, "ingest"))
    assert resumed["shards_skipped"] >= 150
    _assert_same_as_clean_run(tmp_path, base, resumed)


def test_ingest_with_two_workers_killed_leaves_no_writer_and_resumes(tmp_path):
    """Shards written by the engine's writer processes (``workers: 2``): a SIGKILL of the command ends them too (none
    goes on writing a shard the rerun writes again), and the rerun gives the clean run's manifest."""
    base = {**BIG, "root": str(_big_fixture(tmp_path)), "tiles_per_shard": 4}
    killed_cfg = _killed_config(tmp_path, {**base, "workers": 2})
    proc, children = _kill_when_done(killed_cfg, tmp_path / "killed", 8)
    assert proc.returncode == -signal.SIGKILL, "ingest finished before it could be killed: the fixture is too small"
    assert children, "no writer process was running"
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"writer processes of the killed run left behind: {[p.pid for p in alive]}"
    resumed = run_ingest(load_config(IngestConfig, killed_cfg, "ingest"))
    assert 8 <= resumed["shards_skipped"] < 64
    _assert_same_as_clean_run(tmp_path, base, resumed)


def test_dropped_tiles_count_as_done_and_in_the_summary(scene_config):
    config = build_config(IngestConfig, {**scene_config, "min_labelled_fraction": 0.95})
    done = []
    summary = run_ingest(config, progress=done.append)
    assert sum(done) == make_plan(config).num_tiles == 27  # the bar ends full though tiles were left out
    assert 0 < summary["tiles"] < 27 and summary["tiles_dropped"] == 27 - summary["tiles"]
    assert sum(summary["splits"].values()) == summary["tiles"] == len(pd.read_parquet(config.manifest_path))
    order = "manifest out sources shards shards_written shards_skipped unfinished_removed tiles tiles_dropped splits"
    assert list(summary) == order.split()  # as `synthgen ingest` printed it before it ran on the engine


def test_records_describe_the_job_so_rebuild_writes_the_same_manifest(scene_config):
    config = build_config(IngestConfig, scene_config)
    run_ingest(config)
    record = json.loads((config.out_dir / f"scene-00003{RECORD_SUFFIX}").read_text())
    assert record["job"]["name"] == "scene" and record["job"]["num_shards"] == 7
    rebuilt = rebuild_manifest(config.out_dir, config.manifest_path.with_name("rebuilt.parquet"))
    assert rebuilt["tiles"] == 27 and rebuilt["shards_missing"] == 0
    assert Path(rebuilt["manifest"]).read_bytes() == config.manifest_path.read_bytes()


REAL = ["dubai", "dronedeploy", "potsdam", "vaihingen", "loveda", "naip", "elevation"]


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="../shared/data/real is not beside the checkout")
@pytest.mark.parametrize("name", REAL)
def test_every_real_folder_ingests_with_its_shipped_config(name, tmp_path):
    folder = {"naip": "naip_timeseries"}.get(name, name)
    config = load_config(
        IngestConfig,
        name,
        "ingest",
        {
            "root": str(REAL_DATA / folder),
            "out": str(tmp_path / name),
            "manifest": str(tmp_path / f"{name}.parquet"),
            "workers": 2,
        },
    )
    plan = make_plan(config)
    summary = run_ingest(config)
    assert summary["tiles"] == plan.num_tiles > 0
    df = pd.read_parquet(config.manifest_path)
    assert set(df["split"]) == {"train", "val"}
    areas = df["meta"].map(lambda m: json.loads(m)["area"])
    assert df.groupby(areas)["split"].nunique().max() == 1
    assert df["crs"].str.len().min() > 0 and df["transform"].map(len).min() == 6
