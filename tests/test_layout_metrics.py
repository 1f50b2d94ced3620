"""Layout fidelity metrics on hand-made label maps whose answers are known, through the library and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.errors import ManifestError, SchemeError
from synthgen.evaluation import (
    adjacency_counts,
    boundary_density,
    class_counts,
    component_median_heights,
    component_sizes,
    evaluate_layout,
    format_layout_report,
    js_divergence,
    ks_distance,
    total_variation,
)
from synthgen.io.manifest import merge_records, write_manifest
from synthgen.io.shards import RunInfo, ShardWriter
from synthgen.schema import load_scheme

OEM8_CODES = list(range(1, 9))


def _manifest(
    tmp_path: Path,
    name: str,
    labels: list[np.ndarray],
    heights: list[np.ndarray] | None = None,
    scheme: str = "oem8",
    split: str = "train",
    with_label: bool = True,
) -> Path:
    """A one-shard manifest holding the given label maps (and heights), written by the real writer."""
    shard = tmp_path / f"{name}.tar"
    with ShardWriter(shard, RunInfo("test", scheme, "cfg"), load_scheme(scheme)) as writer:
        for i, label in enumerate(labels):
            writer.write(
                {
                    "key": f"{name}{i}",
                    "label": label.astype(np.uint8) if with_label else None,
                    "rgb": None if with_label else np.zeros((*label.shape, 3), np.uint8),
                    "height": None if heights is None else heights[i].astype(np.float32),
                    "crs": "EPSG:3857",
                    "transform": Affine(0.5, 0, 0, 0, -0.5, 0),
                    "meta": {"split": split, "source": "unit"},
                }
            )
    manifest = tmp_path / f"{name}.parquet"
    write_manifest(merge_records([shard], manifest), manifest)
    return manifest


def _halves(h: int = 16, w: int = 16, left: int = 8, right: int = 5) -> np.ndarray:
    label = np.full((h, w), right, np.uint8)
    label[:, : w // 2] = left
    return label


def _block_checkerboard(blocks: int = 4, size: int = 8, a: int = 5, b: int = 8) -> np.ndarray:
    """blocks x blocks squares of size px, alternating classes a and b like a chessboard."""
    parity = (np.arange(blocks)[:, None] + np.arange(blocks)[None, :]) % 2
    return np.where(np.kron(parity, np.ones((size, size), int)) == 0, a, b).astype(np.uint8)


def _varied_tiles(n: int = 3, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    tiles = []
    for _ in range(n):
        coarse = rng.integers(1, 9, (size // 4, size // 4))
        tiles.append(np.kron(coarse, np.ones((4, 4), int)).astype(np.uint8))
    return tiles


def test_halves_have_one_boundary_pixel_per_row_and_only_the_5_8_pair():
    h, w = 16, 16
    label = _halves(h, w)
    assert boundary_density(label, nodata=0) == h / (h * w)
    matrix = adjacency_counts(label, OEM8_CODES, nodata=0)
    i5, i8 = OEM8_CODES.index(5), OEM8_CODES.index(8)
    assert matrix[i5, i8] == matrix[i8, i5] == h
    assert matrix.sum() == 2 * h
    assert class_counts(label, OEM8_CODES).tolist() == [0, 0, 0, 0, h * w // 2, 0, 0, h * w // 2]


def test_nodata_is_left_out_of_boundaries_and_adjacency():
    label = _halves(4, 4)
    label[:, 2] = 0  # the column right of the 8|5 line becomes nodata: no valid pair of different classes remains
    assert boundary_density(label, nodata=0) == 0.0
    assert adjacency_counts(label, OEM8_CODES, nodata=0).sum() == 0
    assert np.isnan(boundary_density(np.zeros((4, 4), np.uint8), nodata=0))


def test_block_checkerboard_components_are_4_connected():
    label = _block_checkerboard(blocks=4, size=8)
    # same-class blocks touch only at corners: with 4-connectivity each block is its own component
    assert component_sizes(label == 5).tolist() == [64] * 8
    assert component_sizes(label == 8).tolist() == [64] * 8
    assert component_sizes(np.zeros((4, 4), bool)).size == 0
    assert component_sizes(np.eye(3, dtype=bool)).tolist() == [1, 1, 1]


def test_component_median_heights_use_finite_pixels_of_each_component():
    mask = np.array([[1, 1, 0, 1], [1, 1, 0, 1]], bool)
    height = np.array([[1.0, 2.0, 9.0, 7.0], [3.0, np.nan, 9.0, 8.0]])
    np.testing.assert_array_equal(component_median_heights(mask, height), [2.0, 7.5])


def test_distances_on_known_distributions():
    assert js_divergence([1, 0, 0], [0, 1, 1]) == pytest.approx(1.0, abs=1e-12)
    assert js_divergence([2, 2], [5, 5]) == 0.0
    assert js_divergence([0, 0], [1, 1]) is None
    assert total_variation(np.array([[0, 1], [1, 0]]), np.array([[0, 3], [3, 0]])) == 0.0
    assert total_variation([1, 0], [0, 1]) == 1.0
    assert ks_distance([10.0, 20.0], [10.0, 30.0]) == 0.5
    assert ks_distance([], [1.0]) is None


def test_identical_manifests_score_zero(tmp_path):
    tiles = _varied_tiles()
    heights = [np.where(t == 8, 3.0 * t, 0.5).astype(np.float32) for t in tiles]
    real = _manifest(tmp_path, "real", tiles, heights)
    synth = _manifest(tmp_path, "synth", tiles, heights)
    report = evaluate_layout(real, synth)
    assert report["tiles"] == {"real": 3, "synthetic": 3}
    assert report["class_frequency"]["js_divergence"] == 0.0
    assert report["adjacency"]["distance"] == 0.0
    assert report["boundary_density"]["abs_diff"] == 0.0
    per_class = report["components"]["per_class"]
    assert all(c["ks"] == 0.0 and c["wasserstein_log10"] == 0.0 for c in per_class.values() if c["ks"] is not None)
    assert report["components"]["mean_ks"] == 0.0
    assert report["building_height"]["ks"] == 0.0 and report["building_height"]["real_median"] == 24.0
    json.dumps(report, allow_nan=False)
    assert "class freq JS      0.0000" in format_layout_report(report)


def test_halves_manifest_boundary_adjacency_and_component_counts(tmp_path):
    h, w = 16, 16
    real = _manifest(tmp_path, "real", [_halves(h, w), _halves(h, w)])
    synth = _manifest(tmp_path, "synth", [_block_checkerboard(blocks=2, size=8)])
    report = evaluate_layout(real, synth)
    assert report["boundary_density"]["real_mean"] == h / (h * w)
    # 2x2 blocks of 8 px: column 7 (16 px) and row 7 (16 px) see another class right / below; (7, 7) is in both
    assert report["boundary_density"]["synthetic_mean"] == 31 / (h * w)
    names = report["adjacency"]["classes"]
    matrix = np.array(report["adjacency"]["real"])
    i5, i8 = names.index("tree"), names.index("building")
    assert matrix[i5, i8] == matrix[i8, i5] == 0.5 and matrix.sum() == 1.0
    comps = report["components"]["per_class"]
    assert comps["building"]["real_per_tile"] == 1.0 and comps["tree"]["real_per_tile"] == 1.0
    assert comps["building"]["synthetic_per_tile"] == 2.0 and comps["tree"]["synthetic_components"] == 2
    assert comps["building"]["real_median_size"] == 128.0 and comps["building"]["synthetic_median_size"] == 64.0
    assert comps["building"]["ks"] == 1.0
    assert comps["building"]["wasserstein_log10"] == pytest.approx(np.log10(2))
    assert comps["water"]["ks"] is None and comps["water"]["real_per_tile"] == 0.0
    assert report["building_height"] == {"skipped": "no height rasters in the real and synthetic tiles"}


def test_disjoint_classes_give_js_one(tmp_path):
    real = _manifest(tmp_path, "real", [_halves(left=8, right=5)])
    synth = _manifest(tmp_path, "synth", [_halves(left=1, right=6)])
    report = evaluate_layout(real, synth)
    assert report["class_frequency"]["js_divergence"] == pytest.approx(1.0, abs=1e-12)
    assert report["adjacency"]["distance"] == 1.0


def test_building_height_ks_and_medians(tmp_path):
    label = _halves(8, 16, left=8, right=5)
    label[:, 3] = 5  # split the building half into two buildings: columns 0-2 and 4-7
    real_h = np.where(np.arange(16)[None, :] < 3, 10.0, 20.0) * np.ones((8, 1))
    synth_h = np.where(np.arange(16)[None, :] < 3, 10.0, 30.0) * np.ones((8, 1))
    real = _manifest(tmp_path, "real", [label], [real_h])
    synth = _manifest(tmp_path, "synth", [label, label], [synth_h, synth_h])
    bh = evaluate_layout(real, synth)["building_height"]
    assert bh == {
        "ks": 0.5,
        "real_median": 15.0,
        "synthetic_median": 20.0,
        "real_buildings": 2,
        "synthetic_buildings": 4,
    }


def test_building_class_is_found_by_name_in_other_schemes(tmp_path):
    label = np.full((8, 8), 1, np.uint8)
    label[2:5, 2:5] = 2  # isprs: 2 = building
    heights = [np.full((8, 8), 6.0)]
    real = _manifest(tmp_path, "real", [label], heights, scheme="isprs")
    bh = evaluate_layout(real, real)["building_height"]
    assert bh["real_buildings"] == 1 and bh["real_median"] == 6.0 and bh["ks"] == 0.0


def test_scheme_mismatch_and_missing_labels_are_one_line_errors(tmp_path):
    oem = _manifest(tmp_path, "oem", [_halves(8, 8)])
    isprs = _manifest(tmp_path, "isprs", [_halves(8, 8, left=2, right=4)], scheme="isprs")
    with pytest.raises(
        SchemeError,
        match=r"real manifest .*oem\.parquet has scheme 'oem8' but synthetic manifest "
        r".*isprs\.parquet has scheme 'isprs'",
    ) as exc:
        evaluate_layout(oem, isprs)
    assert "\n" not in str(exc.value)
    rgb_only = _manifest(tmp_path, "rgb", [_halves(8, 8)], with_label=False)
    with pytest.raises(ManifestError, match=r"rgb\.parquet: no tiles with a label raster"):
        evaluate_layout(oem, rgb_only)
    with pytest.raises(ManifestError, match=r"no tiles in split 'val' \(splits present: train\)"):
        evaluate_layout(oem, oem, split="val")


def test_split_and_max_tiles_select_rows(tmp_path):
    tiles = _varied_tiles(5)
    real = _manifest(tmp_path, "real", tiles, split="val")
    report = evaluate_layout(real, real, split="val", synthetic_split="val", max_tiles=2)
    assert report["tiles"] == {"real": 2, "synthetic": 2} and report["max_tiles"] == 2


def test_cli_prints_report_and_writes_json(tmp_path):
    runner = CliRunner()
    real = _manifest(tmp_path, "real", [_halves()])
    synth = _manifest(tmp_path, "synth", [_block_checkerboard(2, 8)])
    out = tmp_path / "reports" / "layout.json"
    result = runner.invoke(
        app, ["evaluate", "layout", "--real", str(real), "--synthetic", str(synth), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "adjacency TV" in result.output and f"wrote {out}" in result.output
    saved = json.loads(out.read_text())
    assert saved["boundary_density"]["real_mean"] == 1 / 16 and not list(out.parent.glob("*.tmp"))

    isprs = _manifest(tmp_path, "isprs", [_halves(left=2, right=4)], scheme="isprs")
    result = runner.invoke(app, ["evaluate", "layout", "--real", str(real), "--synthetic", str(isprs)])
    assert result.exit_code == 2
    assert result.output.startswith("error: real manifest") and result.output.count("\n") == 1


def test_shape_measures_on_hand_made_shapes():
    from scipy import ndimage

    from synthgen.evaluation.layout_stats import line_stats, rectangularity

    canvas = np.zeros((64, 64), bool)
    canvas[4:14, 4:24] = True  # a 10 x 20 rectangle
    disk = (np.arange(64)[:, None] - 45) ** 2 + (np.arange(64)[None, :] - 45) ** 2 <= 10**2
    rotated = ndimage.rotate(np.pad(np.ones((8, 24)), 8), 30, order=0, reshape=True) > 0.5
    canvas |= disk
    labelled, n = ndimage.label(canvas)
    scores = dict(zip(["rectangle", "disk"], rectangularity(labelled, n), strict=True))
    assert scores["rectangle"] == pytest.approx(1.0) and scores["disk"] == pytest.approx(np.pi / 4, abs=0.06)
    lab, m = ndimage.label(rotated)
    assert rectangularity(lab, m)[0] > 0.85  # minimum-area: a rotated rectangle stays rectangular
    assert len(rectangularity(*ndimage.label(np.zeros((8, 8), bool)))) == 0
    road = np.zeros((64, 64), bool)
    road[30:34, :] = True  # a 4 px wide road across the tile
    road[2:8, 2:8] = True  # and a 6 x 6 patch
    lines = line_stats(road)
    assert lines.pixels == 256 + 36 and lines.pixels / lines.skeleton == pytest.approx(292 / 66, rel=0.15)
    assert lines.crossing == 256  # only the road reaches two edges
    assert sorted(lines.elongation)[1] == pytest.approx(64 * 64 / 256, rel=0.1)  # L / w = 16 for the road
    assert sorted(lines.elongation)[0] < 3  # the patch
    assert line_stats(np.zeros((8, 8), bool)).pixels == 0


def test_identical_manifests_have_no_shape_gap(tmp_path):
    tiles = _varied_tiles()
    report = evaluate_layout(_manifest(tmp_path, "a", tiles), _manifest(tmp_path, "b", tiles))
    for shape in report["shape"].values():
        assert shape["relative_gap"] in (0.0, None) and shape["real"] == shape["synthetic"]
    assert "rectangularity" in format_layout_report(report)
