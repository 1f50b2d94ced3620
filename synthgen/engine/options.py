"""How a generation job runs, as opposed to what it makes: which part of the shards this process takes, how many
writer processes encode tiles, whether the denoiser is compiled. None of these changes a tile, so none is hashed
into the config or recorded in the manifest (every rank of a job then writes the same manifest bytes)."""

from __future__ import annotations

from dataclasses import dataclass

from synthgen.errors import ConfigError

RUNTIME_KEYS = ("shard_index", "num_shards", "writers", "compile")


@dataclass(kw_only=True)
class JobOptions:
    """Options every generator config shares (see the module docstring).

    ``shard_index`` / ``num_shards`` (both or neither): this process takes shards ``j`` with
    ``j % num_shards == shard_index`` (a Slurm array task); under ``accelerate launch`` the processes split that part
    again. ``writers`` None picks a default for the device (``jobs.acceleration.default_writers``); 0 encodes in the
    generating process.
    """

    shard_index: int | None = None
    num_shards: int | None = None
    writers: int | None = None
    compile: bool = False

    def check_job_options(self) -> None:
        """Refuse bad ``--shard-index`` / ``--num-shards`` / ``--writers`` values in one line."""
        if (self.shard_index is None) != (self.num_shards is None):
            given = "--shard-index" if self.num_shards is None else "--num-shards"
            raise ConfigError(f"{given} needs both --shard-index I and --num-shards N (got only {given})")
        if self.num_shards is not None:
            if self.num_shards < 1:
                raise ConfigError(f"--num-shards {self.num_shards} must be >= 1")
            if not 0 <= self.shard_index < self.num_shards:
                raise ConfigError(
                    f"--shard-index {self.shard_index} is out of range for --num-shards {self.num_shards} "
                    f"(allowed: 0..{self.num_shards - 1})"
                )
        if self.writers is not None and self.writers < 0:
            raise ConfigError(f"--writers {self.writers} must be >= 0 (0: encode in the generating process)")
