"""``synthgen dataset``: one config drives landcover -> rgb (ControlNet, SPADE) -> climate -> validate into one folder,
and ends with a report.

Layout of ``datasets/<name>/`` (``out`` in the config)::

    dataset.yaml                    the resolved config
    <stage>/shards/*.tar            the stage's shards (and the command's config.yaml)
    <stage>/manifest.parquet        its manifest; <stage>/stage.json: done-marker with counts and timings
    rgb-*/cond.parquet              the label maps an RGB stage renders when its section sets ``tiles``
    filter/rgb-*.parquet            the RGB tiles the label-consistency filter keeps (``.scored.parquet``: all, scored)
    validate/                       synthgen validate's report.json / report.md / plots / models
    previews/<stage>.png            a contact sheet per generator stage
    report.json, report.md          counts, timings, models, previews, the validation table
    catalog.json, <stage>/collection.json, <stage>/items/   the STAC catalog (``synthgen stac``)
    README.md                       the data card (``synthgen card``)

1. Every stage is checked before anything runs (``dataset.stages.check_stages``): section keys, models (a missing
   embedded default names its ``make weights-*`` target), inputs.
2. Stages run in data-flow order through the same functions as their commands (``run_landcover``, ``run_rgb``,
   ``run_climate``, ``filter_manifest``, ``run_validate``). A stage whose ``stage.json`` matches what it would run
   now is skipped; otherwise it runs, and its command resumes from the shards already written (a killed run continues).
3. The report is rewritten after every stage, so a run that stops early still says what it made.
4. Last, the folder is published (``dataset.publish``): a STAC catalog (``catalog.json``) and a data card
   (``README.md``), with ``loose_tiles`` every tile as a loose COG too (``<stage>/tiles/``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from synthgen.config import save_config
from synthgen.dataset.config import DatasetConfig, stage_paths
from synthgen.dataset.filter import run_filter_stage
from synthgen.dataset.manifests import first_tiles
from synthgen.dataset.publish import publish_dataset
from synthgen.dataset.report import model_label, write_dataset_report
from synthgen.dataset.stages import (
    GENERATORS,
    RGB_STAGES,
    check_stages,
    expected_tiles,
    generator_config,
)
from synthgen.dataset.state import fingerprint, is_complete, read_state, tiles_on_disk, write_state
from synthgen.dataset.validate import run_validate_stage
from synthgen.jobs.climate import DEFAULT_CONTROLNET

Bars = Callable[[str, int | None, str], Callable[[int], None]]
Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def write_preview(config: DatasetConfig, stage: str, manifest: Path, refresh: bool) -> str | None:
    """The stage's contact sheet (``previews/<stage>.png``, ``preview_n`` tiles), made when the stage ran or the
    sheet is missing; its path relative to the dataset folder, or None with ``preview_n`` 0."""
    from synthgen.evaluation.preview import write_contact_sheet

    if config.preview_n == 0:
        return None
    png = config.root / "previews" / f"{stage}.png"
    if refresh or not png.is_file():
        write_contact_sheet(manifest, png, n=config.preview_n, seed=config.seed)
    return _relative(png, config.root)


def run_generator_stage(config: DatasetConfig, stage: str, bars: Bars | None, log: Log) -> dict:
    """Run (or skip, or resume) one generator stage; returns its record for the report (also its ``stage.json``)."""
    spec, paths = GENERATORS[stage], stage_paths(config, stage)
    generator, extras = generator_config(config, stage)
    inputs = []
    if stage in RGB_STAGES:
        if extras["tiles"] is not None:
            first_tiles(Path(generator.cond), paths.cond, extras["tiles"])
            generator, _ = generator_config(config, stage, cond=paths.cond)
        inputs.append(Path(generator.cond))
    models = [generator.model or spec.weights]
    if getattr(generator, "control", None):
        inputs.append(Path(generator.control))
        models.append(generator.controlnet or DEFAULT_CONTROLNET)
    fp = fingerprint(generator, models, inputs)
    state = read_state(paths.state)
    if is_complete(state, fp, paths.manifest):
        log(f"{stage}: complete ({state['tiles']} tiles in {state['manifest']}), skipped")
        preview = write_preview(config, stage, paths.manifest, refresh=False)
        return {**state, "status": "skipped", "preview": preview}
    before = tiles_on_disk(paths.shards)
    log(f"{stage}: resuming ({before} tiles in finished shards)" if before else f"{stage}: running")
    progress = bars(stage, expected_tiles(stage, generator), "tile") if bars else None
    start = time.perf_counter()
    try:
        summary = spec.run(generator, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    wall = time.perf_counter() - start
    made = summary["tiles"] - before
    record = {
        "stage": stage,
        "status": "resumed" if before else "done",
        "tiles": summary["tiles"],
        "tiles_made": made,
        "wall_s": round(wall, 2),
        "tiles_per_s": round(made / wall, 3) if wall > 0 else None,
        "model": model_label(generator.model, spec.weights),
        "weights_hash": summary.get("weights_hash", ""),
        "manifest": _relative(paths.manifest, config.root),
        "fingerprint": fp,
        "summary": {k: v for k, v in summary.items() if isinstance(v, str | int | float | type(None))},
    }
    write_state(paths.state, record)
    rate = f"{record['tiles_per_s']:.2f} tiles/s" if record["tiles_per_s"] is not None else "–"
    log(f"{stage}: {record['tiles']} tiles ({made} made now) in {wall:.1f} s, {rate} -> {paths.manifest}")
    return {**record, "preview": write_preview(config, stage, paths.manifest, refresh=True)}


def run_dataset(config: DatasetConfig, bars: Bars | None = None, log: Log | None = None) -> dict:
    """Check every stage, run them in order into ``config.root`` (skipping complete ones), write the report after
    each; returns the report dict. ``bars(desc, total, unit)`` makes a progress callback with ``close()``;
    ``log`` gets one line per stage."""
    log = log or _quiet
    check_stages(config)
    config.root.mkdir(parents=True, exist_ok=True)
    save_config(config, config.root / "dataset.yaml")
    started, records = time.time(), []
    for stage in config.stages:
        if stage == "validate":
            records.append(run_validate_stage(config, bars, log))
        elif stage == "filter":
            records.append(run_filter_stage(config, bars, log))
        else:
            records.append(run_generator_stage(config, stage, bars, log))
        write_dataset_report(config, records, started)
    report = write_dataset_report(config, records, started, finished=True)
    publish_dataset(config.root, extract=config.loose_tiles, log=log)
    return report
