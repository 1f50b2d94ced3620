"""The shard plan of a job, and the limits of what one job may ask of a machine.

A plan is lazy: ``ShardPlan`` computes shard ``j``'s task when asked, so neither a plan nor a rank's part of it holds
a row per tile or per shard. What a job may ask for is bounded before anything runs:

- at most ``MAX_TILES`` tiles (tile keys are ``<name>_<index:07d>``: 7 digits keep them in order) and at most
  ``MAX_SHARDS`` shards (shard files are ``<name>-<index:05d>.tar``), so a manifest and a resume scan stay in
  reach of one machine;
- tiles of at most ``MAX_TILE_SIDE`` px a side;
- a batch whose tiles need at least ``BYTES_PER_PIXEL`` bytes a pixel (a lower bound: the embedded default models
  measured 500 to 1300 bytes a pixel on CPU at 512 to 1024 px) must fit in the memory the machine has free.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from synthgen.errors import ConfigError

MAX_TILES = 10_000_000
MAX_SHARDS = 100_000
MAX_TILE_SIDE = 2048
BYTES_PER_PIXEL = 256
PLAN_HELP = f"at most {MAX_TILES:,} tiles and {MAX_SHARDS:,} shards a job"
SIDE_HELP = f"at most {MAX_TILE_SIDE} px, and a batch of tiles must fit in free memory"


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: the shard to write and the tile indices it holds."""

    path: Path
    indices: range


def shard_file(name: str, index: int) -> str:
    """The file name of shard ``index`` of a job named ``name``."""
    return f"{name}-{index:05d}.tar"


class ShardPlan(Sequence[ShardTask]):
    """The shards ``shards`` (indices, a range) of a job of ``n`` tiles named ``name``, ``tiles_per_shard`` a shard,
    under ``out_dir``; a slice is another lazy plan (a rank's part)."""

    def __init__(self, out_dir: Path, name: str, n: int, tiles_per_shard: int, shards: range | None = None):
        self.out_dir, self.name, self.n, self.tiles_per_shard = Path(out_dir), name, n, tiles_per_shard
        self.shards = range(math.ceil(n / tiles_per_shard)) if shards is None else shards

    def task(self, j: int) -> ShardTask:
        """The task of shard ``j`` of the job."""
        per = self.tiles_per_shard
        return ShardTask(self.out_dir / shard_file(self.name, j), range(j * per, min((j + 1) * per, self.n)))

    def __len__(self) -> int:
        return len(self.shards)

    @overload
    def __getitem__(self, i: int) -> ShardTask: ...
    @overload
    def __getitem__(self, i: slice) -> ShardPlan: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return ShardPlan(self.out_dir, self.name, self.n, self.tiles_per_shard, self.shards[i])
        return self.task(self.shards[i])

    def __iter__(self) -> Iterator[ShardTask]:
        return map(self.task, self.shards)

    def __repr__(self) -> str:
        return f"ShardPlan({self.name!r}, n={self.n}, tiles_per_shard={self.tiles_per_shard}, shards={self.shards})"


def check_plan_size(n: int, tiles_per_shard: int, what: str | None = None) -> None:
    """Refuse a job of more than ``MAX_TILES`` tiles or ``MAX_SHARDS`` shards in one line; ``what`` names the
    count in the message (default: ``a job of <n> tiles``)."""
    what = what or f"a job of {n} tiles"
    if n > MAX_TILES:
        raise ConfigError(
            f"{what} is over the maximum of {MAX_TILES} tiles a job (keys hold 7 digits): split the work into jobs "
            "with different --name"
        )
    shards = math.ceil(n / max(1, tiles_per_shard))
    if shards > MAX_SHARDS:
        raise ConfigError(
            f"{what} at --tiles-per-shard {tiles_per_shard} makes {shards} shards, over the maximum of {MAX_SHARDS} "
            f"(allowed: --tiles-per-shard >= {math.ceil(n / MAX_SHARDS)})"
        )


def check_tile_side(size: int, label: str = "--size") -> None:
    """Refuse a tile side over ``MAX_TILE_SIDE`` px in one line."""
    if size > MAX_TILE_SIDE:
        raise ConfigError(
            f"{label} {size} px is over the maximum tile side of {MAX_TILE_SIDE} px (make more, smaller tiles)"
        )


def batch_bytes(batch_size: int, side: int, bytes_per_pixel: float = BYTES_PER_PIXEL) -> int:
    """The least memory a batch of ``batch_size`` tiles of ``side`` px needs."""
    return int(batch_size * side * side * bytes_per_pixel)


def largest_batch_that_fits(side: int, available: int, bytes_per_pixel: float = BYTES_PER_PIXEL) -> int:
    """The most tiles of ``side`` px whose batch needs no more than ``available`` bytes (0: not even one)."""
    return int(available // batch_bytes(1, side, bytes_per_pixel))


def check_batch_fits(
    batch_size: int, side: int, available: int, where: str, bytes_per_pixel: float = BYTES_PER_PIXEL
) -> None:
    """Refuse a batch that needs more than the ``available`` bytes of memory ``where`` (e.g. 'free on this machine')
    in one line naming the size, the batch size and what would fit."""
    need = batch_bytes(batch_size, side, bytes_per_pixel)
    if need <= available:
        return
    fits = largest_batch_that_fits(side, available, bytes_per_pixel)
    hint = f"--batch-size {fits} or less fits" if fits else "not even one tile fits: use a smaller --size"
    raise ConfigError(
        f"--size {side} with --batch-size {batch_size} needs at least {_gib(need)} of memory ({bytes_per_pixel:g} "
        f"bytes a pixel), {_gib(available)} {where} ({hint})"
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
