"""Data on disk is checked, never trusted: a rebuild writes only where its command line says (never where a record
points), verify accounts for every tile of a job's plan and every member of its shards, and every reader of a
manifest (parents of an RGB job, training and validation tiles, samples) checks each member against its sha256.

Jobs are the engine's stand-in generator (``tests/jobs_helpers.py``); the RGB job runs a tiny SPADE model built
after ``torch.manual_seed(0)``.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.dataset.manifests import first_tiles, split_by_parent
from synthgen.engine.job import ShardTask, run_job
from synthgen.engine.ranks import Rank
from synthgen.engine.rebuild import rebuild_manifest
from synthgen.errors import ManifestError, ShardError
from synthgen.evaluation.rgb import iter_real_batches
from synthgen.io.manifest import (
    TileDataset,
    iter_samples,
    read_manifest,
    verify_manifest,
    write_rebased,
)
from synthgen.io.shards import ShardReader, record_path
from synthgen.pipelines.rgb_spade import RGBSpadePipeline
from synthgen.schema import load_scheme
from synthgen.training.tiles import LayoutTiles
from synthgen.validation.data import TileSet, TileStream, parse_set
from tests.jobs_helpers import make_job, render, sample
from tests.test_spade import _tiny_generator

runner = CliRunner()


def error_line(result) -> str:
    """The one line 'error: ...' of a failed command (exit 2, no traceback)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def finished_job(root, n: int = 7, per: int = 2, name: str = "t", config: dict | None = None):
    """A finished stand-in job under ``root`` (shards in ``root/out``, manifest ``root/m.parquet``)."""
    job = make_job(root, n=n, per=per, name=name)
    run_job(job, render(job), config or {"seed": 0})
    return job


def other_render(job):
    """The tiles of another run of ``job``: the same keys and member names, other bytes."""

    def _render(task: ShardTask):
        for i in task.indices:
            tile = sample(job, i)
            yield [{**tile, "label": (tile["label"] % 8) + 1}]

    return _render


def edited(src, dst, change) -> str:
    """Write ``change(rows)`` of manifest ``src`` as ``dst`` with the same schema and metadata (what pyarrow keeps
    when a user edits rows); returns ``dst`` as text."""
    table = pq.read_table(src)
    schema = table.schema.set(0, pa.field("key", pa.string()))  # so that a null key can be written
    pq.write_table(pa.Table.from_pylist(change(table.to_pylist()), schema=schema), dst)
    return str(dst)


def set_row(index: int, **values):
    def change(rows):
        rows[index] = {**rows[index], **values}
        return rows

    return change


def edit_records(out, change) -> None:
    """Apply ``change(record)`` to every record of a shard folder."""
    for path in sorted(out.glob("*.record.json")):
        record = json.loads(path.read_text())
        change(record)
        path.write_text(json.dumps(record))


# ---------------------------------------------------------------------------------------------- 1. manifest rebuild


def test_rebuild_never_writes_where_a_record_points(tmp_path):
    job = finished_job(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    edit_records(job.out_dir, lambda r: r["job"].update(manifest=str(victim)))
    line = error_line(runner.invoke(app, ["manifest", "rebuild", str(job.out_dir)]))
    assert "victim.txt" in line and "pass --manifest" in line
    # even when named on the command line, a file that is not a manifest is not overwritten
    line = error_line(runner.invoke(app, ["manifest", "rebuild", str(job.out_dir), "--manifest", str(victim)]))
    assert "exists and is not a parquet manifest" in line
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert "not a parquet manifest" in error_line(
        runner.invoke(app, ["manifest", "rebuild", str(job.out_dir), "--manifest", str(folder)])
    )
    assert victim.read_text() == "precious" and list(folder.iterdir()) == []
    assert not list(tmp_path.rglob("*.tmp"))


def test_rebuild_default_is_the_generators_default_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = make_job(tmp_path, name="lc")
    job.manifest_path = tmp_path / "manifests" / "lc.parquet"
    run_job(job, render(job), {"seed": 0})
    written = job.manifest_path.read_bytes()
    job.manifest_path.unlink()
    result = runner.invoke(app, ["manifest", "rebuild", "out"])
    assert result.exit_code == 0, result.output
    assert job.manifest_path.read_bytes() == written
    # an existing manifest is replaced, the same bytes again
    assert rebuild_manifest(tmp_path / "out", job.manifest_path)["tiles"] == 7
    assert job.manifest_path.read_bytes() == written and verify_manifest(job.manifest_path)["tiles"] == 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["job"].update(name="../../elsewhere/t"), "not t-00000.tar"),
        (lambda r: r.update(shard="t-00003.tar"), "not t-00000.tar"),
        (lambda r: r["job"].update(num_shards=1), "malformed"),
        (lambda r: r["job"].update(tiles="7"), "malformed"),
        (lambda r: r.update(job=["t"]), "malformed"),
        (lambda r: r["job"].update(run_config=None), "malformed"),
    ],
    ids=["name-with-path", "record-of-another-shard", "inconsistent-shard-count", "tiles-not-a-number",
         "job-not-an-object", "run-config-null"],
)  # fmt: skip
def test_rebuild_trusts_a_record_only_for_its_own_shard(tmp_path, change, message):
    job = finished_job(tmp_path)
    path = record_path(job.out_dir / "t-00000.tar")
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    with pytest.raises(ManifestError, match="t-00000.record.json: .*" + message):
        rebuild_manifest(job.out_dir, tmp_path / "r.parquet")
    assert not (tmp_path / "r.parquet").exists()


def test_rebuild_refuses_records_that_are_not_objects_and_huge_forged_plans(tmp_path):
    job = finished_job(tmp_path)
    path = record_path(job.out_dir / "t-00001.tar")
    path.write_bytes(b"\xff\xfe{")
    assert "t-00001.record.json: shard record is not valid JSON (not UTF-8 text)" in error_line(
        runner.invoke(app, ["manifest", "rebuild", str(job.out_dir), "--manifest", str(tmp_path / "r.parquet")])
    )
    path.write_text("[1, 2]")
    assert "t-00001.record.json: shard record is not a JSON object" in error_line(
        runner.invoke(app, ["manifest", "rebuild", str(job.out_dir), "--manifest", str(tmp_path / "r.parquet")])
    )
    path.unlink()
    (job.out_dir / "t-00001.tar").unlink()
    # every record claims a trillion shards: the missing ones are counted, never listed
    edit_records(job.out_dir, lambda r: r["job"].update(tiles=10**12, tiles_per_shard=1, num_shards=10**12))
    with pytest.raises(ManifestError, match=r"999999999997 of 1000000000000 shards .* \(first: t-00001.tar\)"):
        rebuild_manifest(job.out_dir, tmp_path / "r.parquet")


# ---------------------------------------------------------------------------------------------- 2. verify


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (set_row(1, shard=None), "row 1 (tile 't_0000001'): shard null is not a shard path"),
        (set_row(1, shard="/etc/passwd"), "shard '/etc/passwd' is not a shard path"),
        (set_row(1, shard="../out/t-00000.json"), "is not a shard path"),
        (set_row(1, key=None), "row 1 (tile null): key null is not a tile key"),
        (lambda rows: [rows[0], *rows], "tile key 't_0000000' is in 2 rows"),
        (set_row(1, members=None), "members is null"),
        (set_row(1, sha256=None), "sha256 is null"),
        (set_row(1, members=[], sha256=[]), "has 0 members and 0 sha256"),
        (lambda rows: set_row(1, sha256=rows[1]["sha256"][:2])(rows), "has 4 members and 2 sha256 digests"),
        (lambda rows: set_row(1, members=[None, *rows[1]["members"][1:]])(rows), "member null is not a member name"),
        (lambda rows: set_row(1, members=rows[0]["members"])(rows), "member 't_0000000.rgb.tif' is not a member"),
        (lambda rows: set_row(1, sha256=["x", *rows[1]["sha256"][1:]])(rows), "sha256 'x' of member"),
        (lambda rows: rows[:6], "shard t-00003.tar has 0 rows in the manifest, the job wrote 1 tiles"),
        (lambda rows: rows[1:], "shard t-00000.tar has 1 rows in the manifest, the job wrote 2 tiles"),
        (lambda rows: [*rows, {**rows[0], "key": "t_x"}], "member 't_0000000.rgb.tif' is not a member name"),
        (lambda rows: set_row(1, members=[rows[1]["members"][0]] * 4)(rows), "each once"),
        (set_row(1, shard="../out/u-00000.tar"), "not a shard of job 't'"),
        (set_row(1, shard="./../out/t-00000.tar"), "shard 0 of job 't' is named two ways"),
    ],
    ids=["null-shard", "absolute-shard", "shard-not-a-tar", "null-key", "duplicated-key", "null-members",
         "null-sha256", "no-members", "fewer-digests", "null-member", "member-of-another-tile", "digest-not-hex",
         "last-shard-removed", "first-row-removed", "row-added", "member-twice", "shard-of-another-job",
         "shard-named-two-ways"],
)  # fmt: skip
def test_verify_accounts_for_every_row_and_member(tmp_path, change, message):
    job = finished_job(tmp_path)
    manifest = edited(job.manifest_path, tmp_path / "bad.parquet", change)
    line = error_line(runner.invoke(app, ["verify", manifest]))
    assert "bad.parquet" in line and message in line, line


def test_key_columns_of_another_type_are_one_line(tmp_path):
    job = finished_job(tmp_path, n=2)
    table = pq.read_table(job.manifest_path)
    table = table.set_column(0, "key", pa.array([1, 2], pa.int64()))
    pq.write_table(table, tmp_path / "bad.parquet")
    line = error_line(runner.invoke(app, ["info", str(tmp_path / "bad.parquet")]))
    assert "column 'key' is int64 (a manifest's is string)" in line


def test_rows_removed_with_the_plan_edited_to_match_leave_members_nobody_names(tmp_path):
    job = finished_job(tmp_path)
    table = pq.read_table(job.manifest_path)
    meta = dict(table.schema.metadata)
    plan = json.loads(meta[b"synthgen.plan"])
    plan["shard_tiles"]["0"] = 1
    meta[b"synthgen.plan"] = json.dumps(plan).encode()
    pq.write_table(table.slice(1).replace_schema_metadata(meta), tmp_path / "bad.parquet")
    line = error_line(runner.invoke(app, ["verify", str(tmp_path / "bad.parquet")]))
    assert "t-00000.tar: holds 4 members no row of" in line and "t_0000000.height.tif" in line


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"name": "t"}, "needs a name and whole numbers"),
        ({"name": "t", "tiles": 7, "tiles_per_shard": 2, "num_shards": 4, "shard_tiles": {"0": 3}}, "holds 3 tiles"),
        ({"name": "t", "tiles": 7, "tiles_per_shard": 2, "num_shards": 4, "shard_tiles": {"²": 1}}, "shard '²'"),
        ("[not json", "not valid JSON"),
    ],
    ids=["fields-missing", "more-tiles-than-planned", "odd-digit", "not-json"],
)
def test_a_malformed_plan_is_one_line(tmp_path, plan, message):
    job = finished_job(tmp_path)
    table = pq.read_table(job.manifest_path)
    raw = plan if isinstance(plan, str) else json.dumps(plan)
    table = table.replace_schema_metadata({**table.schema.metadata, b"synthgen.plan": raw.encode()})
    pq.write_table(table, tmp_path / "bad.parquet")
    assert message in error_line(runner.invoke(app, ["verify", str(tmp_path / "bad.parquet")]))


def test_a_manifest_without_plan_or_a_partial_one_passes_only_as_a_subset(tmp_path):
    job = finished_job(tmp_path)
    resaved = tmp_path / "resaved.parquet"
    pd.read_parquet(job.manifest_path).iloc[:5].to_parquet(resaved)  # pandas keeps no synthgen metadata
    assert "no job plan in its metadata" in error_line(runner.invoke(app, ["verify", str(resaved)]))
    result = runner.invoke(app, ["verify", str(resaved), "--subset"])
    assert result.exit_code == 0 and result.output.startswith("ok: 5 tiles") and "its rows only" in result.output

    job = make_job(tmp_path / "ranks")
    for index in (0, 2):
        run_job(job, render(job), {}, rank=Rank(index, 3))
    partial = tmp_path / "partial.parquet"
    assert rebuild_manifest(job.out_dir, partial, partial=True)["shards_missing"] == 1
    line = error_line(runner.invoke(app, ["verify", str(partial)]))
    assert "1 of 4 shards of job 't' are not in this manifest (first: t-00001.tar" in line and "--subset" in line
    assert runner.invoke(app, ["verify", str(partial), "--subset"]).output.startswith("ok: 5 tiles")

    # a subset still may not hold rows of a shard it did not merge
    def grow(rows):
        first = rows[0]
        members = [m.replace("t_0000000", "t_0000002") for m in first["members"]]
        shard = first["shard"].replace("t-00000", "t-00001")
        return [*rows, {**first, "key": "t_0000002", "shard": shard, "members": members}]

    grown = edited(partial, tmp_path / "grown.parquet", grow)
    line = error_line(runner.invoke(app, ["verify", grown, "--subset"]))
    assert "t-00001.tar has 1 rows in the manifest, the job wrote 0 tiles" in line


def test_a_subset_written_by_synthgen_is_verified_by_its_rows(tmp_path):
    job = finished_job(tmp_path)
    records = pq.read_table(job.manifest_path).to_pylist()[::2]
    subset = write_rebased(job.manifest_path, records, tmp_path / "sub" / "s.parquet")
    result = runner.invoke(app, ["verify", str(subset)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 4 tiles") and "its rows only" in result.output
    assert "its rows only" not in runner.invoke(app, ["verify", str(job.manifest_path)]).output


def test_manifests_derived_by_dataset_keep_the_plan_and_verify(tmp_path):
    job = finished_job(tmp_path)
    first = first_tiles(job.manifest_path, tmp_path / "d" / "first.parquet", 3)
    assert runner.invoke(app, ["verify", str(first)]).output.startswith("ok: 3 tiles")
    assert "its rows only" in runner.invoke(app, ["verify", str(first)]).output
    whole = first_tiles(job.manifest_path, tmp_path / "d" / "all.parquet", 10)
    split = tmp_path / "d" / "split.parquet"
    split_by_parent(job.manifest_path, split, {"t_0000001"})
    for path in (whole, split):
        result = runner.invoke(app, ["verify", str(path)])
        assert result.output.startswith("ok: 7 tiles") and "its rows only" not in result.output, result.output


def test_shard_paths_that_are_not_regular_files_are_refused(tmp_path):
    job = finished_job(tmp_path)
    fifo = job.out_dir / "t-00001.tar"
    fifo.unlink()
    os.mkfifo(fifo)  # would block a reader forever
    assert "t-00001.tar: not a regular file" in error_line(runner.invoke(app, ["verify", str(job.manifest_path)]))
    fifo.unlink()
    fifo.mkdir()
    assert "t-00001.tar: not a regular file" in error_line(runner.invoke(app, ["verify", str(job.manifest_path)]))
    fifo.rmdir()
    (job.out_dir / "t-00001.tar").symlink_to(job.out_dir / "t-00000.tar")  # a link is followed, its tar checked
    line = error_line(runner.invoke(app, ["verify", str(job.manifest_path)]))
    assert "t-00001.tar: holds 8 members no row of" in line


# ---------------------------------------------------------------------------------------------- 3. readers


@pytest.fixture
def replaced(tmp_path):
    """A finished job whose shard 0 was replaced by the same shard of another run (same names, other bytes)."""
    job = finished_job(tmp_path / "a", n=4)
    other = make_job(tmp_path / "b", n=4)
    run_job(other, other_render(other), {"seed": 0})
    shutil.copy(other.out_dir / "t-00000.tar", job.out_dir / "t-00000.tar")
    return job.manifest_path


MISMATCH = r"t-00000.tar: member 't_0000000\.[a-z]+\.tif' does not match its sha256"


def test_every_reader_refuses_a_member_that_no_longer_matches(replaced):
    with pytest.raises(ShardError, match=MISMATCH):
        list(iter_samples(replaced))
    with pytest.raises(ShardError, match=MISMATCH):
        TileDataset(replaced)[0]
    with pytest.raises(ShardError, match=MISMATCH):
        LayoutTiles(replaced, "", load_scheme("oem8"))
    with pytest.raises(ShardError, match=MISMATCH):
        TileStream(TileSet.load(parse_set(f"s={replaced}:all"), "train"), load_scheme("oem8"), train=False).read(0)
    with pytest.raises(ShardError, match=MISMATCH):
        next(iter_real_batches(replaced, None, 2, None))
    # the other shard is untouched and still reads
    assert TileDataset(replaced)[2]["key"] == "t_0000002"


def test_a_reader_needs_the_digest_it_checks(replaced):
    df = read_manifest(replaced)
    row = df.iloc[2]
    with ShardReader(replaced.parent / "out" / "t-00001.tar") as reader:
        assert reader.read(row["members"][0], row["sha256"][0])
        with pytest.raises(ShardError, match="does not match its sha256"):
            reader.read(row["members"][0], row["sha256"][1])
        with pytest.raises(TypeError):
            reader.read(row["members"][0])


def test_rgb_refuses_cond_shards_replaced_by_another_runs(replaced, tmp_path):
    model = tmp_path / "spade"
    RGBSpadePipeline(_tiny_generator(), "oem8", False).save_pretrained(model)
    out, manifest = tmp_path / "rgb", tmp_path / "rgb.parquet"
    args = ["rgb", "--cond", str(replaced), "--model", str(model), "--out", str(out), "--manifest", str(manifest)]
    line = error_line(runner.invoke(app, [*args, "--tiles-per-shard", "2"]))
    assert "t-00000.tar: member 't_0000000.label.tif' does not match its sha256" in line
    assert not manifest.exists() and not [p for p in out.iterdir() if p.suffix == ".tar"]
    # the cond manifest itself fails verify, naming the same member
    assert "t_0000000" in error_line(runner.invoke(app, ["verify", str(replaced)]))


def test_a_reader_reads_no_more_than_it_checks(tmp_path):
    """The hash is taken on the bytes read: one read per member, no second pass over the shard."""
    job = finished_job(tmp_path, n=2)
    row = read_manifest(job.manifest_path).iloc[0]
    with ShardReader(job.out_dir / "t-00000.tar") as reader:
        reads = []
        original = reader._file.read
        reader._file.read = lambda size=-1: reads.append(size) or original(size)
        for name, digest in zip(row["members"], row["sha256"], strict=True):
            reader.read(name, digest)
    assert reads == [reader.index[name][1] for name in row["members"]]
    assert np.all(np.array(reads) > 0)
