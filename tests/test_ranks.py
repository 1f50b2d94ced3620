"""Distribution of a job's shards over processes: every shard exactly once, the ranks' union equals a single-process
run byte for byte (tars and manifest), a rank cleans only its own shards, and bad --shard-index/--num-shards values
are one-line errors for landcover, rgb and climate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.cli.progress import ProgressBar
from synthgen.engine.job import run_job
from synthgen.engine.ranks import Rank, combine, resolve_rank
from tests.jobs_helpers import files, make_job, render
from tests.test_landcover import _tiny_pipeline

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.mark.parametrize("count", [1, 2, 3, 5, 9])
def test_parts_cover_every_shard_exactly_once(count):
    plan = list(range(7))
    taken = [task for index in range(count) for task in Rank(index, count).take(plan)]
    assert sorted(taken) == plan


def test_array_tasks_times_processes_cover_every_shard_exactly_once():
    plan = list(range(23))
    parts = [combine(process, 3, task, 2) for task in range(2) for process in range(3)]
    assert sorted(parts) == [(i, 6) for i in range(6)]
    taken = [shard for index, count in parts for shard in Rank(index, count).take(plan)]
    assert sorted(taken) == plan
    assert combine(0, 1, None, None) == (0, 1) and combine(0, 1, 3, 4) == (3, 4)


def test_single_process_is_rank_0_of_1():
    assert resolve_rank() == Rank(0, 1, 0)
    assert resolve_rank(2, 3) == Rank(2, 3, 0)


def _records(folder) -> dict:
    """Records by name, without the manifest path (the two runs write their manifests to different places)."""
    out = {}
    for path in sorted(folder.glob("*.record.json")):
        record = json.loads(path.read_text())
        record["job"].pop("manifest")
        out[path.name] = record
    return out


def test_ranks_union_equals_a_single_process_run_byte_for_byte(tmp_path):
    single = make_job(tmp_path / "single")
    assert run_job(single, render(single), {"seed": 0})["tiles"] == 7
    parts = make_job(tmp_path / "parts")
    summaries = [run_job(parts, render(parts), {"seed": 0, "shard_index": i}, rank=Rank(i, 3)) for i in (2, 0, 1)]
    assert [s["shards_written"] for s in summaries] == [1, 2, 1]
    assert [s["manifest"] for s in summaries[:2]] == [None, None]
    assert [s["shards_remaining"] for s in summaries[:2]] == [3, 1]
    assert "synthgen manifest rebuild" in summaries[0]["note"]
    assert summaries[2]["manifest"] == str(parts.manifest_path) and summaries[2]["tiles"] == 7
    tars = {k: v for k, v in files(single.out_dir).items() if k.endswith(".tar")}
    assert tars == {k: v for k, v in files(parts.out_dir).items() if k.endswith(".tar")} and len(tars) == 4
    assert _records(single.out_dir) == _records(parts.out_dir)
    assert single.manifest_path.read_bytes() == parts.manifest_path.read_bytes()
    again = run_job(parts, render(parts), {"seed": 0}, rank=Rank(0, 3))
    assert again["shards_skipped"] == 2 and again["shards_written"] == 0


def test_a_rank_cleans_only_its_own_unfinished_shards(tmp_path):
    job = make_job(tmp_path)
    job.out_dir.mkdir(parents=True)
    mine, other = job.out_dir / "t-00000.tar.tmp", job.out_dir / "t-00001.tar.tmp"
    mine.write_bytes(b"killed")
    other.write_bytes(b"being written by rank 1")
    summary = run_job(job, render(job), {}, rank=Rank(0, 2))
    assert summary["unfinished_removed"] == 1 and not mine.exists() and other.exists()


def test_a_ranks_progress_bar_counts_its_own_tiles(tmp_path):
    job = make_job(tmp_path)
    bars = [ProgressBar("part", total=7) for _ in range(3)]
    for i, bar in enumerate(bars):
        run_job(job, render(job), {}, progress=bar, rank=Rank(i, 3))
    assert [(bar.total, bar.done) for bar in bars] == [(3, 3), (2, 2), (2, 2)]  # shards 0+3, 1, 2 of 2, 2, 2, 1 tiles
    resumed = ProgressBar("part", total=7)
    run_job(job, render(job), {}, progress=resumed, rank=Rank(0, 3))
    assert (resumed.total, resumed.done) == (3, 3)  # skipped shards count as done


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


BAD_FLAGS = [
    (["--shard-index", "3", "--num-shards", "2"], "--shard-index 3 is out of range for --num-shards 2 (allowed: 0..1)"),
    (["--shard-index", "-1", "--num-shards", "2"], "--shard-index -1 is out of range"),
    (["--shard-index", "0", "--num-shards", "0"], "--num-shards 0 must be >= 1"),
    (["--shard-index", "0", "--num-shards", "-2"], "--num-shards -2 must be >= 1"),
    (["--shard-index", "1"], "--shard-index needs both --shard-index I and --num-shards N"),
    (["--num-shards", "4"], "--num-shards needs both"),
    (["--shard-index", "x", "--num-shards", "2"], "Invalid value for '--shard-index'"),
    (["--writers", "-1"], "--writers -1 must be >= 0"),
    (["--batch-size", "0"], "--batch-size 0 must be >= 1 (an integer) or auto"),
    (["--batch-size", "lots"], "--batch-size lots must be >= 1 (an integer) or auto"),
]
COMMANDS = {
    "landcover": ["landcover", "--n", "4"],
    "rgb": ["rgb", "--cond", "cond.parquet"],
    "climate": ["climate", "--sites", "sites.csv"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("flags,message", BAD_FLAGS)
def test_bad_distribution_flags_are_one_line_errors(tmp_path, command, flags, message):
    out, manifest = tmp_path / "out", tmp_path / "m.parquet"
    result = runner.invoke(app, [*COMMANDS[command], *flags, "--out", str(out), "--manifest", str(manifest)])
    assert message in _one_error_line(result)
    assert not out.exists() and not manifest.exists()


def test_landcover_cli_parts_equal_a_single_run(tmp_path, monkeypatch):
    model = tmp_path / "model"
    _tiny_pipeline().save_pretrained(model)
    common = ["landcover", "--n", "5", "--model", str(model), "--size", "16", "--steps", "1", "--tiles-per-shard", "2"]

    def gen(folder: str, *extra: str):
        (tmp_path / folder).mkdir(exist_ok=True)
        monkeypatch.chdir(tmp_path / folder)  # the same relative --out and --manifest in both folders
        result = runner.invoke(
            app, [*common, "--out", "out", "--manifest", "m.parquet", "--batch-size", "auto", *extra]
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    gen("single")
    first = gen("parts", "--shard-index", "1", "--num-shards", "2")
    assert first["manifest"] is None and first["shards_remaining"] == 2 and first["batch_size"] == 32
    last = gen("parts", "--shard-index", "0", "--num-shards", "2", "--writers", "1")
    assert last["tiles"] == 5 and last["shards_written"] == 2
    single, parts = files(tmp_path / "single" / "out"), files(tmp_path / "parts" / "out")
    assert single.keys() == parts.keys()
    assert {k: v for k, v in single.items() if k.endswith(".tar")} == {
        k: v for k, v in parts.items() if k.endswith(".tar")
    }
    assert (tmp_path / "single" / "m.parquet").read_bytes() == (tmp_path / "parts" / "m.parquet").read_bytes()
    saved = (tmp_path / "parts" / "out" / "config.yaml").read_text()
    assert "shard_index: null" in saved and "num_shards: null" in saved and "batch_size: auto" in saved
    df = pd.read_parquet(tmp_path / "parts" / "m.parquet")
    assert df["key"].tolist() == [f"landcover_{i:07d}" for i in range(5)]


@pytest.mark.slow
def test_two_processes_launched_like_torchrun_split_the_job(tmp_path):
    """Two real processes with the environment torchrun / accelerate launch give each rank (gloo on CPU)."""
    model = tmp_path / "model"
    _tiny_pipeline().save_pretrained(model)
    args = ["landcover", "--n", "5", "--model", str(model), "--size", "16", "--steps", "1", "--tiles-per-shard", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "synthgen", *args, "--out", "parts", "--manifest", "parts.parquet"],
            cwd=tmp_path,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    summaries = [json.loads(proc.communicate(timeout=600)[0]) for proc in procs]
    assert sorted((s["part"], s["parts"], s["shards_written"]) for s in summaries) == [(0, 2, 3), (1, 2, 2)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "single"), "--manifest", str(tmp_path / "s.parquet")])
    assert result.exit_code == 0, result.output
    single, parts = files(tmp_path / "single"), files(tmp_path / "parts")
    assert {k: v for k, v in single.items() if k.endswith(".tar")} == {
        k: v for k, v in parts.items() if k.endswith(".tar")
    }
    assert pd.read_parquet(tmp_path / "parts.parquet")["key"].tolist() == [f"landcover_{i:07d}" for i in range(5)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
