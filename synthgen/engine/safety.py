"""What keeps a job's output trustworthy when the disk does not cooperate: an output folder is tried before any work,
a shard that cannot be written (disk full, file too large, permissions) is one line naming it with nothing of it
left behind, and a finished shard changed afterwards (truncated by hand, overwritten) is refused on rerun.

A finished shard that no longer matches its record is refused, not silently redone: its record is what the
manifest trusts, so the user decides (delete the shard and its record to have it made again).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from synthgen.errors import ShardError, SynthgenError
from synthgen.io.shards import TMP_SUFFIX, is_done, read_record, record_path, sha256_file


def check_writable(folder: Path) -> None:
    """Refuse a folder that cannot take a new file (read-only, no permission), before any work is done.

    Modes alone do not tell (root ignores them, a read-only mount or an immutable folder does not show in them):
    a probe file is created and deleted.
    """
    probe = Path(folder) / f".synthgen-write-probe-{os.getpid()}{TMP_SUFFIX}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SynthgenError(f"{folder}: cannot write the output folder ({exc.strerror or exc})") from None


@contextmanager
def shard_write_errors(shard_path: Path) -> Iterator[None]:
    """Turn an OS error while a shard is written into one ShardError naming the shard, after removing whatever of
    the shard was left (its temporary files, a tar without record): a full disk leaves no half shard behind."""
    shard_path = Path(shard_path)
    try:
        yield
    except OSError as exc:
        for leftover in (shard_path, record_path(shard_path)):
            leftover.with_name(leftover.name + TMP_SUFFIX).unlink(missing_ok=True)
        if not is_done(shard_path):
            shard_path.unlink(missing_ok=True)
        raise ShardError(
            f"{shard_path}: cannot write the shard ({exc.strerror or exc}); nothing of it was kept, the shards "
            "finished before it were: make room (or fix the folder) and rerun to resume"
        ) from None


def check_finished(shard_path: Path) -> None:
    """Refuse a finished shard (its record exists) whose tar is missing or no longer has the sha256 its record
    holds: it was truncated or changed after it was written, and skipping it would publish a corrupt manifest."""
    shard_path = Path(shard_path)
    record = read_record(shard_path)
    if not shard_path.is_file():
        found = "is missing"
    elif sha256_file(shard_path) != record.get("sha256"):
        found = f"does not match its record ({shard_path.stat().st_size} bytes, sha256 differs)"
    else:
        return
    raise ShardError(
        f"{shard_path}: the finished shard {found}: it was changed after it was written; delete it and "
        f"{record_path(shard_path).name} to have it made again"
    )
