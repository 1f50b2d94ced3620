"""The ingest job's config and plan, made up front from the config alone: sources (sorted), their tile windows
(row-major, the last row and column shifted to end at the edge), each tile's key, area and split.

Train/val split: tiles are grouped into areas (``area`` template, plus ``{block}``: the tile's block of
``area_block`` pixels); areas are ranked by sha256(split_seed:area) and the first ``val_fraction`` of them (at least
one when there are two or more) are validation. Neighbouring tiles of one area never straddle the split.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from synthgen.config import (
    GSD_MAX_M,
    GSD_MIN_M,
    OutputPaths,
    require_between,
    require_choice,
    require_name,
    require_positive,
)
from synthgen.engine.plan import check_tile_side
from synthgen.errors import ConfigError, RasterError, allowed
from synthgen.io.geotiff import COMPRESSIONS
from synthgen.io.sources import (
    Grid,
    Source,
    check_source_files,
    fill_template,
    find_sources,
    sanitize_key,
    source_grid,
)
from synthgen.schema import load_scheme

__all__ = ["IngestConfig", "IngestPlan", "TileWindow", "assign_splits", "make_plan", "window_starts"]


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
    bit_depth: int | None = None
    out: str = "data/{name}"
    manifest: str = "manifests/{name}.parquet"
    workers: int = 1

    def __post_init__(self):
        require_name(self, label="config 'name':")
        self.check_output_paths()
        if self.tile_size < 8:
            raise ConfigError(f"config 'tile_size': {self.tile_size} is too small (at least 8 px)")
        check_tile_side(self.tile_size, "config 'tile_size':")
        if self.gsd is not None:
            require_between(self, ("gsd",), GSD_MIN_M, GSD_MAX_M, unit="metres")
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
        if self.bit_depth is not None and not 1 <= self.bit_depth <= 16:
            raise ConfigError(f"config 'bit_depth': {self.bit_depth} must be 1..16 (bits per sample of the images)")
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
class IngestPlan:
    """The whole job: sources, their common-or-own grids, and every tile, in order (the engine cuts them into
    shards of ``tiles_per_shard``: tile ``i`` of the engine's job is ``tiles[i]``)."""

    config: IngestConfig
    sources: list[Source]
    grids: list[Grid]
    tiles: list[TileWindow]

    @property
    def num_tiles(self) -> int:
        """Number of planned tiles."""
        return len(self.tiles)


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
    """Find the sources (refusing image dtypes and label files that cannot be read exactly), their grids and tile
    windows, and split them by area."""
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
    for source in sources:
        check_source_files(source, config.bit_depth)
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
    return IngestPlan(config, sources, grids, tiles)
