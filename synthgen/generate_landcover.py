"""The ``synthgen landcover`` job: N label + height tiles from a LandCoverPipeline into shards and a manifest.

The job runs on the shard engine of ``synthgen.jobs``: tile ``i`` (0..n-1) has key ``<name>_<i:07d>``, seed
``tile_seed(seed, i)`` and the synthetic georeference of index ``i``; shard ``j`` holds tiles
``j*tiles_per_shard ..``. Every tile's noise comes from its own ``torch.Generator``, so the batch size does not
change a tile. As in ingest, a shard whose record exists is skipped on rerun, anything unfinished is deleted and
redone, and the manifest is merged from the records at the end. Generated labels and heights are checked per tile
(NaN refused, constant flagged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from synthgen.config import (
    OutputPaths,
    config_hash,
    config_to_dict,
    require_above_zero,
    require_choice,
    require_name,
    require_positive,
)
from synthgen.errors import ConfigError
from synthgen.io.geotiff import COMPRESSIONS, synthetic_georef
from synthgen.io.shards import RunInfo
from synthgen.jobs import ShardJob, ShardTask, run_job, tile_seed, weights_hash
from synthgen.pipelines.loading import recorded_model_id
from synthgen.schema import load_scheme

__all__ = [
    "LandCoverGenerateConfig",
    "load_landcover_pipeline",
    "model_dir",
    "run_landcover",
    "tile_seed",
    "weights_hash",
]

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "landcover"
NOT_IN_HASH = ("out", "manifest", "model", "batch_size", "scheme")


@dataclass
class LandCoverGenerateConfig(OutputPaths):
    """What a generation run depends on; ``model`` None means the embedded default in ``synthgen/weights/``.

    ``scheme``, when given, must be the model's class scheme: a check, not a conversion.
    """

    n: int
    model: str | None = None
    scheme: str | None = None
    size: int = 128
    steps: int = 20
    batch_size: int = 32
    seed: int = 0
    gsd: float = 1.0
    name: str = "landcover"
    tiles_per_shard: int = 256
    compress: str = "zstd"
    out: str = "data/{name}"
    manifest: str = "manifests/{name}.parquet"

    def __post_init__(self):
        require_positive(self, ("n", "size", "steps", "batch_size", "tiles_per_shard"), flags=True)
        require_above_zero(self, ("gsd",), unit="metres", flags=True)
        require_name(self)
        require_choice(self, "compress", COMPRESSIONS, label="compress")


def model_dir(model: str | None) -> Path:
    """The model folder to use: the given one, else the embedded default (a one-line error if not trained)."""
    if model is not None:
        return Path(model)
    if not (DEFAULT_WEIGHTS / "model_index.json").is_file():
        raise ConfigError(
            f"the embedded default landcover model ({DEFAULT_WEIGHTS}) is not trained yet: train it with "
            "`make weights-landcover` or pass --model DIR"
        )
    return DEFAULT_WEIGHTS


def load_landcover_pipeline(folder: Path):
    """Load a LandCoverPipeline on the best device, with its progress bar off."""
    from synthgen.pipelines.landcover import LandCoverPipeline

    pipe = LandCoverPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    if torch.cuda.is_available():
        pipe.to("cuda", torch.bfloat16)
    return pipe


def _render(pipe, config: LandCoverGenerateConfig, job: ShardJob, run: RunInfo, task: ShardTask) -> Iterator[list]:
    """The tiles of one shard, a batch at a time, as sample dicts for ``run_job``."""
    for start in range(task.indices.start, task.indices.stop, config.batch_size):
        batch = range(start, min(start + config.batch_size, task.indices.stop))
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
    pipe = load_landcover_pipeline(folder)
    pipe.check_inputs(config.batch_size, config.size, config.steps, None, config.gsd)
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
    summary = run_job(
        job,
        lambda task: _render(pipe, config, job, run, task),
        run_config={**resolved, "config_hash": run.config_hash, "weights_hash": run.weights_hash},
        config=config,
        progress=progress,
    )
    return {**summary, "model": str(folder), "weights_hash": run.weights_hash}
