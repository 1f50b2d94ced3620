"""The ``synthgen landcover`` job: N label + height tiles from a LandCoverPipeline into shards and a manifest.

The job is planned from the config alone: tile ``i`` (0..n-1) has key ``<name>_<i:07d>``, seed
``tile_seed(seed, i)`` and the synthetic georeference of index ``i``; shard ``j`` holds tiles
``j*tiles_per_shard ..``. Every tile's noise comes from its own ``torch.Generator``, so the batch size does not
change a tile. As in ingest, a shard whose record exists is skipped on rerun, anything unfinished is deleted and
redone, and the manifest is merged from the records at the end.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from synthgen.config import OutputPaths, config_hash, config_to_dict, save_config
from synthgen.errors import ConfigError, SynthgenError, allowed
from synthgen.io.geotiff import COMPRESSIONS, synthetic_georef
from synthgen.io.manifest import merge_records, write_manifest
from synthgen.io.shards import RunInfo, ShardWriter, clean_unfinished, is_done, read_record
from synthgen.schema import load_scheme

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "landcover"
NOT_IN_HASH = ("out", "manifest", "model", "batch_size")


@dataclass
class LandCoverGenerateConfig(OutputPaths):
    """What a generation run depends on; ``model`` None means the embedded default in ``synthgen/weights/``."""

    n: int
    model: str | None = None
    size: int = 128
    steps: int = 20
    batch_size: int = 8
    seed: int = 0
    gsd: float = 1.0
    name: str = "landcover"
    tiles_per_shard: int = 256
    compress: str = "zstd"
    out: str = "data/{name}"
    manifest: str = "manifests/{name}.parquet"

    def __post_init__(self):
        for key in ("n", "size", "steps", "batch_size", "tiles_per_shard"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} {getattr(self, key)} must be >= 1")
        if not self.gsd > 0:
            raise ConfigError(f"--gsd {self.gsd} must be > 0 metres")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise ConfigError(f"name '{self.name}' may hold only letters, digits, '_' and '-'")
        if self.compress not in COMPRESSIONS:
            raise ConfigError(f"compress '{self.compress}' is not one of {allowed(COMPRESSIONS)}")


def tile_seed(run_seed: int, index: int) -> int:
    """The seed of tile ``index`` of a run: the first 63 bits of sha256('<run_seed>:<index>')."""
    digest = hashlib.sha256(f"{run_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


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


def weights_hash(folder: Path) -> str:
    """sha256 over the relative names and sha256s of every safetensors file in a model folder."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*.safetensors")):
        h.update(f"{path.relative_to(folder).as_posix()}:{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def load_landcover_pipeline(folder: Path):
    """Load a LandCoverPipeline on the best device, with its progress bar off."""
    from synthgen.pipelines.landcover import LandCoverPipeline

    pipe = LandCoverPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    if torch.cuda.is_available():
        pipe.to("cuda", torch.bfloat16)
    return pipe


def _check_existing(shards: list[Path], run: RunInfo, out_dir: Path) -> None:
    for path in shards:
        if is_done(path):
            rows = read_record(path)["rows"]
            if rows and (rows[0]["config_hash"], rows[0]["weights_hash"]) != (run.config_hash, run.weights_hash):
                raise ConfigError(
                    f"{out_dir}: holds shards of another run (config {rows[0]['config_hash'][:12]}, weights "
                    f"{rows[0]['weights_hash'][:12]}); use another --out or delete that folder"
                )
            return


def _write_shard(
    pipe,
    config: LandCoverGenerateConfig,
    run: RunInfo,
    path: Path,
    indices: range,
    progress: Callable[[int], None] | None,
) -> None:
    scheme = load_scheme(pipe.config.scheme)
    with ShardWriter(path, run, scheme, config.compress) as writer:
        for start in range(indices.start, indices.stop, config.batch_size):
            batch = range(start, min(start + config.batch_size, indices.stop))
            seeds = [tile_seed(config.seed, i) for i in batch]
            out = pipe(
                batch_size=len(batch),
                size=config.size,
                num_inference_steps=config.steps,
                generator=[torch.Generator().manual_seed(s) for s in seeds],
                gsd=config.gsd,
            )
            for j, index in enumerate(batch):
                georef = synthetic_georef(index, config.size, config.gsd)
                writer.write(
                    {
                        "key": f"{config.name}_{index:07d}",
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
            if progress:
                progress(len(batch))


def run_landcover(config: LandCoverGenerateConfig, progress: Callable[[int], None] | None = None) -> dict:
    """Run (or resume) a generation job and write its manifest; returns a summary of what was done."""
    folder = model_dir(config.model)
    pipe = load_landcover_pipeline(folder)
    pipe.check_inputs(config.batch_size, config.size, config.steps, None, config.gsd)
    run = RunInfo(
        generator="landcover",
        scheme=pipe.config.scheme,
        model_id=str(folder),
        weights_hash=weights_hash(folder),
        config_hash=config_hash(config, exclude=NOT_IN_HASH),
    )
    out_dir = config.out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        cleaned = clean_unfinished(out_dir)
        config.manifest_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SynthgenError(f"{exc.filename or out_dir}: cannot write the output folder ({exc.strerror})") from None
    per = config.tiles_per_shard
    plan = [
        (out_dir / f"{config.name}-{j:05d}.tar", range(j * per, min((j + 1) * per, config.n)))
        for j in range(math.ceil(config.n / per))
    ]
    _check_existing([p for p, _ in plan], run, out_dir)
    todo = [(p, r) for p, r in plan if not is_done(p)]
    if progress and len(todo) < len(plan):
        progress(sum(len(r) for p, r in plan if is_done(p)))
    for path, indices in todo:
        _write_shard(pipe, config, run, path, indices, progress)
    rows = merge_records([p for p, _ in plan], config.manifest_path)
    resolved = {**config_to_dict(config), "model": str(folder)}
    write_manifest(
        rows,
        config.manifest_path,
        run_config={**resolved, "config_hash": run.config_hash, "weights_hash": run.weights_hash},
    )
    save_config(config, out_dir / "config.yaml")
    return {
        "manifest": str(config.manifest_path),
        "out": str(out_dir),
        "model": str(folder),
        "tiles": len(rows),
        "shards": len(plan),
        "shards_written": len(todo),
        "shards_skipped": len(plan) - len(todo),
        "unfinished_removed": len(cleaned),
        "weights_hash": run.weights_hash,
    }
