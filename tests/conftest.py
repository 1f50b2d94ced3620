"""Shared fixtures: the seeded fixture rasters (written once per session) and ingest configs over them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.make_fixtures import make_fixtures

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    """Folder of seeded fixture rasters (see tests/data/make_fixtures.py)."""
    return make_fixtures(tmp_path_factory.mktemp("fixtures"))


def scene_config_values(fixtures_dir: Path, out: Path) -> dict:
    """Ingest config values for the georeferenced 'scene' fixture, writing under ``out``."""
    return {
        "name": "scene",
        "root": str(fixtures_dir / "scene"),
        "sources": "*/images/*.tif",
        "image": "{path}",
        "label": "{parent}/labels/{stem}.tif",
        "scheme": "isprs",
        "tile_size": 32,
        "area": "{parent}",
        "val_fraction": 0.3,
        "tiles_per_shard": 4,
        "out": str(out / "out" / "{name}"),
        "manifest": str(out / "manifests" / "{name}.parquet"),
    }


@pytest.fixture
def scene_config(fixtures_dir, tmp_path) -> dict:
    """Ingest config values for the georeferenced 'scene' fixture, writing into tmp_path."""
    return scene_config_values(fixtures_dir, tmp_path)
