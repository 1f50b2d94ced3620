"""Tests of the height prior: fitting on the real elevation data, drawing heights, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthgen.errors import ConfigError, SchemeError
from synthgen.models.height_prior import HeightPrior
from synthgen.training.height_prior_fit import fit_height_prior, fit_height_prior_with_stats

ELEVATION = Path(__file__).resolve().parents[2] / "shared/data/real/elevation"
NODATA, BARE, ROAD, TREE, WATER, BUILDING, RANGE = 0, 1, 4, 5, 6, 8, 2


def _label_map() -> np.ndarray:
    """A 64x64 oem8 map: two separate buildings, a tree patch, water, rangeland, road and a nodata strip."""
    labels = np.full((64, 64), BARE, np.uint8)
    labels[:, 30:33] = ROAD
    labels[4:14, 4:20] = BUILDING
    labels[40:56, 40:48] = BUILDING
    labels[20:36, 4:24] = TREE
    labels[4:24, 40:60] = WATER
    labels[40:60, 4:24] = RANGE
    labels[60:, :] = NODATA
    return labels


def _public(config) -> dict:
    """The constructor arguments of a config, without diffusers' bookkeeping keys."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def fitted() -> tuple[HeightPrior, dict]:
    if not ELEVATION.is_dir():
        pytest.skip(f"real elevation data not found at {ELEVATION}")
    return fit_height_prior_with_stats(ELEVATION)


def test_fit_on_real_elevation_is_plausible(fitted):
    prior, stats = fitted
    numbers = {k: v for k, v in prior.config.items() if not k.startswith("_") and isinstance(v, float)}
    assert all(np.isfinite(v) for v in numbers.values()), numbers
    median = float(np.exp(prior.config.building_height_mu))
    assert 3.0 < median < 60.0
    assert 3.0 < stats["building_height_median_m"] < 60.0
    assert 0.0 < prior.config.building_height_sigma < 2.0
    assert prior.config.building_height_min <= median <= prior.config.building_height_max
    assert 2.0 <= np.exp(prior.config.tree_height_mu) < 60.0
    assert 0.0 <= prior.config.roof_pitch_probability <= 1.0
    assert np.exp(prior.config.low_vegetation_height_mu) < 1.0
    assert prior.config.gsd == pytest.approx(2.0)
    assert stats["n_buildings"] > 50
    assert 0.0 <= stats["building_ks_statistic"] <= 1.0
    assert stats["attribute_height_corr"] > 0.8


def test_fit_height_prior_returns_the_prior_and_rejects_unknown_source(fitted):
    prior = fit_height_prior(ELEVATION)
    assert prior.config == fitted[0].config
    with pytest.raises(ConfigError, match="allowed: hag, ndsm"):
        fit_height_prior(ELEVATION, source="lidar")


def test_heights_follow_the_labels():
    prior = HeightPrior(roof_pitch_probability=0.0)
    labels = _label_map()
    heights = prior(labels, gsd=0.5, generator=np.random.default_rng(0))

    assert heights.dtype == np.float32 and heights.shape == labels.shape
    assert np.isnan(heights[labels == NODATA]).all()
    assert np.isfinite(heights[labels != NODATA]).all()
    first, second = heights[4:14, 4:20], heights[40:56, 40:48]
    assert np.unique(first).size == 1 and np.unique(second).size == 1
    assert first[0, 0] != second[0, 0]
    for roof in (first[0, 0], second[0, 0]):
        assert prior.config.building_height_min <= roof <= prior.config.building_height_max
    assert np.abs(heights[labels == WATER]).max() < 0.5
    assert np.abs(heights[labels == ROAD]).max() < 0.5
    assert (heights[labels == RANGE] >= 0).all() and (heights[labels == RANGE] <= 1.0).all()
    trees = heights[labels == TREE]
    assert trees.min() >= prior.config.tree_height_min * prior.config.tree_crown_edge_ratio - 1e-6
    assert trees.max() <= prior.config.tree_height_max
    assert np.unique(trees).size > 10


def test_same_seed_same_heights_other_seed_other_heights():
    prior = HeightPrior()
    labels = _label_map()
    a = prior(labels, 0.5, np.random.default_rng(7))
    b = prior(labels, 0.5, np.random.default_rng(7))
    c = prior(labels, 0.5, np.random.default_rng(8))
    assert np.array_equal(a, b, equal_nan=True)
    assert not np.array_equal(a, c, equal_nan=True)


def test_pitched_roof_rises_towards_the_ridge_and_keeps_its_mean():
    prior = HeightPrior(roof_pitch_probability=1.0, roof_pitch_ratio=0.5, roof_pitch_max_half_width_m=20.0)
    labels = np.full((32, 32), BARE, np.uint8)
    labels[4:28, 10:18] = BUILDING
    heights = prior(labels, 1.0, np.random.default_rng(0))
    across = heights[16, 10:18]
    assert across[3] > across[0] and across[4] > across[7]
    assert across[3] - across[0] == pytest.approx(1.5, abs=1e-4)
    assert np.allclose(heights[4:28, 13], heights[4, 13])


def test_batch_matches_shape_and_rejects_bad_input():
    prior = HeightPrior()
    batch = np.stack([_label_map(), _label_map()[::-1]])
    heights = prior(batch, 0.5, np.random.default_rng(0))
    assert heights.shape == batch.shape and heights.dtype == np.float32
    with pytest.raises(SchemeError, match="allowed: 0, 1, 2"):
        prior(np.full((8, 8), 9, np.uint8), 0.5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="integer class codes"):
        prior(np.zeros((8, 8), np.float32), 0.5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="gsd"):
        prior(np.zeros((8, 8), np.uint8), 0.0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="roof_pitch_probability"):
        HeightPrior(roof_pitch_probability=1.5)


def test_save_and_load_round_trip(tmp_path):
    prior = HeightPrior(building_height_mu=2.3, tree_crown_radius_m=3.5, low_vegetation_classes=[2])
    prior.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "height_prior.json").read_text())["_class_name"] == "HeightPrior"
    loaded = HeightPrior.from_pretrained(tmp_path)
    assert _public(loaded.config) == _public(prior.config)
    loaded.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again/height_prior.json").read_text() == (tmp_path / "height_prior.json").read_text()
    labels = _label_map()
    a = prior(labels, 0.5, np.random.default_rng(3))
    b = loaded(labels, 0.5, np.random.default_rng(3))
    assert np.array_equal(a, b, equal_nan=True)
    assert _public(HeightPrior.from_config(HeightPrior.load_config(tmp_path)).config) == _public(prior.config)
