"""Crash safety, shown on `synthgen landcover` with a tiny model: SIGKILL at seeded random moments then resume gives
exactly the uninterrupted run's bytes; a full disk, a read-only output folder and a shard truncated by hand each end
in one clear line, with nothing corrupt left and the job resumable once the cause is gone. SIGINT and SIGTERM stop a
job cleanly and say what was kept and how to resume; a second job into a folder being written is refused, saying
who writes it; a killed run leaves no manifest of an earlier run behind.

Runs are forks of one preloaded driver process (tests/crash_harness.py), so each starts in milliseconds.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.io.shards import record_path
from tests.crash_harness import (
    compare_runs,
    driver,
    finished_shards_intact,
    kill_and_resume,
    landcover_argv,
    left_behind,
    run_cli,
    start_cli,
    wait_cli,
    writer_processes,
)
from tests.test_landcover import _tiny_pipeline

N = 24
runner = CliRunner()


@pytest.fixture(scope="module")
def pool():
    """The preloaded driver process every run is forked from."""
    executor = driver()
    yield executor
    executor.submit(os._exit, 0)  # ends the driver at once: an orderly exit of a process holding torch takes seconds
    executor.shutdown(wait=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """A tiny land-cover pipeline (random weights after torch.manual_seed(0)), saved."""
    folder = tmp_path_factory.mktemp("crash-model") / "pipeline"
    _tiny_pipeline().save_pretrained(folder)
    return str(folder)


def _one_error_line(result: dict) -> str:
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    assert result["code"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), result
    return lines[0]


def _no_leftovers(out: Path) -> None:
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert all(record_path(tar).is_file() for tar in out.glob("*.tar")), "a tar without its record"
    assert finished_shards_intact(out)["corrupt"] == []


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(pool, model, tmp_path):
    argv_for = functools.partial(landcover_argv, model, N, 2)
    report = pool.submit(kill_and_resume, argv_for, tmp_path, N, 5, 20240607).result()
    assert report["kills"] == 5, report
    assert report["after_kill_violations"] == [], report
    assert report["tiles"] == N and report["duplicate_keys"] == 0 and report["hash_mismatches"] == 0, report
    assert report["verify_exit_code"] == 0 and report["verify"][0].startswith(f"ok: {N} tiles"), report
    assert report["identical_to_clean"], report


def _with_writers(argv_for, folder: Path) -> list[str]:
    """The job of ``argv_for`` with two writer processes (tiles handed over through shared memory)."""
    return [*argv_for(folder), "--writers", "2"]


def test_sigkill_with_writer_processes_then_resume_equals_an_uninterrupted_run(pool, model, tmp_path):
    before = writer_processes()
    # 128 px: the height raster (64 KB) travels in a shared-memory slot, as at full size
    argv_for = functools.partial(_with_writers, functools.partial(landcover_argv, model, 12, 2, size=128))
    report = pool.submit(kill_and_resume, argv_for, tmp_path, 12, 3, 20261121).result()
    assert report["kills"] == 3 and report["after_kill_violations"] == [], report
    assert report["tiles"] == 12 and report["duplicate_keys"] == 0 and report["hash_mismatches"] == 0, report
    assert report["identical_to_clean"], report
    assert left_behind(before) == [], "writer processes of killed runs left behind"


@pytest.fixture(scope="module")
def clean(pool, model, tmp_path_factory) -> dict:
    """An uninterrupted run of the job with one tile per shard: its folder and how long it took."""
    folder = tmp_path_factory.mktemp("crash-clean") / "clean"
    run = pool.submit(run_cli, landcover_argv(model, N, 1, folder), folder.parent / "clean.txt").result()
    assert run["code"] == 0, run
    return {"folder": folder, "seconds": run["seconds"]}


def test_full_disk_is_one_line_leaves_nothing_half_written_and_resumes(pool, model, tmp_path):
    """RLIMIT_FSIZE below a shard's size (12 tiles, 36 members: over 18 kB of tar headers alone): writing it fails
    with EFBIG, the way a full disk fails with ENOSPC."""
    out = tmp_path / "job"
    full = pool.submit(run_cli, landcover_argv(model, N, 12, out), tmp_path / "full.txt", None, 8192).result()
    line = _one_error_line(full)
    assert f"{out}/landcover-00000.tar: cannot write the shard (File too large)" in line and "rerun" in line
    assert not Path(f"{out}.parquet").exists() and not list(out.glob("*.tar")) and not list(out.glob("*.record.json"))
    _no_leftovers(out)
    resumed = pool.submit(run_cli, landcover_argv(model, N, 12, out), tmp_path / "resumed.txt").result()
    assert resumed["code"] == 0, resumed
    _no_leftovers(out)
    assert runner.invoke(app, ["verify", f"{out}.parquet"]).output.startswith(f"ok: {N} tiles")


def test_full_disk_when_the_manifest_is_written_keeps_the_shards_and_no_manifest(pool, model, clean, tmp_path):
    largest = max(p.stat().st_size for p in clean["folder"].iterdir())
    assert Path(f"{clean['folder']}.parquet").stat().st_size > largest, "only the manifest must outgrow the limit"
    out = tmp_path / "job"
    full = pool.submit(run_cli, landcover_argv(model, N, 1, out), tmp_path / "full.txt", None, largest).result()
    line = _one_error_line(full)
    assert f"{out}.parquet: cannot write the manifest (" in line and "File too large" in line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("job.parquet")]
    assert len(list(out.glob("*.record.json"))) == N
    _no_leftovers(out)
    resumed = pool.submit(run_cli, landcover_argv(model, N, 1, out), tmp_path / "resumed.txt").result()
    assert resumed["code"] == 0 and '"shards_skipped": 24' in resumed["stderr"], resumed
    assert compare_runs(out, clean["folder"], N)["hash_mismatches"] == 0
    assert [p.read_bytes() for p in sorted(out.glob("*.tar"))] == [
        p.read_bytes() for p in sorted(clean["folder"].glob("*.tar"))
    ]


def _make_read_only(folder: Path) -> list[list[str]]:
    """Make ``folder`` refuse new files (root ignores modes: immutable too); returns the commands that undo it."""
    folder.chmod(0o555)
    undo = [["chmod", "755", str(folder)]]
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
            folder.chmod(0o755)
            pytest.skip("running as root without chattr: no way to make a read-only folder")
        undo.insert(0, ["chattr", "-i", str(folder)])
    return undo


def test_read_only_output_folder_after_a_kill_is_one_line_then_resumes(pool, model, tmp_path):
    out = tmp_path / "job"
    argv = landcover_argv(model, N, 1, out)
    halfway = out / f"landcover-{N // 2:05d}.record.json"
    killed = pool.submit(run_cli, argv, tmp_path / "killed.txt", None, None, halfway).result()
    assert killed["killed"] and halfway.exists() and not Path(f"{out}.parquet").exists(), killed
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    undo = _make_read_only(out)
    try:
        refused = pool.submit(run_cli, argv, tmp_path / "refused.txt").result()
    finally:
        for command in undo:
            subprocess.run(command, check=True)
    line = _one_error_line(refused)
    assert f"{out}" in line and "cannot write the output folder" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "the read-only folder was changed"
    assert not Path(f"{out}.parquet").exists()
    resumed = pool.submit(run_cli, argv, tmp_path / "resumed.txt").result()
    assert resumed["code"] == 0, resumed
    _no_leftovers(out)
    assert runner.invoke(app, ["verify", f"{out}.parquet"]).exit_code == 0


def test_shard_truncated_by_hand_is_found_by_verify_and_refused_on_rerun(model, tmp_path):
    out = tmp_path / "job"
    argv = landcover_argv(model, 6, 2, out)
    assert runner.invoke(app, argv).exit_code == 0
    manifest = Path(f"{out}.parquet")
    shard = out / "landcover-00001.tar"
    original, listed = shard.read_bytes(), manifest.read_bytes()
    shard.write_bytes(original[: len(original) // 3])

    def error_line(result) -> str:
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
        return lines[0]

    assert str(shard) in error_line(runner.invoke(app, ["verify", str(manifest)]))
    refused = error_line(runner.invoke(app, argv))
    assert f"{shard}: the finished shard does not match its record" in refused
    assert "delete it and landcover-00001.record.json" in refused
    assert manifest.read_bytes() == listed and shard.read_bytes() == original[: len(original) // 3]
    shard.unlink()
    record_path(shard).unlink()
    assert runner.invoke(app, argv).exit_code == 0
    assert shard.read_bytes() == original and manifest.read_bytes() == listed
    assert runner.invoke(app, ["verify", str(manifest)]).exit_code == 0


def test_shard_deleted_by_hand_with_its_record_left_is_refused(model, tmp_path):
    out = tmp_path / "job"
    argv = landcover_argv(model, 4, 2, out)
    assert runner.invoke(app, argv).exit_code == 0
    (out / "landcover-00000.tar").unlink()
    result = runner.invoke(app, argv)
    assert result.exit_code == 2 and "landcover-00000.tar: the finished shard is missing" in result.output


def _tars(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_say_what_was_kept_and_how_to_resume(pool, model, clean, tmp_path, sig, code):
    out = tmp_path / "job"
    argv = landcover_argv(model, N, 1, out)
    third = out / "landcover-00002.record.json"
    stopped = pool.submit(run_cli, argv, tmp_path / "stopped.txt", None, None, third, sig).result()
    assert stopped["killed"] and stopped["code"] == code, stopped
    lines = [line for line in stopped["stderr"].splitlines() if line.strip()]
    assert len(lines) == 2, stopped["stderr"]
    kept = len(list(out.glob("*.record.json")))
    assert 3 <= kept < N
    assert lines[0] == (
        f"stopped by {sig.name}: {kept} of {N} shards in {out} are finished and kept (the shard being written was "
        "dropped); run the same command again to resume"
    )
    assert lines[1] == f"resume with: synthgen {shlex.join(argv)}"
    assert not Path(f"{out}.parquet").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"landcover-{i:05d}.{suffix}" for i in range(kept) for suffix in ("tar", "record.json")
    ), "a stopped job leaves its finished shards and nothing else"
    resumed = pool.submit(run_cli, shlex.split(lines[1])[3:], tmp_path / "resumed.txt").result()
    assert resumed["code"] == 0 and f'"shards_skipped": {kept}' in resumed["stderr"], resumed
    assert _tars(out) == _tars(clean["folder"])
    assert compare_runs(out, clean["folder"], N)["hash_mismatches"] == 0


@pytest.mark.parametrize("other_name", ["landcover", "other"])
def test_a_second_job_into_a_folder_being_written_is_refused_saying_who_writes_it(pool, model, tmp_path, other_name):
    """The same job twice at once, or two jobs of different --name into one folder: the second is refused in one
    line naming the first's pid, command and start time; the first finishes untouched."""
    out, n = tmp_path / "job", 200
    first = pool.submit(start_cli, landcover_argv(model, n, 1, out), tmp_path / "first.txt").result()
    second_argv = [*landcover_argv(model, n, 1, out), "--name", other_name, "--manifest", f"{out}-2.parquet"]
    try:
        _wait_for(out / "landcover-00000.record.json")
        second = pool.submit(run_cli, second_argv, tmp_path / "second.txt").result()
        assert not (out / f"landcover-{n - 1:05d}.record.json").exists(), "the first job ended too soon to test"
    finally:
        done = pool.submit(wait_cli, first).result()
    line = _one_error_line(second)
    assert f"{out}: another synthgen job is writing this folder (pid {first['pid']}, started " in line, line
    assert "command: " in line and "use another --out" in line
    assert done["code"] == 0, done
    _no_leftovers(out)
    assert not (out / ".synthgen.lock").exists() and not Path(f"{out}-2.parquet").exists()
    assert runner.invoke(app, ["verify", f"{out}.parquet"]).output.startswith(f"ok: {n} tiles")


def _wait_for(path: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never came"
        time.sleep(0.005)


def test_a_killed_run_into_an_emptied_folder_leaves_no_manifest_of_the_old_run(pool, model, tmp_path):
    """`rm -rf out` after a finished run, then a new run SIGKILLed after its first shard: the old manifest is gone
    (`synthgen info` finds none), and the killed run's lock file does not lock the resume."""
    out = tmp_path / "job"
    argv = landcover_argv(model, 4, 1, out)
    assert pool.submit(run_cli, argv, tmp_path / "old.txt").result()["code"] == 0
    shutil.rmtree(out)
    argv = landcover_argv(model, N, 1, out)
    killed = pool.submit(run_cli, argv, tmp_path / "killed.txt", None, None, out / "landcover-00000.record.json")
    assert killed.result()["killed"]
    assert not Path(f"{out}.parquet").exists()
    info = runner.invoke(app, ["info", f"{out}.parquet"])
    assert info.exit_code == 2 and "manifest not found" in info.output
    assert (out / ".synthgen.lock").exists(), "a SIGKILLed run leaves its lock file (not its lock)"
    assert pool.submit(run_cli, argv, tmp_path / "resumed.txt").result()["code"] == 0
    assert not (out / ".synthgen.lock").exists()
    assert runner.invoke(app, ["verify", f"{out}.parquet"]).output.startswith(f"ok: {N} tiles")
