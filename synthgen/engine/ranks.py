"""Which shards this process writes: one process by default, ``accelerate launch`` ranks, Slurm array tasks.

The shards of a plan are dealt out round-robin: part ``p`` of ``P`` takes shards ``p, p + P, p + 2P, ...``. The
part comes from ``accelerate.PartialState`` (process index / number of processes; 0 of 1 when not launched) and from
``--shard-index I --num-shards N``; with both, the array task's share is split again between its processes
(part ``I * processes + process index`` of ``N * processes``). No process talks to another: a shard is done when its
record exists, and whichever process finds them all done writes the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Rank:
    """This process's part of a job: ``index`` of ``count`` parts, and its GPU index on this node."""

    index: int = 0
    count: int = 1
    local_index: int = 0

    def take(self, tasks: Sequence[T]) -> Sequence[T]:
        """This part's tasks, in plan order (a slice: lazy when the plan is)."""
        return tasks[self.index :: self.count]


def combine(process_index: int, num_processes: int, shard_index: int | None, num_shards: int | None) -> tuple[int, int]:
    """(part, parts) for a process of a launch inside an optional array task (see the module docstring)."""
    if num_shards is None:
        return process_index, num_processes
    return shard_index * num_processes + process_index, num_shards * num_processes


def resolve_rank(shard_index: int | None = None, num_shards: int | None = None) -> Rank:
    """This process's Rank from accelerate's launch environment and the ``--shard-index/--num-shards`` flags."""
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU-only ranks (torchrun) are accelerate's MULTI_CPU
    index, count = combine(state.process_index, state.num_processes, shard_index, num_shards)
    return Rank(index, count, state.local_process_index)
