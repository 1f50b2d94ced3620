"""What keeps a job's output trustworthy when the disk does not cooperate: an output folder is tried before any work,
a shard that cannot be written (disk full, file too large, permissions) is one line naming it with nothing of it
left behind, and a finished shard that is not what this job would have written is refused on rerun: one of another
run (other config or weights hash), one whose record does not list the tiles the plan gives it (rows emptied or
edited by hand), or one whose tar no longer matches its record (truncated, overwritten, members changed).

Such a shard is refused, not silently redone: its record is what the manifest trusts, so the user decides (delete
the shard and its record to have it made again).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from synthgen.errors import ShardError, SynthgenError
from synthgen.io.shards import TMP_SUFFIX, RunInfo, is_done, read_record, record_path

READ_CHUNK = 1 << 20


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


def _remedy(shard_path: Path) -> str:
    return f"delete it and {record_path(shard_path).name} to have it made again"


def _short(digest: str | None) -> str:
    return (digest or "none")[:12]


def check_record(shard_path: Path, record: dict, run: RunInfo, keys: Sequence[str], drops_tiles: bool = False) -> None:
    """Refuse a finished shard whose record is not this job's: rows made with another config or weights hash, or
    keys other than the plan's ``keys`` for it (all of them, in order; with ``drops_tiles``, the job may have left
    some out, so any of them in order)."""
    shard_path = Path(shard_path)
    rows = record.get("rows")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ShardError(f"{shard_path}: its record has no list of rows; {_remedy(shard_path)}")
    mine = (run.config_hash, run.weights_hash)
    for row in rows:
        theirs = (row.get("config_hash"), row.get("weights_hash"))
        if theirs != mine:
            weights = f", weights {_short(theirs[1])}" if theirs[1] or mine[1] else ""
            this = f", weights {_short(mine[1])}" if theirs[1] or mine[1] else ""
            raise ShardError(
                f"{shard_path.parent}: holds shards of another run: {shard_path.name} was made with config "
                f"{_short(theirs[0])}{weights} (this run: config {_short(mine[0])}{this}); use another --out, or "
                f"delete that run's shards and records ({shard_path.name}, {record_path(shard_path).name}, ...) to "
                "have them made again"
            )
    got = [row.get("key") for row in rows]
    if got != list(keys) and not (drops_tiles and _in_order(got, keys)):
        subset = " or some of them" if drops_tiles else ""
        raise ShardError(
            f"{shard_path}: its record lists {_tiles(got)} where the plan has {_tiles(keys)}{subset}: the record "
            f"was changed after it was written; {_remedy(shard_path)}"
        )
    strays = [
        name for row in rows for name in row.get("members") or [None] if not str(name).startswith(row["key"] + ".")
    ]
    if record.get("shard") != shard_path.name or strays:
        raise ShardError(
            f"{shard_path}: its record is not this shard's (it names shard {record.get('shard')!r} and "
            f"{len(strays)} members of no tile of it): it was changed after it was written; {_remedy(shard_path)}"
        )


def _tiles(keys: Sequence) -> str:
    """``keys`` in a message: how many, the first and the last."""
    if not keys:
        return "no tiles"
    return f"1 tile ({keys[0]})" if len(keys) == 1 else f"{len(keys)} tiles ({keys[0]} .. {keys[-1]})"


def _in_order(got: list, keys: Sequence[str]) -> bool:
    """True when ``got`` is ``keys`` with some left out (each key at most once, in order)."""
    remaining = iter(keys)
    return all(any(key == planned for planned in remaining) for key in got)


class _HashingReader:
    """A binary file read front to back whose bytes are hashed as they are read."""

    def __init__(self, file):
        self.file, self.hash = file, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.hash.update(data)
        return data


def tar_contents(shard_path: Path) -> tuple[str, list[tuple[str, str]]]:
    """The sha256 of a tar file and the (name, sha256) of every member, in one pass; an unreadable tar is a
    ShardError."""
    with open(shard_path, "rb") as f:
        reader = _HashingReader(f)
        members = []
        try:
            with tarfile.open(fileobj=reader, mode="r|", bufsize=READ_CHUNK) as tar:
                for member in tar:
                    data = tar.extractfile(member).read() if member.isfile() else b""
                    members.append((member.name, hashlib.sha256(data).hexdigest()))
        except (tarfile.TarError, EOFError) as exc:
            raise ShardError(f"{shard_path}: not a readable tar ({exc})") from None
        while reader.read(READ_CHUNK):
            pass
    return reader.hash.hexdigest(), members


def check_finished(shard_path: Path, record: dict | None = None) -> None:
    """Refuse a finished shard (its record exists) whose tar is missing, no longer has the sha256 its record holds,
    or holds other members than its rows list (names and sha256s): it was changed after it was written, and
    skipping it would publish a corrupt manifest."""
    shard_path = Path(shard_path)
    record = read_record(shard_path) if record is None else record
    if not shard_path.is_file():
        found = "is missing"
    else:
        try:
            digest, members = tar_contents(shard_path)
        except ShardError:
            digest, members = None, []
        listed = [
            (name, sha)
            for row in record.get("rows") or []
            for name, sha in zip(row.get("members") or [], row.get("sha256") or [], strict=False)
        ]
        if digest != record.get("sha256"):
            found = f"does not match its record ({shard_path.stat().st_size} bytes, sha256 differs)"
        elif members != listed:
            found = f"holds other members than its record lists ({len(members)} in the tar, {len(listed)} listed)"
        else:
            return
    raise ShardError(
        f"{shard_path}: the finished shard {found}: it was changed after it was written; {_remedy(shard_path)}"
    )
