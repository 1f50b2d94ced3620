"""Atomic file writes: every file synthgen writes (manifests, records, configs, reports, previews, sites tables)
goes through a temporary file beside it that replaces it only once complete, so no reader ever sees half a file.
A leaf module: it imports nothing of synthgen, so every layer may use it."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_path(path: Path, per_process: bool = True) -> Path:
    """The temporary name of ``path``: ``NAME.<pid>.tmp`` (ranks may write the same file at once), or ``NAME.tmp``
    where the name must be known to the clean-up of a killed run."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp" if per_process else f"{path.name}.tmp")


@contextmanager
def atomic_path(path: str | Path, per_process: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (its folder created) to write; it replaces ``path`` when the block
    ends, and is removed when the block raises. An existing folder at ``path`` is an IsADirectoryError before
    anything is written."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; give the path of a file to write", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path, per_process)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: str | bytes, per_process: bool = True, fsync: bool = False) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; ``fsync`` flushes it to disk before the
    rename (for done-markers)."""
    with atomic_path(path, per_process) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
