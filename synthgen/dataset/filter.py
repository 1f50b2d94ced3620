"""The filter stage of ``synthgen dataset``: the label-consistency filter (``synthgen filter``) over each RGB stage.

Each RGB stage's tiles are scored by a segmentation model trained on real tiles (``filter.model``; null: the
embedded default, ``make weights-label-filter``); ``filter/<stage>.scored.parquet`` holds every tile with its score
and ``filter/<stage>.parquet`` the tiles at or above ``filter.threshold``. The validate stage then trains on each
filtered set beside its full set (``<stage>-filtered``), so the report shows what the filter changes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from synthgen.config import build_config
from synthgen.dataset.config import RGB_STAGES, DatasetConfig, stage_paths
from synthgen.dataset.state import fingerprint, read_state, write_state
from synthgen.errors import ConfigError, allowed
from synthgen.validation.label_filter import DEFAULT_FILTER_MODEL, filter_manifest, filter_model


@dataclass
class FilterStageConfig:
    """The ``filter`` section: the scoring model (null: the embedded default), the per-tile mIoU a tile needs to be
    kept, the RGB stages to filter (null: those that run) and tiles per forward pass."""

    model: str | None = None
    threshold: float = 0.3
    sets: list[str] | None = None
    batch_size: int = 16

    def __post_init__(self):
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"config 'filter.threshold': {self.threshold} must be in [0, 1] (a per-tile mIoU)")
        if self.batch_size < 1:
            raise ConfigError(f"config 'filter.batch_size': {self.batch_size} must be >= 1")
        if isinstance(self.sets, str):
            self.sets = [s for s in self.sets.split(",") if s]
        bad = [s for s in self.sets or [] if s not in RGB_STAGES]
        if bad:
            raise ConfigError(
                f"config 'filter.sets': {allowed(bad)} cannot be filtered (allowed: {allowed(RGB_STAGES)})"
            )


def filter_settings(config: DatasetConfig) -> FilterStageConfig:
    """The checked ``filter`` section, its sets resolved (one line on a bad key or value, or on no set to filter)."""
    values = config.section("filter")
    known = {f.name for f in dataclasses.fields(FilterStageConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config 'filter': unknown key(s) {allowed(unknown)} (allowed: {allowed(known)})")
    settings = build_config(FilterStageConfig, values, "config 'filter'")
    if settings.sets is None:
        settings.sets = [s for s in RGB_STAGES if s in config.stages]
    if not settings.sets:
        raise ConfigError(
            "stage 'filter' scores generated RGB tiles: add rgb-controlnet or rgb-spade to 'stages' "
            "(or set filter.sets)"
        )
    filter_model(settings.model, "config 'filter.model'")
    return settings


def filter_paths(config: DatasetConfig, stage: str) -> tuple[Path, Path]:
    """(filtered, scored) manifests of an RGB stage under ``<dataset>/filter/``."""
    folder = stage_paths(config, "filter").dir
    return folder / f"{stage}.parquet", folder / f"{stage}.scored.parquet"


def filtered_sets(config: DatasetConfig) -> dict[str, Path]:
    """``{<stage>-filtered: filtered manifest}`` of the RGB stages the filter stage filters; empty without it."""
    if "filter" not in config.stages:
        return {}
    return {f"{s}-filtered": filter_paths(config, s)[0] for s in filter_settings(config).sets}


def run_filter_stage(config: DatasetConfig, bars, log) -> dict:
    """Run (or skip) the filter stage; returns its record for the report (also its ``stage.json``)."""
    settings = filter_settings(config)
    model = Path(settings.model) if settings.model else DEFAULT_FILTER_MODEL
    paths = stage_paths(config, "filter")
    inputs = [stage_paths(config, s).manifest for s in settings.sets]
    absent = [p for p in inputs if not p.is_file()]
    if absent:
        raise ConfigError(
            f"stage 'filter': no manifest {absent[0]}: add its stage to 'stages' or leave it out of filter.sets"
        )
    fp = fingerprint(settings, [model], inputs)
    state = read_state(paths.state)
    outputs = [p for s in settings.sets for p in filter_paths(config, s)]
    if state and state.get("fingerprint") == fp and all(p.is_file() for p in outputs):
        log(f"filter: complete ({state['kept']} of {state['tiles']} tiles kept), skipped")
        return {**state, "status": "skipped"}
    start, sets = time.perf_counter(), {}
    for stage, manifest in zip(settings.sets, inputs, strict=True):
        out, scored = filter_paths(config, stage)
        progress = bars(f"filter {stage}", None, "tile") if bars else None
        try:
            summary = filter_manifest(manifest, model, settings.threshold, out, scored, settings.batch_size, progress)
        finally:
            if progress is not None:
                progress.close()
        sets[stage] = {k: summary[k] for k in ("tiles", "kept", "score_p10_p50_p90")}
        sets[stage]["filtered"] = out.relative_to(config.root).as_posix()
        log(f"filter: {stage}: kept {summary['kept']} of {summary['tiles']} tiles (score >= {settings.threshold})")
    wall = time.perf_counter() - start
    tiles = sum(s["tiles"] for s in sets.values())
    record = {
        "stage": "filter",
        "status": "done",
        "tiles": tiles,
        "kept": sum(s["kept"] for s in sets.values()),
        "wall_s": round(wall, 2),
        "tiles_per_s": round(tiles / wall, 3) if wall > 0 else None,
        "model": str(settings.model) if settings.model else f"synthgen/weights/{model.name} (embedded default)",
        "threshold": settings.threshold,
        "sets": sets,
        "manifest": "filter/",
        "fingerprint": fp,
    }
    write_state(paths.state, record)
    return record
