"""The ``synthgen ingest`` job: real rasters -> training tiles in shards + a manifest, resumable, split by area.

The job is planned up front from the config alone (``synthgen.jobs.ingest_plan``: sources, tile windows, keys and
the split by area) and runs on the shard engine of ``synthgen.engine.job``, like every generator: tile ``i`` of the
engine's job is the plan's ``i``-th window, shard ``j`` (``<out>/<name>-<j:05d>.tar``) holds tiles
``j*tiles_per_shard ..``. A shard whose record exists is skipped on rerun, anything unfinished is deleted and
redone, and the manifest is merged from the records at the end, so a run killed at any moment and rerun gives the
same manifest as one clean run (``synthgen manifest rebuild <out>`` merges the same one). Ingest supplies the
plan, ``render_shard`` (a shard's tiles cut from their sources, less those under ``min_labelled_fraction``) and its
summary; ``workers`` > 1 writes that many shards at once in the engine's writer processes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from affine import Affine

from synthgen.config import config_hash, config_to_dict
from synthgen.engine.job import ShardJob, ShardTask, run_job
from synthgen.errors import ConfigError
from synthgen.io.shards import RunInfo
from synthgen.io.sources import Source, read_source
from synthgen.jobs.ingest_plan import (
    IngestConfig,
    IngestPlan,
    TileWindow,
    assign_splits,
    make_plan,
    window_starts,
)
from synthgen.schema import load_scheme

__all__ = [
    "IngestConfig",
    "IngestPlan",
    "TileWindow",
    "assign_splits",
    "make_plan",
    "render_shard",
    "run_ingest",
    "window_starts",
]

OUTPUT_KEYS = ("out", "manifest", "workers", "root")
SUMMARY_ORDER = (
    "manifest",
    "out",
    "sources",
    "shards",
    "shards_written",
    "shards_skipped",
    "unfinished_removed",
    "tiles",
    "tiles_dropped",
    "splits",
)


def _tile_sample(config: IngestConfig, source: Source, arrays, tile: TileWindow) -> dict:
    size = config.tile_size
    window = (slice(tile.row, tile.row + size), slice(tile.col, tile.col + size))
    meta = {
        "split": tile.split,
        "source": source.rel,
        "area": tile.area,
        "window": [tile.row, tile.col, size, size],
        "dataset": config.name,
    }
    if config.date_regex:
        match = re.search(config.date_regex, Path(source.rel).name)
        if match is None:
            raise ConfigError(f"{source.rel}: date_regex '{config.date_regex}' does not match the file name")
        d = match.group(1)
        meta["date"] = f"{d[:4]}-{d[4:6]}-{d[6:8]}" if re.fullmatch(r"\d{8}", d) else d
    return {
        "key": tile.key,
        "rgb": None if arrays.rgb is None else arrays.rgb[window],
        "label": None if arrays.label is None else arrays.label[window],
        "height": None if arrays.height is None else arrays.height[window],
        "crs": arrays.grid.crs.to_string(),
        "transform": arrays.grid.transform @ Affine.translation(tile.col, tile.row),
        "synthetic_georef": arrays.synthetic_georef,
        "meta": meta,
    }


def _labelled_fraction(sample: dict, nodata: int | None) -> float:
    label = sample["label"]
    if label is None or nodata is None:
        return 1.0
    return float((label != nodata).mean())


def render_shard(plan: IngestPlan, task: ShardTask) -> Iterator[list[dict]]:
    """The tiles of one shard as sample dicts, one at a time, for ``run_job``: each source is read once for its run
    of consecutive tiles, and a tile whose labelled fraction is under ``min_labelled_fraction`` is left out."""
    config = plan.config
    scheme, target = load_scheme(config.scheme), load_scheme(config.target_scheme)
    arrays, current = None, None
    for index in task.indices:
        tile = plan.tiles[index]
        source = plan.sources[tile.source]
        if tile.source != current:
            arrays = None  # the last source's rasters go before the next one is read
            arrays = read_source(
                source,
                plan.grids[tile.source],
                config.scale,
                config.bands,
                scheme,
                target,
                config.footprint_class,
                config.gsd,
                config.bit_depth,
            )
            current = tile.source
        sample = _tile_sample(config, source, arrays, tile)
        if _labelled_fraction(sample, target.nodata) >= config.min_labelled_fraction:
            yield [sample]


def run_ingest(
    config: IngestConfig, progress: Callable[[int], None] | None = None, plan: IngestPlan | None = None
) -> dict:
    """Run (or resume) an ingest job and write its manifest; returns a summary of what was done.

    ``plan`` is the job's ``make_plan(config)`` when the caller has already made it (to size a progress bar).
    """
    plan = plan or make_plan(config)
    run = RunInfo(generator="ingest", scheme=config.target_scheme, config_hash=config_hash(config, exclude=OUTPUT_KEYS))
    job = ShardJob(
        name=config.name,
        n=plan.num_tiles,
        tiles_per_shard=config.tiles_per_shard,
        out_dir=config.out_dir,
        manifest_path=config.manifest_path,
        run=run,
        scheme=load_scheme(config.target_scheme),
        compress=config.compress,
        keys=[tile.key for tile in plan.tiles],
        drops_tiles=config.min_labelled_fraction > 0,
    )
    manifest = config.manifest_path
    summary = run_job(
        job,
        partial(render_shard, plan),
        run_config={**config_to_dict(config), "config_hash": run.config_hash},
        config=config,
        progress=progress,
        shard_workers=config.workers,
        config_paths=(manifest.with_name(manifest.stem + ".config.yaml"), config.out_dir / "config.yaml"),
        summarize=lambda rows: {
            "tiles_dropped": plan.num_tiles - len(rows),
            "splits": {s: sum(1 for r in rows if r["split"] == s) for s in sorted({r["split"] for r in rows})},
        },
    )
    summary["sources"] = len(plan.sources)
    return {**{k: summary[k] for k in SUMMARY_ORDER if k in summary}, **summary}
