"""Stopping a job on request: SIGINT (Ctrl-C) and SIGTERM (``kill``, Slurm's time limit) end it the way an error
does (the shard being written is dropped, the finished ones are kept, the writer processes end), then say what was
kept; a rerun of the same command resumes it with the same bytes.

SIGINT already raises ``KeyboardInterrupt`` in Python; SIGTERM would end the process on the spot (resumable too, but
silent), so for the length of a job it raises ``StopSignal`` instead. The writer processes ignore both (a Ctrl-C reaches
the whole process group) and end with the job (``synthgen.engine.writers``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from synthgen.errors import JobInterrupted, StopSignal


def _raise_stop(signum, frame) -> None:
    raise StopSignal(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """For the block, SIGTERM raises ``StopSignal`` (only in the main thread, where Python runs signal handlers; the
    previous handler comes back after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def ignoring_stop_signals() -> Iterator[None]:
    """For the block (a stopped job's last clean-up, milliseconds), SIGINT and SIGTERM are ignored: a second Ctrl-C
    must not cut the clean-up short. Main thread only, as ``stop_on_signals``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stopped(exc: BaseException, kept: int, total: int, where: str) -> JobInterrupted:
    """The one-line report of a job stopped by ``exc`` (a ``StopSignal`` or ``KeyboardInterrupt``): ``kept`` of
    ``total`` shards are finished in ``where``."""
    signum = exc.signum if isinstance(exc, StopSignal) else signal.SIGINT
    return JobInterrupted(
        f"stopped by {signal.Signals(signum).name}: {kept} of {total} shards {where} are finished and kept (the "
        "shard being written was dropped); run the same command again to resume",
        int(signum),
    )


def ignore_stop_signals() -> None:
    """In a writer process: leave SIGINT and SIGTERM to the job, which stops its writers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
