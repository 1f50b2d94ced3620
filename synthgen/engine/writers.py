"""Tile checks and encoding, in worker processes beside the generation loop so the model never waits on disk.

``encode_checked`` turns a sample dict into an ``EncodedTile`` (GeoTIFF bytes, JSON, sha256s, manifest row), after
the per-tile check: NaN in a generated raster is a ``TileError`` naming the tile, a constant one is flagged. It runs
in a ``ProcessPoolExecutor`` of ``writers`` processes (forkserver: no CUDA context or torch threads are forked), or
in the calling process for ``writers=0``; tiles travel to the processes and back through shared memory where it can
be had (``synthgen.engine.handover``). ``OrderedTiles`` appends the results to the shard in submission order, so the
bytes are those of the plain ``ShardWriter.write``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import select
import threading
import time
from collections import deque
from collections.abc import Collection
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from synthgen.engine.handover import SharedSlots, encode_in_slot
from synthgen.engine.stop import ignore_stop_signals
from synthgen.errors import TileError, WriterDiedError
from synthgen.io.shards import EncodedTile, RunInfo, ShardWriter, encode_tile
from synthgen.schema import ClassScheme

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
WRITER_MMAP_THRESHOLD = 32 << 20  # allocations below this come from the heap (glibc's largest allowed value)
WRITER_TRIM_THRESHOLD = 256 << 20  # free heap kept before any is given back to the OS


def check_tile(sample: dict, generated: Collection[str]) -> list[str]:
    """Quality flags for the generated rasters of a tile; NaN in one of them is a TileError naming the tile."""
    return _check_ranges(sample, generated)[0]


def _check_ranges(sample: dict, generated: Collection[str]) -> tuple[list[str], dict[str, tuple]]:
    """``check_tile``'s flags and the (min, max) of every generated raster it looked at."""
    flags, ranges = [], {}
    for kind in generated:
        array = sample.get(kind)
        if array is None or not array.size:
            continue
        low = array.min()  # NaN when the raster holds any (min propagates NaN): counted only then
        if np.issubdtype(array.dtype, np.floating) and np.isnan(low):
            bad = int(np.isnan(array).sum())
            raise TileError(
                f"tile '{sample['key']}': the generated {kind} raster holds NaN in {bad} of {array.size} values; "
                "refusing to write it"
            )
        ranges[kind] = (low, array.max())
        if low == ranges[kind][1]:
            flags.append(f"{kind}_constant")
    return flags, ranges


@dataclass(frozen=True)
class EncodeSpec:
    """What encoding a tile of a shard needs besides the sample (sent to the worker with every tile)."""

    shard_name: str
    run: RunInfo
    scheme: ClassScheme
    compress: str
    generated: tuple[str, ...]


def encode_checked(sample: dict, spec: EncodeSpec) -> EncodedTile:
    """Check a tile, then encode it; the check's flags are added to its row.

    A float ``rgb`` (HxWx3 in [0, 1], diffusers' ``output_type="np"``) is checked for NaN, then rounded to uint8.
    """
    flags, ranges = _check_ranges(sample, spec.generated)
    rgb = sample.get("rgb")
    if rgb is not None and np.issubdtype(rgb.dtype, np.floating):
        low, high = ranges.get("rgb", (-1, 2))
        if 0 <= low and high <= 1:  # clipping would change nothing: scaled into a new array straight away
            scaled = np.multiply(rgb, 255)
        else:
            scaled = np.clip(rgb, 0.0, 1.0)  # a new array: scaled and rounded in place (rint: round half to even)
            scaled *= 255
        sample = {**sample, "rgb": np.rint(scaled, out=scaled).astype(np.uint8)}
    tile = encode_tile(sample, spec.shard_name, spec.run, spec.scheme, spec.compress)
    tile.row["quality_flags"] = tile.row["quality_flags"] + [f for f in flags if f not in tile.row["quality_flags"]]
    return tile


class InlineExecutor(Executor):
    """An Executor that runs each call at submission, in the calling process (``writers=0``)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """Run ``fn(*args, **kwargs)`` now; the returned future holds its result or exception."""
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # handed back through the future, like a pool would
            future.set_exception(exc)
        return future


def keep_freed_memory() -> None:
    """Run at a writer process's start: glibc's malloc keeps freed tile-sized buffers for the next tile instead of
    handing them back to the OS and faulting fresh zeroed pages in for every tile received (at 512 px that was a
    fifth of a writer's CPU time, in the kernel). Nothing changes where the C library has no ``mallopt``."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, WRITER_MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, WRITER_TRIM_THRESHOLD)


def exit_with(pid: int) -> None:
    """End this process as soon as process ``pid`` ends, killed included. A pool's worker blocks on its queue, whose
    write end it holds itself, so it would outlive a SIGKILLed job (and keep the forkserver alive) for ever."""

    def watch() -> None:
        try:
            handle = os.pidfd_open(pid)  # readable once the process has ended
        except ProcessLookupError:
            os._exit(1)
        except (AttributeError, OSError):  # no pidfd (not Linux 5.3+): look every second
            while True:
                time.sleep(1.0)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    os._exit(1)
                except PermissionError:
                    pass
        select.select([handle], [], [])
        os._exit(1)

    threading.Thread(target=watch, name=f"exit-with-{pid}", daemon=True).start()


def start_writer(parent: int) -> None:
    """The initializer of a writer process: keep freed memory, leave SIGINT and SIGTERM to the job (it stops its
    writers itself), and end with the generating process ``parent``."""
    keep_freed_memory()
    ignore_stop_signals()
    exit_with(parent)


def tile_executor(writers: int) -> Executor:
    """``writers`` encoding processes, or the calling process for 0."""
    if writers == 0:
        return InlineExecutor()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(writers, mp_context=context, initializer=start_writer, initargs=(os.getpid(),))


class OrderedTiles:
    """Encodes a shard's tiles on an executor and appends them to its writer in submission order, keeping at most
    ``max_pending`` tiles in flight (the oldest is waited for beyond that). With ``slots`` (at least
    ``max_pending + 1``), tiles travel to and from the writers through shared memory."""

    def __init__(
        self,
        executor: Executor,
        writer: ShardWriter,
        spec: EncodeSpec,
        max_pending: int,
        slots: SharedSlots | None = None,
    ):
        self.executor, self.writer, self.spec, self.max_pending = executor, writer, spec, max_pending
        self.slots = slots
        self.pending: deque[tuple[Future, int | None]] = deque()

    def put(self, sample: dict) -> int:
        """Submit a tile; returns how many tiles were appended meanwhile (those finished, in order)."""
        packed = self.slots.pack(sample) if self.slots is not None else None
        try:
            if packed is None:
                self.pending.append((self.executor.submit(encode_checked, sample, self.spec), None))
            else:
                sent, index, ref, in_bytes = packed
                future = self.executor.submit(encode_in_slot, encode_checked, sent, ref, in_bytes, self.spec)
                self.pending.append((future, index))
        except BrokenProcessPool as exc:
            raise WriterDiedError(exc) from None
        added = 0
        while self.pending and (self.pending[0][0].done() or len(self.pending) > self.max_pending):
            added += self._append_oldest()
        return added

    def flush(self) -> int:
        """Wait for every tile in flight and append it; returns how many were appended."""
        added = 0
        while self.pending:
            added += self._append_oldest()
        return added

    def _append_oldest(self) -> int:
        future, slot = self.pending.popleft()
        try:
            tile = future.result()
        except BrokenProcessPool as exc:
            raise WriterDiedError(exc) from None
        except BaseException:
            if slot is not None:
                self.slots.release(slot)
            raise
        self.writer.add(tile if slot is None else self.slots.unpack(slot, tile))
        return 1
