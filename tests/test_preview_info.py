"""Contact sheets and manifest summaries on a small seeded manifest with hand-made label maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rasterio.transform import Affine

from synthgen.errors import ConfigError, ManifestError
from synthgen.evaluation import preview
from synthgen.evaluation.preview import write_contact_sheet
from synthgen.evaluation.summary import format_summary, summarize_manifest
from synthgen.io.manifest import merge_records, read_manifest, write_manifest
from synthgen.io.shards import RunInfo, ShardWriter
from synthgen.schema import load_scheme

CRS = "EPSG:32633"
BUILDING, TREE, RANGELAND, NODATA = 8, 5, 2, 0


def half_building_half_tree(size: int = 32) -> np.ndarray:
    """A label map whose left half is building and right half tree."""
    label = np.full((size, size), BUILDING, np.uint8)
    label[:, size // 2 :] = TREE
    return label


def make_tile(key: str, label: np.ndarray, seed: int, rgb: bool = True, height: bool = True) -> dict:
    """A sample dict with seeded rgb and height of the label's shape (each optional)."""
    rng = np.random.default_rng(seed)
    h, w = label.shape
    sample = {
        "key": key,
        "label": label,
        "crs": CRS,
        "transform": Affine(0.5, 0.0, 500000.0 + 100 * seed, 0.0, -0.5, 5000000.0),
        "seed": seed,
        "meta": {"split": "train", "source": "a"},
    }
    if rgb:
        sample["rgb"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if height:
        sample["height"] = rng.uniform(0.0, 20.0, (h, w)).astype(np.float32)
    return sample


def build_manifest(root: Path, tiles: list[dict], num_shards: int = 2) -> Path:
    """Write ``tiles`` round-robin into shards under ``root``, merge their records and write the manifest."""
    scheme = load_scheme("oem8")
    run = RunInfo(generator="ingest", scheme="oem8", config_hash="0" * 64)
    shard_dir = root / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = [shard_dir / f"shard-{i:05d}.tar" for i in range(num_shards)]
    writers = [ShardWriter(path, run, scheme) for path in shards]
    for i, tile in enumerate(tiles):
        writers[i % num_shards].write(tile)
    for writer in writers:
        writer.close()
    manifest = root / "manifest.parquet"
    write_manifest(merge_records(shards, manifest), manifest)
    return manifest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Six tiles: sizes 32-64 px, one without rgb, one without height, one with a NaN and nodata stripe."""
    stripe = np.full((32, 48), RANGELAND, np.uint8)
    stripe[:8] = NODATA
    tiles = [
        make_tile("t0", half_building_half_tree(32), seed=0),
        make_tile("t1", half_building_half_tree(64), seed=1, rgb=False),
        make_tile("t2", np.full((48, 48), TREE, np.uint8), seed=2, height=False),
        make_tile("t3", stripe, seed=3),
        make_tile("t4", half_building_half_tree(32), seed=4),
        make_tile("t5", np.full((32, 32), RANGELAND, np.uint8), seed=5),
    ]
    tiles[3]["height"][:4] = np.nan
    return build_manifest(tmp_path_factory.mktemp("manifest"), tiles)


def test_contact_sheet_is_a_png_of_the_expected_size(manifest: Path, tmp_path: Path):
    out = write_contact_sheet(manifest, tmp_path / "sheet.png", n=16, columns=4)
    assert out == tmp_path / "sheet.png"
    assert not (tmp_path / "sheet.png.tmp").exists()
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
        colours = {c for _, c in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert width == preview.MARGIN + 4 * (preview.CELL_W + preview.MARGIN)
    assert height > preview.HEADER_H + 2 * (preview.CELL_H + preview.MARGIN)
    palette = load_scheme("oem8").palette_lut()
    assert {tuple(palette[BUILDING]), tuple(palette[TREE]), preview.MISSING} <= colours

    one_row = write_contact_sheet(manifest, tmp_path / "one_row.png", n=4, columns=4)
    with Image.open(one_row) as image:
        assert image.size == (width, height - (preview.CELL_H + preview.MARGIN))


def test_contact_sheet_is_deterministic_and_samples_n_tiles(manifest: Path, tmp_path: Path):
    a = write_contact_sheet(manifest, tmp_path / "a.png", n=2, seed=7, columns=4).read_bytes()
    b = write_contact_sheet(manifest, tmp_path / "b.png", n=2, seed=7, columns=4).read_bytes()
    assert a == b
    with Image.open(tmp_path / "a.png") as image:
        assert image.width == preview.MARGIN + 2 * (preview.CELL_W + preview.MARGIN)
    assert preview.pick_rows(6, 2, seed=7) == sorted(preview.pick_rows(6, 2, seed=7))
    assert len(set(preview.pick_rows(6, 4, seed=1))) == 4
    assert preview.pick_rows(3, 16, seed=0) == [0, 1, 2]


def test_contact_sheet_of_rgb_only_tiles_shows_rgb_alone(manifest: Path, tmp_path: Path):
    """Tiles with rgb alone (as `synthgen climate` writes them): one rgb panel per cell, no grey 'no label' /
    'no height' panels, no class legend or height colour bar; a manifest with labels keeps its three panels."""
    tiles = [make_tile(f"c{i}", np.zeros((32, 32), np.uint8), seed=i, height=False) for i in range(6)]
    for tile in tiles:
        del tile["label"]
    rgb_only = build_manifest(tmp_path / "rgb_only", tiles)
    assert preview.shown_members(read_manifest(rgb_only)) == ("rgb",)
    assert preview.shown_members(read_manifest(manifest)) == ("rgb", "label", "height")
    assert preview.cell_width(3) == preview.CELL_W

    out = write_contact_sheet(rgb_only, tmp_path / "rgb_only.png", n=6, columns=4)
    with Image.open(out) as image:
        width, height = image.size
        counts = {c: n for n, c in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert width == preview.MARGIN + 4 * (preview.cell_width(1) + preview.MARGIN)  # one panel per cell
    assert height == preview.HEADER_H + preview.MARGIN + 2 * (preview.CELL_H + preview.MARGIN) + preview.MARGIN
    assert counts.get(preview.MISSING, 0) < preview.PANEL_PX**2 // 10  # no grey "no label" / "no height" panel


def test_contact_sheet_rejects_bad_sizes(manifest: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="n=0"):
        write_contact_sheet(manifest, tmp_path / "x.png", n=0)
    with pytest.raises(ConfigError, match="columns=0"):
        write_contact_sheet(manifest, tmp_path / "x.png", columns=0)


def test_height_ramp_ends_and_nan():
    ramp = preview.height_ramp(np.array([[0.0, 10.0, 50.0, np.nan]], np.float32), vmax=10.0)
    assert ramp[0, 0].tolist() == preview.RAMP_ANCHORS[0].tolist()
    assert ramp[0, 1].tolist() == ramp[0, 2].tolist() == preview.RAMP_ANCHORS[-1].tolist()
    assert ramp[0, 3].tolist() == [0, 0, 0]


def test_empty_manifest_raises_manifest_error(tmp_path: Path):
    empty = write_manifest([], tmp_path / "empty.parquet")
    with pytest.raises(ManifestError, match="no tiles"):
        write_contact_sheet(empty, tmp_path / "sheet.png")
    assert not (tmp_path / "sheet.png").exists()
    summary = summarize_manifest(empty)
    assert summary["tiles"] == 0 and summary["classes"] == {} and summary["height"]["tiles"] == 0
    assert "tiles" in format_summary(summary)


def test_summary_counts(manifest: Path):
    summary = summarize_manifest(manifest)
    json.dumps(summary, allow_nan=False)
    assert summary["tiles"] == 6
    assert summary["shards"] == 2 and summary["missing_shards"] == []
    shard_files = sorted((manifest.parent / "shards").glob("*.tar"))
    assert summary["shard_bytes"] == sum(p.stat().st_size for p in shard_files)
    assert summary["rasters"] == {"rgb": 5, "label": 6, "height": 5}
    assert summary["splits"] == {"train": 6}
    assert summary["generators"] == {"ingest": 6}
    assert summary["schemes"] == {"oem8": 6}
    assert summary["tile_sizes"] == {"32x32": 3, "48x48": 1, "48x32": 1, "64x64": 1}
    assert summary["crs"] == [CRS]
    assert summary["synthetic_georef"] == 0
    assert summary["quality_flags"] == {"label_partial_nodata": 1}


def test_summary_class_fractions_are_exact(tmp_path: Path):
    stripe = np.full((32, 32), RANGELAND, np.uint8)
    stripe[:8] = NODATA
    only_half = build_manifest(tmp_path / "half", [make_tile("h", half_building_half_tree(32), seed=0)], 1)
    classes = summarize_manifest(only_half)["classes"]["oem8"]
    assert classes["fractions"]["building"] == 0.5 and classes["fractions"]["tree"] == 0.5
    assert classes["fractions"]["water"] == 0.0 and classes["nodata"] == 0.0
    assert classes["pixels"] == 32 * 32 and classes["label_tiles"] == 1

    tiles = [make_tile("h", half_building_half_tree(32), 0), make_tile("s", stripe, 1)]
    two = build_manifest(tmp_path / "two", tiles)
    classes = summarize_manifest(two)["classes"]["oem8"]
    assert classes["fractions"]["building"] == 0.25 and classes["fractions"]["tree"] == 0.25
    assert classes["fractions"]["rangeland"] == 0.375 and classes["nodata"] == 0.125
    assert sum(classes["fractions"].values()) + classes["nodata"] == 1.0


def test_summary_height_stats(manifest: Path):
    height = summarize_manifest(manifest)["height"]
    assert height["tiles"] == 5
    pixels = [32 * 32, 64 * 64, 48 * 32, 32 * 32, 32 * 32]
    valid = [1.0, 1.0, 1 - 4 / 32, 1.0, 1.0]
    assert height["valid_frac"] == pytest.approx(np.average(valid, weights=pixels))
    assert 0.0 <= height["min"] < height["mean"] < height["max"] <= 20.0


def test_format_summary_is_aligned_and_sorted(manifest: Path):
    lines = format_summary(summarize_manifest(manifest)).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("classes (oem8"))
    column = len("synthetic georef") + 2
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines[:start])
    assert lines[1].split() == ["tiles", "6"]
    assert "label_partial_nodata 1" in lines[start - 2]
    class_lines = [line for line in lines[start + 1 :] if not line.strip().startswith("(nodata)")]
    percents = [float(line.split()[-2]) for line in class_lines]
    assert percents == sorted(percents, reverse=True) and len(percents) == 8
