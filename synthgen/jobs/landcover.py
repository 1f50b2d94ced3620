"""The ``synthgen landcover`` job: N label + height tiles from a LandCoverPipeline into shards and a manifest.

The job runs on the shard engine of ``synthgen.engine.job``: tile ``i`` (0..n-1) has key ``<name>_<i:07d>``, seed
``tile_seed(seed, i)`` and the synthetic georeference of index ``i``; shard ``j`` holds tiles
``j*tiles_per_shard ..``. Every tile's noise comes from its own ``torch.Generator``, so the batch size does not
change a tile. As in ingest, a shard whose record exists is skipped on rerun, anything unfinished is deleted and
redone, and the manifest is merged from the records at the end. Generated labels and heights are checked per tile
(NaN refused, constant flagged). Ranks, writer processes, device placement and ``--batch-size auto`` come from
``synthgen.engine.ranks`` and ``synthgen.jobs.acceleration``, as for every generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from synthgen.config import (
    GSD_MAX_M,
    GSD_MIN_M,
    OutputPaths,
    config_hash,
    config_to_dict,
    require_between,
    require_choice,
    require_name,
    require_positive,
)
from synthgen.engine.job import ShardJob, ShardTask, run_job, tile_seed
from synthgen.engine.options import RUNTIME_KEYS, JobOptions
from synthgen.engine.plan import check_plan_size, check_tile_side
from synthgen.engine.ranks import Rank, resolve_rank
from synthgen.engine.weights import weights_hash
from synthgen.errors import ConfigError
from synthgen.io.geotiff import COMPRESSIONS, synthetic_georef
from synthgen.io.shards import RunInfo
from synthgen.jobs.acceleration import (
    compile_denoisers,
    default_writers,
    parse_batch_size,
    place_pipeline,
    rank_device,
    resolve_batch_size,
)
from synthgen.pipelines.loading import recorded_model_id
from synthgen.pipelines.registry import PIPELINES, default_model
from synthgen.schema import load_scheme

__all__ = [
    "LandCoverGenerateConfig",
    "load_landcover_pipeline",
    "model_dir",
    "run_landcover",
    "tile_seed",
    "weights_hash",
]

DEFAULT_WEIGHTS = PIPELINES["landcover"].default_weights
NOT_IN_HASH = ("out", "manifest", "model", "batch_size", "scheme", *RUNTIME_KEYS)
CPU_BATCH_SIZE = 32


@dataclass
class LandCoverGenerateConfig(OutputPaths, JobOptions):
    """What a generation run depends on; ``model`` None means the embedded default in ``synthgen/weights/``.

    ``scheme``, when given, must be the model's class scheme: a check, not a conversion. ``batch_size`` is a number
    or ``auto``; the ``JobOptions`` say how the job runs (ranks, writers, compile).
    """

    n: int
    model: str | None = None
    scheme: str | None = None
    size: int = 128
    steps: int = 20
    batch_size: int | str = CPU_BATCH_SIZE
    seed: int = 0
    gsd: float = 1.0
    name: str = "landcover"
    tiles_per_shard: int = 256
    compress: str = "zstd"
    out: str = "data/{name}"
    manifest: str = "manifests/{name}.parquet"

    def __post_init__(self):
        require_positive(self, ("n", "size", "steps", "tiles_per_shard"), flags=True)
        check_plan_size(self.n, self.tiles_per_shard, f"--n {self.n}")
        check_tile_side(self.size)
        self.batch_size = parse_batch_size(self.batch_size)
        self.check_job_options()
        require_between(self, ("gsd",), GSD_MIN_M, GSD_MAX_M, unit="metres", flags=True)
        require_name(self)
        self.check_output_paths()
        require_choice(self, "compress", COMPRESSIONS, label="compress")


def model_dir(model: str | None) -> Path:
    """The model folder to use: the given one, else the embedded default (a one-line error if not trained)."""
    return Path(model) if model is not None else default_model("landcover", "--model DIR")


def load_landcover_pipeline(folder: Path, device: str | None = None):
    """Load a LandCoverPipeline on ``device`` (default: the first GPU, else CPU), with its progress bar off."""
    from synthgen.pipelines.landcover import LandCoverPipeline

    pipe = LandCoverPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return place_pipeline(pipe, device or rank_device(Rank()))


def _render(
    pipe, config: LandCoverGenerateConfig, batch_size: int, job: ShardJob, run: RunInfo, task: ShardTask
) -> Iterator[list]:
    """The tiles of one shard, a batch at a time, as sample dicts for ``run_job``."""
    for start in range(task.indices.start, task.indices.stop, batch_size):
        batch = range(start, min(start + batch_size, task.indices.stop))
        seeds = [tile_seed(config.seed, i) for i in batch]
        out = pipe(
            batch_size=len(batch),
            size=config.size,
            num_inference_steps=config.steps,
            generator=[torch.Generator().manual_seed(s) for s in seeds],
            gsd=config.gsd,
        )
        samples = []
        for j, index in enumerate(batch):
            georef = synthetic_georef(index, config.size, config.gsd)
            samples.append(
                {
                    "key": job.key(index),
                    "label": out.labels[j],
                    "height": out.heights[j],
                    "crs": georef.crs,
                    "transform": georef.transform,
                    "synthetic_georef": True,
                    "seed": seeds[j],
                    "meta": {
                        "split": "",
                        "source": run.model_id,
                        "tile_index": index,
                        "gsd": config.gsd,
                        "steps": config.steps,
                    },
                }
            )
        yield samples


def run_landcover(config: LandCoverGenerateConfig, progress: Callable[[int], None] | None = None) -> dict:
    """Run (or resume) a generation job and write its manifest; returns a summary of what was done."""
    folder = model_dir(config.model)
    rank = resolve_rank(config.shard_index, config.num_shards)
    device = rank_device(rank)
    pipe = load_landcover_pipeline(folder, device)
    pipe.check_inputs(1, config.size, config.steps, None, config.gsd)
    if config.scheme is not None and load_scheme(config.scheme).name != pipe.config.scheme:
        raise ConfigError(
            f"--scheme '{config.scheme}': the model {folder} generates '{pipe.config.scheme}' labels "
            f"(allowed: {pipe.config.scheme}, or train a model on that scheme)"
        )
    run = RunInfo(
        generator="landcover",
        scheme=pipe.config.scheme,
        model_id=recorded_model_id(config.model, DEFAULT_WEIGHTS),
        weights_hash=weights_hash(folder),
        config_hash=config_hash(config, exclude=NOT_IN_HASH),
    )
    job = ShardJob(
        name=config.name,
        n=config.n,
        tiles_per_shard=config.tiles_per_shard,
        out_dir=config.out_dir,
        manifest_path=config.manifest_path,
        run=run,
        scheme=load_scheme(pipe.config.scheme),
        compress=config.compress,
        generated=("label", "height"),
    )
    resolved = {**config_to_dict(config), "model": str(folder)}
    probe = lambda b: pipe(batch_size=b, size=config.size, num_inference_steps=1, gsd=config.gsd)  # noqa: E731
    batch_size = resolve_batch_size(
        config.batch_size, device, probe, CPU_BATCH_SIZE, config.tiles_per_shard, config.size
    )
    if config.compile:
        compile_denoisers(pipe)
    summary = run_job(
        job,
        lambda task: _render(pipe, config, batch_size, job, run, task),
        run_config={**resolved, "config_hash": run.config_hash, "weights_hash": run.weights_hash},
        config=config,
        progress=progress,
        rank=rank,
        writers=default_writers(device) if config.writers is None else config.writers,
    )
    return {**summary, "model": str(folder), "weights_hash": run.weights_hash, "batch_size": batch_size}
