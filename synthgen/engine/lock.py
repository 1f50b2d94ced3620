"""One job at a time per output folder: a ``flock`` on ``<out>/.synthgen.lock``, which the kernel releases when the
process ends however it ends (a SIGKILLed job leaves no stale lock, at most the empty file).

A job run as one process takes the folder lock exclusively. The parts of a job split between processes
(``accelerate launch``, ``--shard-index/--num-shards``) write the same folder at once: each takes the folder lock
shared and its own part lock ``<out>/.synthgen.<name>.part-<i>-of-<n>.lock`` exclusively, so parts run together but
a whole-job run, or a second copy of the same part, is refused. Whoever holds a lock exclusively writes into it who
it is (pid, command, start time), which is what a refused job's one-line error says.

A lock file is deleted by the last holder on its way out. A job that opened the file just before it was deleted
would lock a file no longer in the folder: it checks, after locking, that the path still names the file it locked,
and starts over if not.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from synthgen.errors import FolderBusyError, SynthgenError

LOCK_NAME = ".synthgen.lock"
COMMAND_CHARS = 300


def part_lock_name(name: str, index: int, count: int) -> str:
    """The lock file of part ``index`` of ``count`` of job ``name``."""
    return f".synthgen.{name}.part-{index}-of-{count}.lock"


def holder_info() -> dict:
    """Who this process is, as a lock holder: pid, command line and start time."""
    argv = getattr(sys, "orig_argv", None) or sys.argv
    return {
        "pid": os.getpid(),
        "command": shlex.join(argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def describe_holder(path: Path) -> str:
    """What a lock file says of its holder, on one line ("pid ..., started ..., command: ...")."""
    try:
        info = json.loads(Path(path).read_text() or "{}")
        command = info["command"]
        if len(command) > COMMAND_CHARS:
            command = command[:COMMAND_CHARS] + "..."
        return f"pid {info['pid']}, started {info['started']}, command: {command}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


def _is_held(path: Path) -> bool:
    """True when some process holds a lock on ``path`` (probed without waiting, released at once)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _holders(folder: Path, lock: Path) -> str:
    """Who holds ``lock`` (an exclusive holder), else the parts holding the folder lock shared."""
    if lock.name != LOCK_NAME or (lock.is_file() and lock.stat().st_size):
        return describe_holder(lock)
    parts = [p for p in sorted(folder.glob(".synthgen.*.part-*.lock")) if _is_held(p)]
    if not parts:
        return describe_holder(lock)
    return "; ".join(f"{p.name.removeprefix('.synthgen.').removesuffix('.lock')}: {describe_holder(p)}" for p in parts)


@contextmanager
def _flock(path: Path, exclusive: bool, folder: Path) -> Iterator[int]:
    """Hold a lock on ``path`` (created if need be) for the block; refused at once with who holds it."""
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SynthgenError(f"{folder}: cannot write the output folder ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusyError(
                f"{folder}: another synthgen job is writing this folder ({_holders(folder, path)}); wait for it to "
                "end, or use another --out"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the last holder deleted the file between our open and our lock: lock the new one
    try:
        os.ftruncate(fd, 0)  # a shared holder clears what a killed exclusive holder left in the file
        if exclusive:
            os.pwrite(fd, json.dumps(holder_info()).encode(), 0)
        yield fd
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else holds it: the file can go
            os.unlink(path)
        except OSError:  # held by others (parts), or a folder that no longer takes changes
            pass
        os.close(fd)


@contextmanager
def output_lock(folder: Path, name: str, index: int = 0, count: int = 1) -> Iterator[None]:
    """Hold the lock of output folder ``folder`` for job ``name``, part ``index`` of ``count``, for the block; a
    folder another job writes is a one-line FolderBusyError naming it (see the module docstring)."""
    folder = Path(folder)
    with ExitStack() as stack:
        stack.enter_context(_flock(folder / LOCK_NAME, count == 1, folder))
        if count > 1:
            stack.enter_context(_flock(folder / part_lock_name(name, index, count), True, folder))
        yield
