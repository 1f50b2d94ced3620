"""Kill `synthgen` commands with SIGKILL at seeded random moments, resume them, and check what they left: used by
tests/test_crash_safety.py (a few kills) and scripts/bench_crash.py (`make bench-crash`, 20 kills).

Every run is a fork of one *driver* process that has imported synthgen (and torch) but never run a torch op, so a
run starts in milliseconds and forking is safe; the driver is this process in the bench script, and a spawned
worker (``driver()``) under pytest, whose process has run torch with several threads. A run is the real CLI
(``synthgen.cli.main.app``) with its stderr kept in a log file; it can be SIGKILLed after a delay, or start under a file
size limit (``RLIMIT_FSIZE``: writing past it fails with EFBIG, as a full disk fails with ENOSPC).

``kill_and_resume`` runs a job once uninterrupted and moves its output aside, then runs it again in the same place,
killing it ``kills`` times at delays drawn from ``random.Random(seed)`` and checking after each kill that nothing
finished is corrupt, then lets it finish; ``compare_runs`` checks the result against the uninterrupted run.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

PRELOAD = ("synthgen.cli.main", "synthgen.jobs.landcover", "synthgen.pipelines.landcover", "synthgen.io.manifest")


def preload() -> None:
    """Import what a run needs once, in the driver (one torch thread: runs are compared byte for byte)."""
    import importlib

    os.environ["OMP_NUM_THREADS"] = "1"
    for name in PRELOAD:
        importlib.import_module(name)


def driver() -> ProcessPoolExecutor:
    """A one-process pool, spawned fresh and preloaded, to call this module's functions in (from pytest)."""
    return ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=preload)


def _child(argv: list[str], log: Path, fsize_limit: int | None) -> None:
    """In the forked run: stdout/stderr to ``log``, optional file size limit, then the CLI; never returns."""
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        if fsize_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, resource.RLIM_INFINITY))
        import torch

        from synthgen.cli.main import app

        torch.set_num_threads(1)
        try:
            app(argv, prog_name="synthgen")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os._exit(code)


def run_cli(
    argv: list[str],
    log: Path,
    kill_after: float | None = None,
    fsize_limit: int | None = None,
    kill_when: Path | None = None,
    sig: int = signal.SIGKILL,
) -> dict:
    """Run ``synthgen <argv>`` in a forked child; send it ``sig`` (SIGKILL) if it still runs ``kill_after`` seconds
    after its start or, with ``kill_when``, as soon as that file exists.

    Returns ``code`` (the exit status, or minus the signal that ended it), ``killed`` (the signal was sent),
    ``seconds`` and ``stderr`` (the log's text).
    """
    started = start_cli(argv, log, fsize_limit)
    return wait_cli(started, kill_after, kill_when, sig)


def start_cli(argv: list[str], log: Path, fsize_limit: int | None = None) -> dict:
    """Start ``synthgen <argv>`` in a forked child and return at once what ``wait_cli`` needs (its ``pid``...)."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    started_at, start = time.time(), time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _child(argv, log, fsize_limit)
    return {"pid": pid, "log": log, "start": start, "started_at": started_at}


def wait_cli(
    started: dict, kill_after: float | None = None, kill_when: Path | None = None, sig: int = signal.SIGKILL
) -> dict:
    """Wait for a run of ``start_cli`` to end, sending it ``sig`` as ``run_cli`` says; returns as ``run_cli``."""
    pid, log, start, started_at = started["pid"], started["log"], started["start"], started["started_at"]
    killed = False
    if kill_after is not None or kill_when is not None:
        deadline = start + kill_after if kill_after is not None else float("inf")
        while time.perf_counter() < deadline and not (kill_when is not None and kill_when.exists()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return _result(status, False, start, started_at, log)
            time.sleep(0.002)
        os.kill(pid, sig)
        killed = True
    _, status = os.waitpid(pid, 0)
    return _result(status, killed, start, started_at, log)


def _result(status: int, killed: bool, start: float, started_at: float, log: Path) -> dict:
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    seconds = time.perf_counter() - start
    return {"code": code, "killed": killed, "seconds": seconds, "started_at": started_at, "stderr": log.read_text()}


def startup_seconds(run: dict, out: Path) -> float:
    """When a run of ``out`` started generating: its first shard record's time, less the time between the first
    two records (one shard's worth), from the run's start (records older than the run, left by a killed run that
    it resumed, do not count)."""
    times = sorted(t for p in out.glob("*.record.json") if (t := p.stat().st_mtime) >= run["started_at"])
    step = times[1] - times[0] if len(times) > 1 else 0.0
    return min(max(0.0, times[0] - step - run["started_at"]), run["seconds"]) if times else 0.0


def finished_shards_intact(out: Path) -> dict:
    """What a reader may trust in a shard folder: every tar with a record must hash to the record's sha256."""
    from synthgen.io.shards import read_record, record_path, sha256_file

    records = sorted(out.glob("*.record.json"))
    corrupt = []
    for record in records:
        tar = record.with_name(record.name.removesuffix(".record.json") + ".tar")
        if not tar.is_file() or sha256_file(tar) != read_record(tar)["sha256"] or record_path(tar) != record:
            corrupt.append(tar.name)
    return {"finished": len(records), "corrupt": corrupt}


def manifest_state(manifest: Path, n: int) -> str:
    """``absent``, ``complete`` (readable with ``n`` rows) or ``broken``."""
    from synthgen.errors import SynthgenError
    from synthgen.io.manifest import read_manifest

    if not manifest.exists():
        return "absent"
    try:
        return "complete" if len(read_manifest(manifest)) == n else "broken"
    except SynthgenError:
        return "broken"


def kill_and_resume(
    argv_for: Callable[[Path], list[str]],
    root: Path,
    n: int,
    kills: int,
    seed: int,
    max_delay_fraction: float = 0.3,
) -> dict:
    """Run the job ``argv_for(folder)`` (shards in ``folder``, manifest ``folder.parquet``) uninterrupted, keep
    its output as ``root/clean``, then run it again in the same place with ``kills`` SIGKILLs and a final resume;
    returns what happened and how the result compares (``compare_runs``).

    The same paths both times, so even records and manifest (which name them) must come out byte-identical. Kill
    delays, from the start of each run, are the clean run's start-up time (loading the model) plus
    ``random.Random(seed).uniform(0, max_delay_fraction)`` times the rest of its wall time: the moments fall in
    generation, writing and merging, not only in the start-up. After every kill the finished shards must hash as
    recorded and the manifest be absent or complete; what is not is listed in ``after_kill_violations``. A run
    that finishes before its kill (the first run may pay for cold caches the later ones do not) is deleted and the
    job starts over with delays scaled to that run's timings, so exactly ``kills`` kills happen and the final run
    always resumes a killed one.
    """
    root = Path(root)
    job, clean = root / "job", root / "clean"
    first = run_cli(argv_for(job), root / "logs" / "clean.txt")
    if first["code"] != 0:
        raise RuntimeError(f"the clean run failed: {first['stderr'][-2000:]}")
    startup = startup_seconds(first, job)
    job.rename(clean)
    Path(f"{job}.parquet").rename(f"{clean}.parquet")
    rng = random.Random(seed)
    events: list[dict] = []
    violations: list[dict] = []
    seconds = first["seconds"]
    while sum(e["killed"] for e in events) < kills and len(events) < 10 * kills:
        delay = startup + rng.uniform(0.0, max_delay_fraction) * (seconds - startup)
        result = run_cli(argv_for(job), root / "logs" / f"run-{len(events):03d}.txt", kill_after=delay)
        if not result["killed"] and result["code"] != 0:
            raise RuntimeError(f"run {len(events)} failed: {result['stderr'][-2000:]}")
        state = finished_shards_intact(job) if job.exists() else {"finished": 0, "corrupt": []}
        manifest = manifest_state(Path(f"{job}.parquet"), n)
        if state["corrupt"] or manifest == "broken":
            violations.append({"run": len(events), "corrupt": state["corrupt"], "manifest": manifest})
        events.append({"delay_s": round(delay, 4), "killed": result["killed"], "finished_shards": state["finished"],
                       "manifest": manifest})  # fmt: skip
        if not result["killed"]:  # it finished before its kill (timings drift): start over, timed by this run
            startup, seconds = startup_seconds(result, job), result["seconds"]
            shutil.rmtree(job)
            Path(f"{job}.parquet").unlink()
    final = run_cli(argv_for(job), root / "logs" / "final.txt")
    if final["code"] != 0:
        raise RuntimeError(f"the resumed run failed: {final['stderr'][-2000:]}")
    verify = run_cli(["verify", f"{job}.parquet"], root / "logs" / "verify.txt")
    return {
        "kills": sum(e["killed"] for e in events),
        "runs_done_before_their_kill": sum(not e["killed"] for e in events),
        "resumes": len(events),
        "clean_seconds": round(first["seconds"], 3),
        "startup_seconds": round(startup, 3),
        "events": events,
        "after_kill_violations": violations,
        "verify_exit_code": verify["code"],
        "verify": verify["stderr"].strip().splitlines()[-1:],
        **compare_runs(job, clean, n),
    }


def compare_runs(out: Path, clean: Path, n: int) -> dict:
    """Tiles, duplicate keys and member hash mismatches of the run in ``out`` (manifest ``out.parquet``), and
    whether every file it wrote (shards, records, config, manifest) is byte-identical to the clean run's in
    ``clean`` (manifest ``clean.parquet``)."""
    from synthgen.errors import ShardError
    from synthgen.io.manifest import read_manifest, shard_path
    from synthgen.io.shards import ShardReader

    def matches(reader: ShardReader, member: str, digest: str) -> bool:
        try:
            reader.read(member, digest)
            return True
        except ShardError:
            return False

    df = read_manifest(Path(f"{out}.parquet"))
    mismatches = 0
    for shard, group in df.groupby("shard", sort=False):
        with ShardReader(shard_path(df, shard)) as reader:
            for members, hashes in zip(group["members"], group["sha256"], strict=True):
                mismatches += sum(not matches(reader, m, h) for m, h in zip(members, hashes, strict=True))
    files = sorted(p.name for p in out.iterdir())
    identical = (
        files == sorted(p.name for p in clean.iterdir())
        and all((out / f).read_bytes() == (clean / f).read_bytes() for f in files)
        and Path(f"{out}.parquet").read_bytes() == Path(f"{clean}.parquet").read_bytes()
    )
    return {
        "tiles": len(df),
        "expected_tiles": n,
        "duplicate_keys": int(df["key"].duplicated().sum()),
        "hash_mismatches": int(mismatches),
        "identical_to_clean": bool(identical),
        "files_compared": len(files) + 1,
    }


def landcover_argv(model: str, n: int, tiles_per_shard: int, folder: Path, size: int = 16, steps: int = 2) -> list:
    """``synthgen landcover`` arguments for a small job into ``folder`` (manifest ``folder.parquet``)."""
    return ["landcover", "--model", model, "--n", str(n), "--size", str(size), "--steps", str(steps),
            "--batch-size", "2", "--tiles-per-shard", str(tiles_per_shard), "--out", str(folder),
            "--manifest", f"{folder}.parquet"]  # fmt: skip


def writer_processes() -> set[int]:
    """Processes running multiprocessing's forkserver code: forkservers and the writer processes forked by them."""
    import psutil

    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        if "multiprocessing.forkserver" in " ".join(proc.info["cmdline"] or []):
            found.add(proc.pid)
    return found


def left_behind(before: set[int], wait: float = 10.0) -> list[int]:
    """Writer processes and forkservers not in ``before`` still running after up to ``wait`` seconds (those of a
    killed run end with it)."""
    deadline = time.monotonic() + wait
    while (left := writer_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    return sorted(left)
