"""What a job does with what it finds in its output folder before it writes a shard (its lock held): delete what a
killed run of it left unfinished (its own files only: another job may share the folder), refuse finished shards
that are not its own (``synthgen.engine.safety``), and delete a manifest that would outlive its run.

The tasks handled here are ``synthgen.engine.job.ShardTask``s (a ``path`` and the tile ``indices``).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from synthgen.engine.safety import check_finished, check_record, check_writable
from synthgen.errors import SynthgenError
from synthgen.io.shards import TMP_SUFFIX, RunInfo, is_done, read_record, record_path


def prepare_output(out_dir: Path, manifest_path: Path) -> None:
    """Create the shard and manifest folders and try that they take new files; an unwritable folder is one line."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SynthgenError(f"{exc.filename or out_dir}: cannot write the output folder ({exc.strerror})") from None
    for folder in dict.fromkeys((out_dir, manifest_path.parent)):
        check_writable(folder)


def clean_tasks(tasks: Iterable) -> list[Path]:
    """Delete what a killed run left of these shards only (temporary files, a tar without record): other jobs, and
    other processes of this one, may be writing other shards of the folder."""
    removed = []
    listed: dict[Path, set[str]] = {}  # each folder is listed once, not every shard of the plan looked up
    for task in tasks:
        folder = task.path.parent
        if folder not in listed:
            listed[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
        names = listed[folder]
        record = record_path(task.path)
        for path in (task.path.with_name(task.path.name + TMP_SUFFIX), record.with_name(record.name + TMP_SUFFIX)):
            if path.name in names:
                path.unlink(missing_ok=True)
                removed.append(path)
        if task.path.name in names and record.name not in names:
            task.path.unlink(missing_ok=True)
            removed.append(task.path)
    return removed


def clean_temporaries(paths: Iterable[Path]) -> list[Path]:
    """Delete the temporary files a killed writer of these paths left (``NAME.tmp``, ``NAME.<pid>.tmp``)."""
    removed = []
    for path in paths:
        pattern = re.compile(re.escape(path.name) + r"(\.\d+)?" + re.escape(TMP_SUFFIX))
        for tmp in path.parent.glob(f"{glob.escape(path.name)}*{TMP_SUFFIX}"):
            if pattern.fullmatch(tmp.name):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def check_shards(
    tasks: Iterable,
    run: RunInfo,
    key: Callable[[int], str],
    drops_tiles: bool = False,
    tars: Collection[Path] = (),
) -> list[Path]:
    """Refuse the finished shards among ``tasks`` that are not this job's (``safety.check_record``: made by ``run``,
    with the keys ``key(i)`` of their indices); those whose path is in ``tars`` have their tar read back against
    their record too (``safety.check_finished``). Returns the finished shards' paths."""
    done = []
    for task in tasks:
        if is_done(task.path):
            record = read_record(task.path)
            check_record(task.path, record, run, [key(i) for i in task.indices], drops_tiles)
            if task.path in tars:
                check_finished(task.path, record)
            done.append(task.path)
    return done


def remove_stale(paths: Iterable[Path]) -> list[Path]:
    """Delete a manifest (and saved configs) an earlier run left, before this run writes a shard: a manifest must
    never describe shards that are no longer there, or mix in those of another run."""
    removed = []
    for path in paths:
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed
