"""Schemes, tile rasters, shards and manifests: formats that other tools (rasterio, tar, webdataset, pandas) read."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine

from synthgen.errors import RasterError, SchemeError, ShardError
from synthgen.io.geotiff import decode_raster, encode_raster, synthetic_georef
from synthgen.io.manifest import (
    REQUIRED_COLUMNS,
    TileDataset,
    iter_samples,
    merge_records,
    read_manifest,
    verify_manifest,
    write_job_manifest,
    write_manifest,
)
from synthgen.io.shards import RunInfo, ShardWriter, clean_unfinished, is_done, read_record
from synthgen.schema import builtin_schemes, load_scheme, map_labels

GEOREF = synthetic_georef(0, 32, 0.5)


def _sample(rng: np.random.Generator, key: str, size: int = 32, rgb=True, height=True) -> dict:
    return {
        "key": key,
        "rgb": rng.integers(0, 256, (size, size, 3), dtype=np.uint8) if rgb else None,
        "label": rng.integers(0, 9, (size, size)).astype(np.uint8),
        "height": rng.random((size, size), dtype=np.float32) * 20 if height else None,
        "crs": "EPSG:32633",
        "transform": Affine(0.5, 0, 500000, 0, -0.5, 5500000),
        "seed": 7,
        "parent_keys": ["p1"],
        "meta": {"split": "train", "source": "unit"},
    }


def _write_shard(path: Path, n: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    with ShardWriter(path, RunInfo("test", "oem8", "cfg"), load_scheme("oem8")) as writer:
        for i in range(n):
            writer.write(_sample(rng, f"k{seed}{i}", rgb=i != 1, height=i != 2))
    return read_record(path)


def test_builtin_schemes_load_and_map_into_oem8():
    oem8 = load_scheme("oem8")
    assert set(builtin_schemes()) >= {"oem8", "dubai", "dronedeploy", "isprs", "loveda", "worldcover"}
    assert oem8.num_classes == 8 and oem8.names[8] == "building" and oem8.nodata == 0
    for name in builtin_schemes():
        scheme = load_scheme(name)
        lut = scheme.mapping_to(oem8)
        assert all(lut[c] in oem8.codes for c in scheme.codes)
    assert load_scheme("worldcover").num_classes == 11
    dubai = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    assert map_labels(dubai, load_scheme("dubai"), oem8, "x").tolist() == [[8, 1, 4], [5, 6, 0]]


def test_unknown_label_value_names_file_value_and_allowed():
    with pytest.raises(SchemeError, match=r"f\.png: label value\(s\) 9 are not in scheme 'isprs' \(allowed: 0, 1"):
        map_labels(np.array([[1, 9]], np.uint8), load_scheme("isprs"), load_scheme("oem8"), "f.png")


def test_user_scheme_from_yaml(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nnodata: 0\nclasses:\n  - {code: 0, name: none}\n  - {code: 1, name: forest, "
        "color: '#00ff00'}\nto:\n  oem8: {0: 0, 1: 5}\n"
    )
    scheme = load_scheme(str(path))
    assert scheme.num_classes == 1 and scheme.classes[1].color == (0, 255, 0)
    assert map_labels(np.array([[1, 0]], np.uint8), scheme, load_scheme("oem8"), "x").tolist() == [[5, 0]]
    with pytest.raises(SchemeError, match="unknown scheme 'nope'.*built-in: dronedeploy, dubai"):
        load_scheme("nope")


@pytest.mark.parametrize("kind", ["rgb", "label", "height"])
def test_tile_rasters_round_trip_as_valid_cogs_with_crs(tmp_path, kind):
    from rio_cogeo.cogeo import cog_validate

    rng = np.random.default_rng(1)
    array = {
        "rgb": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        "label": rng.integers(0, 9, (32, 32)).astype(np.uint8),
        "height": np.where(rng.random((32, 32)) < 0.1, np.nan, rng.random((32, 32)) * 30).astype(np.float32),
    }[kind]
    data = encode_raster(kind, array, GEOREF, load_scheme("oem8"))
    back = decode_raster(data, kind, "x")
    np.testing.assert_array_equal(back.array, array)
    path = tmp_path / f"t.{kind}.tif"
    path.write_bytes(data)
    valid, errors, _ = cog_validate(str(path), quiet=True)
    assert valid, errors
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == 3857 and ds.transform == GEOREF.transform
        assert ds.compression.value == "ZSTD"
        if kind == "label":
            assert ds.colormap(1)[8] == (222, 31, 7, 255)
            assert ds.tags(1)["CLASS_8"] == "building"
        if kind == "rgb":
            assert [c.name for c in ds.colorinterp] == ["red", "green", "blue"]
        if kind == "height":
            assert np.isnan(ds.nodata) and ds.dtypes[0] == "float32"


@pytest.mark.parametrize("compress", ["zstd", "deflate", "lzw", "none"])
@pytest.mark.parametrize("size", [32, 300])
def test_the_fast_array_read_equals_gdals_for_every_kind_and_compression(compress, size):
    from synthgen.io.geotiff import decode_array

    rng = np.random.default_rng(size)
    arrays = {
        "rgb": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "label": rng.integers(0, 9, (size, size)).astype(np.uint8),
        "height": np.where(rng.random((size, size)) < 0.1, np.nan, rng.random((size, size)) * 30).astype(np.float32),
    }
    for kind, array in arrays.items():
        data = encode_raster(kind, array, GEOREF, load_scheme("oem8"), compress)
        fast = decode_array(data, kind, "x")
        assert fast.dtype == array.dtype and fast.flags.c_contiguous, (kind, compress)
        np.testing.assert_array_equal(fast, decode_raster(data, kind, "x").array)
        np.testing.assert_array_equal(fast, array)
    with pytest.raises(RasterError, match="x: not a readable GeoTIFF"):
        decode_array(data[: len(data) // 2], "height", "x")  # truncated: tifffile fails, GDAL names it


def test_shard_is_plain_tar_with_webdataset_names_and_record_last(tmp_path):
    record = _write_shard(tmp_path / "s-00000.tar")
    assert is_done(tmp_path / "s-00000.tar") and record["num_tiles"] == 3
    names = subprocess.run(
        ["tar", "tf", str(tmp_path / "s-00000.tar")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert names[:4] == ["k00.rgb.tif", "k00.label.tif", "k00.height.tif", "k00.json"]
    assert "k01.rgb.tif" not in names and "k02.height.tif" not in names
    assert not list(tmp_path.glob("*.tmp"))


def test_webdataset_reads_the_shard(tmp_path):
    import webdataset as wds

    _write_shard(tmp_path / "s-00000.tar")
    samples = list(wds.WebDataset(str(tmp_path / "s-00000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["k00", "k01", "k02"]
    assert set(samples[0]) >= {"rgb.tif", "label.tif", "height.tif", "json"}
    assert json.loads(samples[0]["json"])["crs"] == "EPSG:32633"


def test_shards_are_byte_reproducible(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert _write_shard(a / "s.tar")["sha256"] == _write_shard(b / "s.tar")["sha256"]


def test_aborted_writer_leaves_no_shard_and_cleanup_removes_orphans(tmp_path):
    with (
        pytest.raises(RuntimeError),
        ShardWriter(tmp_path / "s.tar", RunInfo("t", "oem8", "c"), load_scheme("oem8")) as w,
    ):
        w.write(_sample(np.random.default_rng(0), "a"))
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "orphan.tar").write_bytes(b"half")
    (tmp_path / "x.tar.tmp").write_bytes(b"half")
    _write_shard(tmp_path / "done.tar")
    removed = clean_unfinished(tmp_path)
    assert sorted(p.name for p in removed) == ["orphan.tar", "x.tar.tmp"]
    assert is_done(tmp_path / "done.tar")


def test_manifest_rows_readers_and_dataset(tmp_path):
    shards = [tmp_path / "shards" / f"s-{i:05d}.tar" for i in range(2)]
    shards[0].parent.mkdir()
    for i, shard in enumerate(shards):
        _write_shard(shard, seed=i)
    manifest = tmp_path / "manifests" / "m.parquet"
    job = {"name": "s", "tiles": 6, "tiles_per_shard": 3, "num_shards": 2, "run_config": {"name": "m"}}
    assert len(write_job_manifest(shards, manifest, job)) == 6

    df = pd.read_parquet(manifest)
    assert list(df.columns) == list(REQUIRED_COLUMNS)
    assert len(df) == 6 and df["shard"].iloc[0] == "../shards/s-00000.tar"
    row = df.iloc[0]
    assert list(row["members"]) == ["k00.rgb.tif", "k00.label.tif", "k00.height.tif", "k00.json"]
    assert row["seed"] == 7 and list(row["parent_keys"]) == ["p1"] and row["split"] == "train"
    assert sum(row["class_hist"]) == 32 * 32 and len(row["class_hist"]) == 9
    assert 0 <= row["height_min"] <= row["height_mean"] <= row["height_max"] <= 20

    samples = list(iter_samples(manifest))
    assert [s["key"] for s in samples] == list(df["key"])
    assert samples[1]["rgb"] is None and samples[2]["height"] is None
    assert samples[0]["rgb"].shape == (32, 32, 3) and samples[0]["crs"] == "EPSG:32633"
    assert samples[0]["transform"] == Affine(0.5, 0, 500000, 0, -0.5, 5500000)

    item = TileDataset(manifest, split="train")[0]
    assert item["rgb"].shape == (3, 32, 32) and float(item["rgb"].max()) <= 1.0
    assert item["label"].dtype.is_floating_point is False and item["height"].shape == (1, 32, 32)
    assert verify_manifest(manifest) == {"tiles": 6, "members": 20, "shards": 2, "rows_only": False}


def test_tampered_member_fails_verification(tmp_path):
    shard = tmp_path / "s.tar"
    _write_shard(shard)
    manifest = tmp_path / "m.parquet"
    write_manifest(merge_records([shard], manifest), manifest)
    with tarfile.open(shard) as tar:
        member = tar.getmember("k01.label.tif")
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"s\.tar: member 'k01\.label\.tif' does not match its sha256"):
        verify_manifest(manifest, subset=True)


def test_manifest_is_read_by_pandas_with_all_columns(tmp_path):
    _write_shard(tmp_path / "s.tar")
    manifest = write_manifest(merge_records([tmp_path / "s.tar"], tmp_path / "m.parquet"), tmp_path / "m.parquet")
    assert read_manifest(manifest).attrs["manifest_path"] == str(manifest.resolve())


def test_quality_flags_mark_constant_rgb_and_missing_height_on_labelled_pixels():
    from synthgen.io.shards import tile_stats

    label = np.full((4, 4), 8, np.uint8)
    label[0] = 0
    height = np.ones((4, 4), np.float32)
    height[0, 0] = np.nan
    ok = tile_stats({"label": label, "height": height, "rgb": np.zeros((4, 4, 3), np.uint8)}, load_scheme("oem8"))
    assert ok["quality_flags"] == ["label_partial_nodata", "rgb_constant"]
    height[2, 2] = np.nan
    bad = tile_stats({"label": label, "height": height}, load_scheme("oem8"))
    assert bad["quality_flags"] == ["label_partial_nodata", "height_missing_on_labelled"]


def test_record_sha256_is_the_sha256_of_the_tar_file(tmp_path):
    from synthgen.io.shards import sha256_file

    for n in (0, 1, 5):  # the tar's end blocks and padding are hashed too
        record = _write_shard(tmp_path / f"s{n}.tar", n=n, seed=n)
        assert record["sha256"] == sha256_file(tmp_path / f"s{n}.tar")


def _plain_tile_stats(sample: dict, scheme) -> dict:
    """tile_stats as plain numpy computes it (bincount, mean, a masked copy): the reference for the fast one."""
    flags, stats = [], {"class_hist": [], "height_valid_frac": 0.0}
    label = sample.get("label")
    if label is not None:
        hist = np.bincount(label.ravel(), minlength=max(scheme.codes) + 1)
        stats["class_hist"] = hist.tolist()
        if scheme.nodata is not None and label.size:
            frac = hist[scheme.nodata] / label.size
            flags += ["label_all_nodata"] if frac == 1.0 else ["label_partial_nodata"] if frac > 0 else []
    height = sample.get("height")
    stats.update(height_min=np.nan, height_mean=np.nan, height_max=np.nan)
    if height is not None:
        valid = np.isfinite(height)
        stats["height_valid_frac"] = float(valid.mean())
        if valid.any():
            h = height[valid]
            stats.update(height_min=float(h.min()), height_mean=float(h.mean()), height_max=float(h.max()))
        else:
            flags.append("height_all_nodata")
        if label is not None and scheme.nodata is not None and (~valid & (label != scheme.nodata)).any():
            flags.append("height_missing_on_labelled")
    rgb = sample.get("rgb")
    if rgb is not None and int(rgb.max()) == int(rgb.min()):
        flags.append("rgb_constant")
    stats["quality_flags"] = flags
    return stats


def test_tile_stats_equal_the_plain_numpy_computation():
    from synthgen.io.shards import tile_stats

    rng = np.random.default_rng(3)
    scheme = load_scheme("oem8")
    heights = {
        "finite": rng.random((64, 48), dtype=np.float32) * 300,
        "finite, not contiguous": (rng.random((64, 96), dtype=np.float32) * 300)[:, ::2],
        "some nan and inf": np.where(rng.random((64, 48)) < 0.1, np.nan, rng.random((64, 48)) * 50).astype(np.float32),
        "all nan": np.full((64, 48), np.nan, np.float32),
        "one inf": np.where(np.arange(64 * 48).reshape(64, 48) == 7, np.inf, 2.5).astype(np.float32),
        "none": None,
    }
    labels = {
        "codes": rng.integers(0, 9, (64, 48)).astype(np.uint8),
        "no nodata": rng.integers(1, 9, (64, 48)).astype(np.uint8),
        "all nodata": np.zeros((64, 48), np.uint8),
        "a code past the scheme": np.where(rng.random((64, 48)) < 0.01, 12, 3).astype(np.uint8),
        "255 (bincount)": np.where(rng.random((64, 48)) < 0.01, 255, 3).astype(np.uint8),
        "int64 (bincount)": rng.integers(0, 9, (64, 48)),
        "not contiguous": rng.integers(0, 9, (64, 96)).astype(np.uint8)[:, ::2],
        "none": None,
    }
    rgbs = {"random": rng.integers(0, 256, (64, 48, 3), dtype=np.uint8), "constant": np.full((64, 48, 3), 9, np.uint8)}
    for (hname, height), (lname, label), (rname, rgb) in (
        (h, lab, r) for h in heights.items() for lab in labels.items() for r in rgbs.items()
    ):
        sample = {"height": height, "label": label, "rgb": rgb}
        got, want = tile_stats(sample, scheme), _plain_tile_stats(sample, scheme)
        assert json.dumps(got) == json.dumps(want), (hname, lname, rname)
        assert all(type(v) is int for v in got["class_hist"])
    empty = {"label": np.zeros((0, 4), np.uint8), "height": np.zeros((0, 4), np.float32)}
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        assert json.dumps(tile_stats(empty, scheme)) == json.dumps(_plain_tile_stats(empty, scheme))
