"""`synthgen manifest rebuild`: the manifest merged from shard records alone is the one the job wrote (same bytes),
a missing shard is refused in one line unless --partial, and folders without job records are one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.engine.job import run_job
from synthgen.engine.ranks import Rank
from synthgen.engine.rebuild import rebuild_manifest
from synthgen.errors import ManifestError
from synthgen.io.manifest import manifest_config, verify_manifest
from synthgen.io.shards import record_path
from tests.jobs_helpers import make_job, render

runner = CliRunner()


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_rebuild_gives_the_manifest_the_job_wrote(tmp_path):
    job = make_job(tmp_path)
    run_job(job, render(job), {"seed": 0, "steps": 2})
    written = job.manifest_path.read_bytes()
    job.manifest_path.unlink()
    result = runner.invoke(app, ["manifest", "rebuild", str(job.out_dir), "--manifest", str(job.manifest_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tiles"] == 7 and job.manifest_path.read_bytes() == written
    elsewhere = tmp_path / "other" / "copy.parquet"
    assert rebuild_manifest(job.out_dir, elsewhere)["shards"] == 4
    assert verify_manifest(elsewhere)["tiles"] == 7 and manifest_config(elsewhere) == {"seed": 0, "steps": 2}
    assert pd.read_parquet(elsewhere)["shard"].iloc[0] == "../out/t-00000.tar"
    assert not list(tmp_path.rglob("*.tmp"))


def test_rebuild_after_ranks_of_which_one_is_missing(tmp_path):
    job = make_job(tmp_path)
    for index in (0, 2):
        assert run_job(job, render(job), {}, rank=Rank(index, 3))["manifest"] is None
    result = runner.invoke(app, ["manifest", "rebuild", str(job.out_dir)])
    message = _one_error_line(result)
    assert "1 of 4 shards of job 't' are not finished (first: t-00001.tar)" in message and "--partial" in message
    assert not job.manifest_path.exists()
    result = runner.invoke(
        app, ["manifest", "rebuild", str(job.out_dir), "--partial", "--manifest", str(job.manifest_path)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["shards_missing"] == 1
    assert pd.read_parquet(job.manifest_path)["key"].tolist() == [f"t_{i:07d}" for i in (0, 1, 4, 5, 6)]
    run_job(job, render(job), {}, rank=Rank(1, 3))
    assert len(pd.read_parquet(job.manifest_path)) == 7


def test_rebuild_refuses_folders_without_job_records(tmp_path):
    assert "shard folder not found" in _one_error_line(runner.invoke(app, ["manifest", "rebuild", str(tmp_path / "x")]))
    assert "no finished shard of a generation job" in _one_error_line(
        runner.invoke(app, ["manifest", "rebuild", str(tmp_path)])
    )
    for name in ("a", "b"):
        job = make_job(tmp_path, n=2, name=name)
        run_job(job, render(job), {})
    assert "holds several jobs; pass --name (allowed: a, b)" in _one_error_line(
        runner.invoke(app, ["manifest", "rebuild", str(tmp_path / "out")])
    )
    assert "no job named 'c' (allowed: a, b)" in _one_error_line(
        runner.invoke(app, ["manifest", "rebuild", str(tmp_path / "out"), "--name", "c"])
    )
    assert rebuild_manifest(tmp_path / "out", tmp_path / "b.parquet", name="b")["tiles"] == 2


def test_rebuild_refuses_a_record_of_another_run(tmp_path):
    job = make_job(tmp_path, n=4)
    run_job(job, render(job), {"seed": 0})
    record = record_path(job.out_dir / "t-00001.tar")
    data = json.loads(record.read_text())
    data["job"]["run_config"] = {"seed": 1}
    record.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="t-00001.record.json: record of another run of job 't' .*run_config"):
        rebuild_manifest(job.out_dir)
