"""The shard job engine every job shares (landcover, rgb, climate, ingest).

A job makes ``n`` tiles. Tile ``i`` has key ``<name>_<i:07d>`` and seed ``tile_seed(run seed, i)`` (a generator's;
ingest's tile ``i`` is the ``i``-th window of its plan, with a key of its own); shard ``j``
(``<out>/<name>-<j:05d>.tar``) holds tiles ``j*tiles_per_shard ..``. ``run_job`` then:

1. takes this process's part of the shards (``synthgen.engine.ranks``: all of them in a single process; round-robin
   under ``accelerate launch`` or ``--shard-index/--num-shards``);
2. creates the output folders and takes the output folder's lock (``synthgen.engine.lock``: one job at a time,
   the parts of one job together), then deletes what a killed run left unfinished of its own shards (temporary
   files, tars without record), never another job's;
3. refuses a finished shard that is not this job's (``synthgen.engine.safety``): made by another run (other config
   or weights hash), a record not listing the tiles the plan gives the shard, a tar not matching its record;
4. deletes the manifest (and the saved configs) unless every shard is already done: a manifest never outlives the
   run it describes, so a killed run leaves none that looks complete;
5. skips every shard whose record exists, and asks the generator's ``render(task)`` for the others: it yields
   batches (lists) of sample dicts (a job may leave tiles out: ingest drops those too little labelled); each tile is
   checked and encoded in a pool of ``writers`` processes (``synthgen.engine.writers``) while the next batch is
   generated, and appended in order to a ``ShardWriter`` (temporary name → rename → record, the done-marker, which
   also describes the whole job). With ``shard_workers`` > 1 whole shards are written in that many processes
   instead, each encoding its own tiles (ingest's ``workers``: reading the sources is most of its work);
6. when every shard of the plan is done, whoever finishes last merges the records into the manifest, written
   atomically, and the job's config is saved beside it; a process that finds shards of other parts still missing
   writes none and says so.
   ``synthgen manifest rebuild <out>`` (``synthgen.engine.rebuild``) merges the records the same way.

SIGINT and SIGTERM stop a job like an error (``synthgen.engine.stop``): a ``JobInterrupted`` says how many shards
are kept; the same command resumes it.

Every tile is checked before it is written: a raster the generator made that holds NaN is refused with a
``TileError`` naming the tile; a constant one is written with ``<kind>_constant`` in its quality flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from synthgen.config import save_config
from synthgen.engine.handover import SharedSlots, open_shared_slots
from synthgen.engine.lock import output_lock
from synthgen.engine.options import RUNTIME_KEYS, JobOptions
from synthgen.engine.plan import ShardPlan, ShardTask, check_plan_size, shard_file
from synthgen.engine.ranks import Rank
from synthgen.engine.resume import check_shards, clean_tasks, clean_temporaries, prepare_output, remove_stale
from synthgen.engine.safety import shard_write_errors
from synthgen.engine.stop import ignoring_stop_signals, stop_on_signals, stopped
from synthgen.engine.writers import (
    EncodeSpec,
    InlineExecutor,
    OrderedTiles,
    check_tile,
    encode_checked,
    tile_executor,
)
from synthgen.errors import StopSignal, TileError, WriterDiedError
from synthgen.io.manifest import write_job_manifest
from synthgen.io.shards import RunInfo, ShardWriter, is_done
from synthgen.schema import ClassScheme

__all__ = [
    "Batch",
    "ShardJob",
    "ShardTask",
    "TileError",
    "shard_file",
    "check_tile",
    "run_job",
    "tile_seed",
    "write_shard",
    "write_tile",
]

Batch = list[dict]
PENDING_PER_WRITER = 4


def tile_seed(run_seed: int, index: int) -> int:
    """The seed of tile ``index`` of a run: the first 63 bits of sha256('<run_seed>:<index>')."""
    digest = hashlib.sha256(f"{run_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass
class ShardJob:
    """A planned job: ``n`` tiles named after ``name`` in shards of ``tiles_per_shard`` under ``out_dir``.

    ``generated`` names the rasters the generator makes (``rgb``, ``label``, ``height``): those are checked for NaN
    and constant values by ``write_tile``; rasters copied from a parent tile are not. ``keys`` are the tile keys in
    plan order where they are not ``<name>_<i:07d>`` (ingest's); ``drops_tiles``: ``render`` may leave tiles out
    (ingest's ``min_labelled_fraction``), so a finished shard holds some of its planned keys, in order.
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
    keys: Sequence[str] | None = None
    drops_tiles: bool = False

    def __post_init__(self):
        check_plan_size(self.n, self.tiles_per_shard)

    def key(self, index: int) -> str:
        """The key of tile ``index``."""
        return self.keys[index] if self.keys is not None else f"{self.name}_{index:07d}"

    @property
    def num_shards(self) -> int:
        """How many shards the job has."""
        return math.ceil(self.n / self.tiles_per_shard)

    def plan(self) -> ShardPlan:
        """Every shard of the job, in order (lazily: a task is made when it is reached)."""
        return ShardPlan(self.out_dir, self.name, self.n, self.tiles_per_shard)

    def describe(self, run_config: dict) -> dict:
        """What every shard record says of the whole job, so the manifest can be rebuilt from records alone."""
        return {
            "name": self.name,
            "tiles": self.n,
            "tiles_per_shard": self.tiles_per_shard,
            "num_shards": self.num_shards,
            "manifest": str(Path(self.manifest_path).resolve()),
            "run_config": run_config,
        }


def write_tile(writer: ShardWriter, sample: dict, generated: Collection[str]) -> dict:
    """Check a tile, then write it in this process; returns its manifest row (with the check's flags added)."""
    spec = EncodeSpec(writer.path.name, writer.run, writer.scheme, writer.compress, tuple(generated))
    return writer.add(encode_checked(sample, spec))


def write_shard(
    job: ShardJob,
    task: ShardTask,
    render: Callable[[ShardTask], Iterable[Batch]],
    description: dict,
    progress: Callable[[int], None] | None = None,
    executor: Executor | None = None,
    max_pending: int = PENDING_PER_WRITER,
    slots: SharedSlots | None = None,
) -> int:
    """Write one shard with ``render``: its tiles are checked and encoded on ``executor`` (None: this process) and
    appended in order; returns how many tiles the shard was planned with. ``progress`` hears of every tile
    appended, and at the end of the tiles ``render`` left out, so a finished shard counts all of its tiles."""
    done = 0
    with (
        shard_write_errors(task.path),
        ShardWriter(task.path, job.run, job.scheme, job.compress, job=description) as writer,
    ):
        spec = EncodeSpec(task.path.name, job.run, job.scheme, job.compress, tuple(job.generated))
        tiles = OrderedTiles(executor or InlineExecutor(), writer, spec, max_pending, slots)
        for batch in render(task):
            added = sum(tiles.put(sample) for sample in batch)
            if progress and added:
                progress(added)
            done += added
        added = tiles.flush()
        if progress and added:
            progress(added)
        done += added
    if progress and done < len(task.indices):
        progress(len(task.indices) - done)
    return len(task.indices)


def write_shards(
    job: ShardJob,
    tasks: list[ShardTask],
    render: Callable[[ShardTask], Iterable[Batch]],
    description: dict,
    writers: int,
    progress: Callable[[int], None] | None,
    shard_workers: int = 1,
) -> None:
    """Write ``tasks`` with ``render``; tiles are checked and encoded by ``writers`` processes (0: this one), or,
    with ``shard_workers`` > 1 and several tasks, whole shards are written by that many processes."""
    if shard_workers > 1 and len(tasks) > 1:
        write_shards_in_processes(job, tasks, render, description, shard_workers, progress)
        return
    executor = tile_executor(writers if tasks else 0)
    max_pending = PENDING_PER_WRITER * max(1, writers)
    slots = open_shared_slots(executor, max_pending + 1) if writers and tasks else None
    try:
        for task in tasks:
            write_shard(job, task, render, description, progress, executor, max_pending, slots)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        if slots is not None:
            slots.close()


def write_shards_in_processes(
    job: ShardJob,
    tasks: list[ShardTask],
    render: Callable[[ShardTask], Iterable[Batch]],
    description: dict,
    processes: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Write ``tasks`` a whole shard per call in ``processes`` processes (``render`` must pickle: a module-level
    function or a ``functools.partial`` of one). The processes are the engine's writer processes, which end with
    this one (a killed job leaves none writing); the first error stops the job once the running shards are done."""
    executor = tile_executor(processes)
    job = dataclasses.replace(job, keys=None)  # write_shard needs no keys: the render function gives them
    try:
        futures = [executor.submit(write_shard, job, task, render, description) for task in tasks]
        for future in futures:
            try:
                planned = future.result()
            except BrokenProcessPool as exc:
                raise WriterDiedError(exc) from None
            if progress:
                progress(planned)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def run_job(
    job: ShardJob,
    render: Callable[[ShardTask], Iterable[Batch]],
    run_config: dict,
    config=None,
    progress: Callable[[int], None] | None = None,
    rank: Rank | None = None,
    writers: int = 0,
    shard_workers: int = 1,
    config_paths: Sequence[Path] | None = None,
    summarize: Callable[[list[dict]], dict] | None = None,
) -> dict:
    """Run (or resume) this process's part of a job: write its missing shards with ``render``, then, if every
    shard of the job is done, the manifest; returns a summary.

    ``run_config`` goes into the manifest's metadata and every record's job description (without the keys of
    ``engine.options.RUNTIME_KEYS``, so every rank writes the same bytes); ``config`` (a config dataclass) is saved at
    each of ``config_paths`` (default ``<out>/config.yaml``). ``progress(k)`` is called with the number of tiles
    done, skipped shards of this part included. ``rank`` None is the whole job. ``writers`` and ``shard_workers``:
    see ``write_shards``. ``summarize(rows)`` adds the job's own keys to the summary once the manifest is written.
    Another job writing the folder is a ``FolderBusyError``; SIGINT or SIGTERM a ``JobInterrupted``.
    """
    rank = rank or Rank()
    plan = job.plan()
    mine = rank.take(plan)
    config_paths = list(config_paths or (job.out_dir / "config.yaml",))
    prepare_output(job.out_dir, job.manifest_path)
    with output_lock(job.out_dir, job.name, rank.index, rank.count), stop_on_signals():
        try:
            return _run_locked(
                job, plan, mine, render, run_config, config, progress, rank, writers, shard_workers, config_paths,
                summarize,
            )  # fmt: skip
        except (KeyboardInterrupt, StopSignal) as exc:
            with ignoring_stop_signals():
                clean_tasks(mine)  # the signal may have come between a shard's rename and its record
                kept = sum(is_done(task.path) for task in mine)
            where = f"in {job.out_dir}" if rank.count == 1 else f"of part {rank.index} of {rank.count} in {job.out_dir}"
            raise stopped(exc, kept, len(mine), where) from None


def _run_locked(
    job: ShardJob,
    plan: list[ShardTask],
    mine: list[ShardTask],
    render: Callable[[ShardTask], Iterable[Batch]],
    run_config: dict,
    config,
    progress: Callable[[int], None] | None,
    rank: Rank,
    writers: int,
    shard_workers: int,
    config_paths: list[Path],
    summarize: Callable[[list[dict]], dict] | None,
) -> dict:
    """``run_job`` once the output folder is locked."""
    whole = rank.count == 1
    # a part cleans only its own shards (the other parts are writing theirs); the whole job also its manifest's and
    # configs' temporary files, which no other process of it can be writing
    cleaned = clean_tasks(plan if whole else mine)
    if whole:
        cleaned += clean_temporaries([job.manifest_path, *config_paths])
    if len(check_shards(plan, job.run, job.key, job.drops_tiles, tars={task.path for task in mine})) < len(plan):
        remove_stale([job.manifest_path, *config_paths])
    run_config = {k: v for k, v in run_config.items() if k not in RUNTIME_KEYS}
    todo = [task for task in mine if not is_done(task.path)]
    if rank.count > 1 and hasattr(progress, "set_total"):
        progress.set_total(sum(len(task.indices) for task in mine))  # this part's tiles, not the job's
    if progress and len(todo) < len(mine):
        progress(sum(len(task.indices) for task in mine if is_done(task.path)))
    write_shards(job, todo, render, job.describe(run_config), writers, progress, shard_workers)
    summary = {
        "manifest": str(job.manifest_path),
        "out": str(job.out_dir),
        "tiles": sum(len(task.indices) for task in mine),
        "shards": len(plan),
        "shards_written": len(todo),
        "shards_skipped": len(mine) - len(todo),
        "unfinished_removed": len(cleaned),
    }
    if rank.count > 1:
        summary.update(part=rank.index, parts=rank.count, part_shards=len(mine))
    remaining = [task for task in plan if not is_done(task.path)]
    if remaining:
        return {
            **summary,
            "manifest": None,
            "shards_remaining": len(remaining),
            "note": f"{len(remaining)} of {len(plan)} shards are not done yet (other parts of the job): the last part "
            f"to finish writes the manifest, or run `synthgen manifest rebuild {job.out_dir} --manifest "
            f"{job.manifest_path}` once all are done",
        }
    # the records of other processes' shards are read again before they go into the manifest (they may have been
    # written, or changed, while this one ran)
    written = {task.path for task in todo}
    check_shards([task for task in plan if task.path not in written], job.run, job.key, job.drops_tiles)
    rows = write_job_manifest([task.path for task in plan], job.manifest_path, job.describe(run_config))
    if config is not None:
        if isinstance(config, JobOptions):
            config = dataclasses.replace(config, shard_index=None, num_shards=None)
        for path in config_paths:
            save_config(config, path)
    return {**summary, "tiles": len(rows), **(summarize(rows) if summarize else {})}
