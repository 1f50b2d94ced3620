"""Ingest: real rasters -> training tiles in shards + a manifest, resumable, with a split by source area.

The job is planned up front from the config alone: sources (sorted), their tile windows (row-major, the last row
and column shifted to end at the edge), and the shards (``tiles_per_shard`` consecutive tiles each). A shard whose
record exists is skipped on rerun; anything else in the shard folder is deleted and redone. The manifest is merged
from the records at the end, so a run killed at any moment and rerun gives the same manifest as one clean run.

Train/val split: tiles are grouped into areas (``area`` template, plus ``{block}``: the tile's block of
``area_block`` pixels); areas are ranked by sha256(split_seed:area) and the first ``val_fraction`` of them (at least
one when there are two or more) are validation. Neighbouring tiles of one area never straddle the split.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from affine import Affine

from synthgen.config import (
    OutputPaths,
    config_hash,
    config_to_dict,
    require_choice,
    require_name,
    require_positive,
    save_config,
)
from synthgen.engine.safety import check_finished, check_writable, shard_write_errors
from synthgen.errors import ConfigError, RasterError, SynthgenError, allowed
from synthgen.io.geotiff import COMPRESSIONS
from synthgen.io.manifest import merge_records, write_manifest
from synthgen.io.shards import RunInfo, ShardWriter, clean_unfinished, is_done, read_record
from synthgen.io.sources import (
    Grid,
    Source,
    fill_template,
    find_sources,
    read_source,
    sanitize_key,
    source_grid,
)
from synthgen.schema import load_scheme

OUTPUT_KEYS = ("out", "manifest", "workers", "root")


@dataclass
class IngestConfig(OutputPaths):
    """Everything an ingest run depends on; see ``synthgen/configs/ingest/*.yaml`` for one per real dataset."""

    name: str
    root: str
    sources: str
    image: str | None = None
    label: str | None = None
    height: str | None = None
    dsm: str | None = None
    dtm: str | None = None
    footprints: str | None = None
    footprint_class: int = 8
    scheme: str = "oem8"
    target_scheme: str = "oem8"
    bands: list[int] = field(default_factory=lambda: [1, 2, 3])
    tile_size: int = 256
    stride: int | None = None
    edge: str = "shift"
    scale: float = 1.0
    align: str = "none"
    area: str = "{path}"
    area_block: int | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    date_regex: str | None = None
    tiles_per_shard: int = 64
    min_labelled_fraction: float = 0.0
    compress: str = "zstd"
    gsd: float | None = None
    out: str = "data/{name}"
    manifest: str = "manifests/{name}.parquet"
    workers: int = 1

    def __post_init__(self):
        require_name(self, label="config 'name':")
        if self.tile_size < 8:
            raise ConfigError(f"config 'tile_size': {self.tile_size} is too small (at least 8 px)")
        if self.stride is not None and not 0 < self.stride:
            raise ConfigError(f"config 'stride': {self.stride} must be > 0")
        if not 0 < self.scale <= 4:
            raise ConfigError(f"config 'scale': {self.scale} must be in (0, 4]")
        if self.edge not in ("shift", "drop"):
            raise ConfigError(f"config 'edge': '{self.edge}' is not one of shift, drop")
        if self.align not in ("none", "first"):
            raise ConfigError(f"config 'align': '{self.align}' is not one of none, first")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"config 'val_fraction': {self.val_fraction} must be in [0, 1)")
        require_positive(self, ("tiles_per_shard",))
        require_choice(self, "compress", COMPRESSIONS)
        require_positive(self, ("workers",))
        if not 0 <= self.min_labelled_fraction <= 1:
            raise ConfigError(f"config 'min_labelled_fraction': {self.min_labelled_fraction} must be in [0, 1]")
        if self.date_regex is not None:
            try:
                if re.compile(self.date_regex).groups != 1:
                    raise ConfigError(f"config 'date_regex': '{self.date_regex}' needs exactly one group")
            except re.error as exc:
                raise ConfigError(f"config 'date_regex': '{self.date_regex}' is not a valid regex ({exc})") from None


@dataclass(frozen=True)
class TileWindow:
    """One planned tile: its source, top-left pixel on the source grid, key, area and split."""

    source: int
    row: int
    col: int
    key: str
    area: str
    split: str


@dataclass
class ShardPlan:
    """One shard to write: its path and its tiles."""

    index: int
    path: Path
    tiles: list[TileWindow]


@dataclass
class IngestPlan:
    """The whole job: sources, their common-or-own grids, and the shards."""

    config: IngestConfig
    sources: list[Source]
    grids: list[Grid]
    shards: list[ShardPlan]

    @property
    def num_tiles(self) -> int:
        """Number of planned tiles."""
        return sum(len(s.tiles) for s in self.shards)


def window_starts(length: int, tile: int, stride: int, edge: str = "shift") -> list[int]:
    """Tile offsets along one axis: every ``stride``, plus (edge 'shift') one ending at the edge if the last falls
    short; edge 'drop' leaves the remainder out."""
    starts = list(range(0, length - tile + 1, stride))
    if edge == "shift" and starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def assign_splits(areas: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """Deterministic split by area, balanced by tile count.

    ``areas`` has one entry per tile. Areas are ranked by sha256(seed:area); walking that order, an area goes to
    'val' while the val tile count stays within 1.25x the target share, until the share reaches 0.75x of it. At
    least one area is val (the first in rank order that fits, else the smallest) when there are two or more.
    """
    counts: dict[str, int] = {}
    for a in areas:
        counts[a] = counts.get(a, 0) + 1
    ranked = sorted(counts, key=lambda a: hashlib.sha256(f"{seed}:{a}".encode()).hexdigest())
    target = val_fraction * len(areas)
    val: set[str] = set()
    n_val = 0
    if val_fraction > 0 and len(ranked) >= 2:
        for area in ranked:
            if n_val >= 0.75 * target:
                break
            if n_val + counts[area] <= 1.25 * target and len(val) < len(ranked) - 1:
                val.add(area)
                n_val += counts[area]
        if not val:
            val.add(min(ranked, key=lambda a: (counts[a], ranked.index(a))))
    return {a: ("val" if a in val else "train") for a in ranked}


def make_plan(config: IngestConfig) -> IngestPlan:
    """Find the sources, their grids and tile windows, split them by area, and cut them into shards."""
    templates = {k: getattr(config, k) for k in ("image", "label", "height", "dsm", "dtm", "footprints")}
    if not any(templates[k] for k in ("image", "label", "height", "dsm")):
        raise ConfigError("config: give at least one of image, label, height or dsm (a template such as '{path}')")
    target = load_scheme(config.target_scheme)
    if config.label:
        load_scheme(config.scheme).mapping_to(target)
    if config.footprints and config.footprint_class not in target.codes:
        raise ConfigError(
            f"config 'footprint_class': {config.footprint_class} is not a code of '{target.name}' "
            f"(allowed: {allowed(target.codes)})"
        )
    sources = find_sources(Path(config.root), config.sources, templates)
    grids = [source_grid(s) for s in sources]
    if config.align == "first":
        if grids[0].crs is None:
            raise RasterError(f"{sources[0].rel}: align: first needs georeferenced sources, and this one has no CRS")
        grids = [grids[0]] * len(grids)
    tile, stride = config.tile_size, config.stride or config.tile_size
    windows: list[tuple[int, int, int, str]] = []
    for source, grid in zip(sources, grids, strict=True):
        scaled = grid.scaled(config.scale)
        if scaled.width < tile or scaled.height < tile:
            raise RasterError(
                f"{source.rel}: {scaled.width}x{scaled.height} px (after scale {config.scale}) is smaller than "
                f"tile_size {tile}"
            )
        for row in window_starts(scaled.height, tile, stride, config.edge):
            for col in window_starts(scaled.width, tile, stride, config.edge):
                fields = source.fields()
                if config.area_block:
                    fields["block"] = f"{row // config.area_block}-{col // config.area_block}"
                windows.append((source.index, row, col, fill_template(config.area, fields, "area")))
    splits = assign_splits([w[3] for w in windows], config.val_fraction, config.split_seed)
    tiles = [
        TileWindow(
            s,
            r,
            c,
            f"{config.name}_{sanitize_key(Path(sources[s].rel).with_suffix('').as_posix())}_y{r:05d}_x{c:05d}",
            area,
            splits[area],
        )
        for s, r, c, area in windows
    ]
    per = config.tiles_per_shard
    shards = [
        ShardPlan(i, config.out_dir / f"{config.name}-{i:05d}.tar", tiles[i * per : (i + 1) * per])
        for i in range(math.ceil(len(tiles) / per))
    ]
    return IngestPlan(config, sources, grids, shards)


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


def write_shard(plan: IngestPlan, shard: ShardPlan, run: RunInfo) -> dict:
    """Write one planned shard (tar, then record) and return its record."""
    config = plan.config
    target = load_scheme(config.target_scheme)
    shard.path.parent.mkdir(parents=True, exist_ok=True)
    dropped = 0
    loaded: dict[int, object] = {}
    with shard_write_errors(shard.path), ShardWriter(shard.path, run, target, config.compress) as writer:
        for tile in shard.tiles:
            source = plan.sources[tile.source]
            if tile.source not in loaded:
                loaded.clear()
                loaded[tile.source] = read_source(
                    source,
                    plan.grids[tile.source],
                    config.scale,
                    config.bands,
                    load_scheme(config.scheme),
                    target,
                    config.footprint_class,
                    config.gsd,
                )
            arrays = loaded[tile.source]
            sample = _tile_sample(config, source, arrays, tile)
            if _labelled_fraction(sample, target.nodata) < config.min_labelled_fraction:
                dropped += 1
                continue
            writer.write(sample)
    return {"shard": shard.path.name, "written": len(writer.rows), "dropped": dropped}


def _write_shard_job(args) -> dict:
    plan, index, run = args
    return write_shard(plan, plan.shards[index], run)


def _check_existing(plan: IngestPlan, run: RunInfo) -> None:
    for shard in plan.shards:
        if is_done(shard.path):
            rows = read_record(shard.path)["rows"]
            if rows and rows[0]["config_hash"] != run.config_hash:
                raise ConfigError(
                    f"{plan.config.out_dir}: holds shards of another config (hash {rows[0]['config_hash'][:12]}, "
                    f"this run {run.config_hash[:12]}); use another 'out' or delete that folder"
                )
            return


def run_ingest(
    config: IngestConfig, progress: Callable[[int], None] | None = None, plan: IngestPlan | None = None
) -> dict:
    """Run (or resume) an ingest job and write its manifest; returns a summary of what was done.

    ``plan`` is the job's ``make_plan(config)`` when the caller has already made it (to size a progress bar).
    """
    plan = plan or make_plan(config)
    run = RunInfo(generator="ingest", scheme=config.target_scheme, config_hash=config_hash(config, exclude=OUTPUT_KEYS))
    out_dir = config.out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        cleaned = clean_unfinished(out_dir)
        config.manifest_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SynthgenError(f"{out_dir}: cannot write the output folder ({exc.strerror})") from None
    for folder in dict.fromkeys((out_dir, config.manifest_path.parent)):
        check_writable(folder)
    _check_existing(plan, run)
    for shard in plan.shards:
        if is_done(shard.path):
            check_finished(shard.path)
    todo = [s.index for s in plan.shards if not is_done(s.path)]
    skipped_tiles = sum(len(plan.shards[i].tiles) for i in range(len(plan.shards)) if i not in set(todo))
    if progress and skipped_tiles:
        progress(skipped_tiles)
    jobs = [(plan, i, run) for i in todo]
    if config.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(config.workers) as pool:
            for _, i in zip(pool.map(_write_shard_job, jobs), todo, strict=True):
                if progress:
                    progress(len(plan.shards[i].tiles))
    else:
        for job in jobs:
            _write_shard_job(job)
            if progress:
                progress(len(plan.shards[job[1]].tiles))
    rows = merge_records([s.path for s in plan.shards], config.manifest_path)
    resolved = config_to_dict(config)
    write_manifest(rows, config.manifest_path, run_config={**resolved, "config_hash": run.config_hash})
    save_config(config, config.manifest_path.with_name(config.manifest_path.stem + ".config.yaml"))
    save_config(config, out_dir / "config.yaml")
    return {
        "manifest": str(config.manifest_path),
        "out": str(out_dir),
        "sources": len(plan.sources),
        "shards": len(plan.shards),
        "shards_written": len(todo),
        "shards_skipped": len(plan.shards) - len(todo),
        "unfinished_removed": len(cleaned),
        "tiles": len(rows),
        "tiles_dropped": plan.num_tiles - len(rows),
        "splits": {s: sum(1 for r in rows if r["split"] == s) for s in sorted({r["split"] for r in rows})},
    }
