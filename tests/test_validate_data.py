"""Validation data: seeded tile manifests for the validation tests (written with the project's own ShardWriter and
manifest writer), set specs, nested subsets, and the tile stream's exact resume and process split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synthgen.errors import ConfigError
from synthgen.io.geotiff import synthetic_georef
from synthgen.io.manifest import merge_records, write_manifest
from synthgen.io.shards import RunInfo, ShardWriter
from synthgen.schema import load_scheme
from synthgen.validation.data import TileSet, TileStream, parse_set

CLASS_COLOURS = {1: (200, 180, 140), 5: (30, 120, 40), 6: (20, 40, 160), 8: (220, 60, 60)}
CLASS_HEIGHTS = {1: 0.0, 5: 6.0, 6: 0.0, 8: 12.0}


def write_tiles(
    root: Path,
    name: str,
    n: int = 8,
    size: int = 32,
    seed: int = 0,
    label: bool = True,
    height: bool = True,
    val: int = 2,
    shift: int = 0,
) -> Path:
    """A manifest of ``n`` oem8 tiles whose rgb follows the blocky label map (colour per class, + ``shift``, + noise)
    and whose height is 12 m on buildings, 6 m on trees; the first ``val`` tiles are split 'val'."""
    root = Path(root)
    scheme = load_scheme("oem8")
    rng = np.random.default_rng(seed)
    shard = root / "data" / name / f"{name}-000000.tar"
    shard.parent.mkdir(parents=True, exist_ok=True)
    manifest = root / "manifests" / f"{name}.parquet"
    run = RunInfo(generator="test", scheme="oem8", config_hash="0" * 64)
    codes = np.array(sorted(CLASS_COLOURS))
    colours = np.zeros((256, 3), np.int64)
    heights = np.zeros(256, np.float32)
    for code, colour in CLASS_COLOURS.items():
        colours[code], heights[code] = colour, CLASS_HEIGHTS[code]
    with ShardWriter(shard, run, scheme) as writer:
        for i in range(n):
            small = rng.choice(codes, size=(size // 8, size // 8))
            labels = np.kron(small, np.ones((8, 8), np.int64)).astype(np.uint8)
            rgb = np.clip(colours[labels] + shift + rng.integers(-12, 12, (size, size, 3)), 0, 255).astype(np.uint8)
            georef = synthetic_georef(i, size, 1.0)
            sample = {
                "key": f"{name}_{i:03d}",
                "rgb": rgb,
                "crs": georef.crs,
                "transform": georef.transform,
                "synthetic_georef": True,
                "meta": {"split": "val" if i < val else "train", "source": name},
            }
            if label:
                sample["label"] = labels
            if height:
                sample["height"] = (heights[labels] + rng.random((size, size)).astype(np.float32)).astype(np.float32)
            writer.write(sample)
    write_manifest(merge_records([shard], manifest), manifest)
    return manifest


def write_empty_manifest(root: Path, name: str = "empty") -> Path:
    """A manifest with the right columns and no rows."""
    path = Path(root) / "manifests" / f"{name}.parquet"
    return write_manifest([], path)


OEM8 = load_scheme("oem8")


def test_parse_set_forms_and_errors():
    spec = parse_set("real=a/b.parquet:val,c.parquet")
    assert spec.name == "real" and spec.parts == (("a/b.parquet", "val"), ("c.parquet", None))
    assert parse_set("x=./rel/m.parquet").parts == (("./rel/m.parquet", None),)
    for bad in ("nothing", "=m.parquet", "a=", "a=m.parquet,,n.parquet", "a b=m.parquet"):
        with pytest.raises(ConfigError):
            parse_set(bad)


def test_tile_stream_resumes_at_the_exact_sample(tmp_path):
    manifest = write_tiles(tmp_path, "s", n=6, size=32)
    tiles = TileSet.load(parse_set(f"s={manifest}:all"), "train")
    full = TileStream(tiles, OEM8, train=True, crop=16, batch_size=2, seed=3, jitter=0.2)
    first = [s for _, s in zip(range(10), full, strict=False)]
    resumed = TileStream(tiles, OEM8, train=True, crop=16, batch_size=2, seed=3, jitter=0.2, start=4)
    again = [s for _, s in zip(range(6), resumed, strict=False)]
    for a, b in zip(first[4:], again, strict=True):
        assert a["key"] == b["key"]
        assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["label"], b["label"])
    assert {s["rgb"].shape for s in first} == {(3, 16, 16)}
    # the epoch after the first visits every tile again, in another order
    assert sorted(s["key"] for s in first[:6]) == sorted(tiles.df["key"])
    # two processes split the batches between them: 0,2,4... and 1,3,5...
    rank1 = TileStream(tiles, OEM8, train=True, crop=16, batch_size=2, seed=3, jitter=0.2, rank=1, world=2)
    assert [s["key"] for _, s in zip(range(4), rank1, strict=False)] == [s["key"] for s in first[2:4] + first[6:8]]


def test_subset_is_nested_and_seeded(tmp_path):
    tiles = TileSet.load(parse_set(f"s={write_tiles(tmp_path, 's', n=10, size=16)}:all"), "train")
    small, large = tiles.subset(0.2, 0), tiles.subset(0.5, 0)
    assert len(small) == 2 and len(large) == 5
    assert set(small.df["key"]) <= set(large.df["key"])
    assert list(tiles.subset(0.5, 0).df["key"]) == list(large.df["key"])
