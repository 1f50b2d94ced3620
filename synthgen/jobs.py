"""The shard job engine every generator shares (landcover, rgb, later climate).

A job makes ``n`` tiles. Tile ``i`` has key ``<name>_<i:07d>`` and seed ``tile_seed(run seed, i)``; shard ``j``
(``<out>/<name>-<j:05d>.tar``) holds tiles ``j*tiles_per_shard ..``. ``run_job`` then:

1. creates the output folders and deletes what a killed run left unfinished (temporary files, tars without record);
2. refuses a folder holding shards of another run (other config or weights hash);
3. skips every shard whose record exists, and asks the generator's ``render(task)`` for the others: it yields
   batches (lists) of sample dicts, which go through ``write_tile`` into a ``ShardWriter`` (temporary name → rename
   → record, the done-marker);
4. merges the records of all shards into the manifest, written atomically at the end.

``write_tile`` checks every tile before it is written: a raster the generator made that holds NaN is refused with a
``TileError`` naming the tile; a constant one is written with ``<kind>_constant`` in its quality flags.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthgen.config import save_config
from synthgen.errors import ConfigError, SynthgenError
from synthgen.io.manifest import merge_records, write_manifest
from synthgen.io.shards import RunInfo, ShardWriter, clean_unfinished, is_done, read_record
from synthgen.schema import ClassScheme

Batch = list[dict]


class TileError(SynthgenError):
    """A generated tile is broken (NaN in a raster): it is refused, never written."""


def tile_seed(run_seed: int, index: int) -> int:
    """The seed of tile ``index`` of a run: the first 63 bits of sha256('<run_seed>:<index>')."""
    digest = hashlib.sha256(f"{run_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def weights_hash(folder: Path) -> str:
    """sha256 over the relative names and sha256s of every safetensors file in a model folder."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*.safetensors")):
        h.update(f"{path.relative_to(folder).as_posix()}:{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: the shard to write and the tile indices it holds."""

    path: Path
    indices: range


@dataclass
class ShardJob:
    """A planned job: ``n`` tiles named after ``name`` in shards of ``tiles_per_shard`` under ``out_dir``.

    ``generated`` names the rasters the generator makes (``rgb``, ``label``, ``height``): those are checked for NaN
    and constant values by ``write_tile``; rasters copied from a parent tile are not.
    """

    name: str
    n: int
    tiles_per_shard: int
    out_dir: Path
    manifest_path: Path
    run: RunInfo
    scheme: ClassScheme
    compress: str = "zstd"
    generated: tuple[str, ...] = field(default_factory=tuple)

    def key(self, index: int) -> str:
        """The key of tile ``index``."""
        return f"{self.name}_{index:07d}"

    def plan(self) -> list[ShardTask]:
        """Every shard of the job, in order."""
        per = self.tiles_per_shard
        return [
            ShardTask(self.out_dir / f"{self.name}-{j:05d}.tar", range(j * per, min((j + 1) * per, self.n)))
            for j in range(math.ceil(self.n / per))
        ]


def check_tile(sample: dict, generated: Collection[str]) -> list[str]:
    """Quality flags for the generated rasters of a tile; NaN in one of them is a TileError naming the tile."""
    flags = []
    for kind in generated:
        array = sample.get(kind)
        if array is None:
            continue
        if np.issubdtype(array.dtype, np.floating):
            bad = int(np.isnan(array).sum())
            if bad:
                raise TileError(
                    f"tile '{sample['key']}': the generated {kind} raster holds NaN in {bad} of {array.size} values; "
                    "refusing to write it"
                )
        if array.size and array.min() == array.max():
            flags.append(f"{kind}_constant")
    return flags


def write_tile(writer: ShardWriter, sample: dict, generated: Collection[str]) -> dict:
    """Check a tile, then write it; returns its manifest row (with the check's flags added).

    A float ``rgb`` (HxWx3 in [0, 1], diffusers' ``output_type="np"``) is checked for NaN, then rounded to uint8.
    """
    flags = check_tile(sample, generated)
    rgb = sample.get("rgb")
    if rgb is not None and np.issubdtype(rgb.dtype, np.floating):
        sample = {**sample, "rgb": (np.clip(rgb, 0.0, 1.0) * 255).round().astype(np.uint8)}
    row = writer.write(sample)
    row["quality_flags"] = row["quality_flags"] + [f for f in flags if f not in row["quality_flags"]]
    return row


def prepare_output(out_dir: Path, manifest_path: Path) -> list[Path]:
    """Create the shard and manifest folders and delete unfinished shards; an unwritable folder is one line."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        cleaned = clean_unfinished(out_dir)
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SynthgenError(f"{exc.filename or out_dir}: cannot write the output folder ({exc.strerror})") from None
    return cleaned


def check_same_run(tasks: list[ShardTask], run: RunInfo, out_dir: Path) -> None:
    """Refuse an output folder whose finished shards come from another config or other weights."""
    for task in tasks:
        if is_done(task.path):
            rows = read_record(task.path)["rows"]
            if rows and (rows[0]["config_hash"], rows[0]["weights_hash"]) != (run.config_hash, run.weights_hash):
                raise ConfigError(
                    f"{out_dir}: holds shards of another run (config {rows[0]['config_hash'][:12]}, weights "
                    f"{rows[0]['weights_hash'][:12]}); use another --out or delete that folder"
                )
            return


def run_job(
    job: ShardJob,
    render: Callable[[ShardTask], Iterable[Batch]],
    run_config: dict,
    config=None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Run (or resume) a job: write the missing shards with ``render``, then the manifest; returns a summary.

    ``run_config`` goes into the manifest's metadata; ``config`` (a config dataclass) is saved as
    ``<out>/config.yaml``. ``progress(k)`` is called with the number of tiles done, skipped shards included.
    """
    cleaned = prepare_output(job.out_dir, job.manifest_path)
    plan = job.plan()
    check_same_run(plan, job.run, job.out_dir)
    todo = [task for task in plan if not is_done(task.path)]
    if progress and len(todo) < len(plan):
        progress(sum(len(task.indices) for task in plan if is_done(task.path)))
    for task in todo:
        with ShardWriter(task.path, job.run, job.scheme, job.compress) as writer:
            for batch in render(task):
                for sample in batch:
                    write_tile(writer, sample, job.generated)
                if progress:
                    progress(len(batch))
    rows = merge_records([task.path for task in plan], job.manifest_path)
    write_manifest(rows, job.manifest_path, run_config=run_config)
    if config is not None:
        save_config(config, job.out_dir / "config.yaml")
    return {
        "manifest": str(job.manifest_path),
        "out": str(job.out_dir),
        "tiles": len(rows),
        "shards": len(plan),
        "shards_written": len(todo),
        "shards_skipped": len(plan) - len(todo),
        "unfinished_removed": len(cleaned),
    }
