"""A stand-in generator for engine tests: seeded numpy tiles (label, height, rgb) instead of a model, so jobs of a
few shards run in well under a second."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from synthgen.engine.job import ShardJob, ShardTask, tile_seed
from synthgen.io.geotiff import synthetic_georef
from synthgen.io.shards import RunInfo
from synthgen.schema import load_scheme

SIZE = 16


def make_job(root: Path, n: int = 7, per: int = 2, name: str = "t") -> ShardJob:
    """A job of ``n`` tiles in shards of ``per`` under ``root/out``, manifest ``root/m.parquet``."""
    run = RunInfo(generator="test", scheme="oem8", config_hash="c" * 64, weights_hash="w" * 64)
    return ShardJob(
        name, n, per, root / "out", root / "m.parquet", run, load_scheme("oem8"), generated=("rgb", "label", "height")
    )


def sample(job: ShardJob, index: int, float_rgb: bool = False) -> dict:
    """Tile ``index``: seeded label, height and rgb (uint8, or float in [0, 1] like diffusers' np output)."""
    rng = np.random.default_rng(tile_seed(0, index))
    rgb = rng.random((SIZE, SIZE, 3), dtype=np.float32)
    georef = synthetic_georef(index, SIZE, 1.0)
    return {
        "key": job.key(index),
        "label": rng.integers(1, 9, (SIZE, SIZE), dtype=np.uint8),
        "height": rng.random((SIZE, SIZE), dtype=np.float32) * 20,
        "rgb": rgb if float_rgb else (rgb * 255).astype(np.uint8),
        "crs": georef.crs,
        "transform": georef.transform,
        "synthetic_georef": True,
        "seed": tile_seed(0, index),
        "meta": {"split": "", "source": "test", "tile_index": index},
    }


def render(job: ShardJob, batch: int = 3, float_rgb: bool = False):
    """A ``render(task)`` for ``run_job``: the task's tiles in batches of ``batch``."""

    def _render(task: ShardTask) -> Iterator[list[dict]]:
        for start in range(task.indices.start, task.indices.stop, batch):
            stop = min(start + batch, task.indices.stop)
            yield [sample(job, i, float_rgb) for i in range(start, stop)]

    return _render


def files(folder: Path) -> dict[str, bytes]:
    """Every file of a folder by name, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
