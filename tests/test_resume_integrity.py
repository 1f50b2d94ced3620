"""What a job trusts when it resumes (issue 16, items 4-6, 13, 14), on the engine with the stand-in generator of
tests/jobs_helpers.py: a finished shard must be this job's (config and weights hash, the plan's keys, a record that
matches its tar), the weights hash covers every file that defines a model, a manifest never outlives its run, one
job at a time writes a folder (its lock says who holds it) and cleans only its own files, and SIGINT / SIGTERM stop
a job cleanly and say what was kept. The same symptoms through the CLI are in tests/test_bad_input.py and
tests/test_crash_safety.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest

from synthgen.engine.job import run_job
from synthgen.engine.lock import LOCK_NAME, output_lock, part_lock_name
from synthgen.engine.ranks import Rank
from synthgen.engine.weights import model_files, weights_hash
from synthgen.errors import FolderBusyError, JobInterrupted, ShardError
from synthgen.io.shards import record_path
from tests.jobs_helpers import files, make_job, render


def _finished(tmp_path: Path, name: str = "run", **change):
    """A finished job (7 tiles, shards of 2) under ``tmp_path / name``, with ``change`` applied to its job."""
    job = make_job(tmp_path / name)
    job = dataclasses.replace(job, **change)
    run_job(job, render(job), {"seed": 0})
    return job


def _edit_record(shard: Path, edit) -> None:
    record = json.loads(record_path(shard).read_text())
    edit(record)
    record_path(shard).write_text(json.dumps(record, sort_keys=True))


def _refused(job, *names: str) -> str:
    """Rerunning ``job`` is a ShardError naming ``names``, and changes no file."""
    before = files(job.out_dir)
    with pytest.raises(ShardError) as caught:
        run_job(job, render(job), {"seed": 0})
    message = str(caught.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message
    assert files(job.out_dir) == before
    return message


# ------------------------------------------------------------------------------------ item 4: finished shards


def test_a_shard_of_another_run_dropped_in_is_refused_naming_it_and_both_hashes(tmp_path):
    job = _finished(tmp_path, "mine")
    other = _finished(tmp_path, "other", run=dataclasses.replace(job.run, config_hash="d" * 64))
    shard = job.out_dir / "t-00002.tar"
    for path in (shard, record_path(shard)):
        path.unlink()
        path.write_bytes((other.out_dir / path.name).read_bytes())
    job.manifest_path.unlink()
    _refused(job, "t-00002.tar", "holds shards of another run", "config dddddddddddd", "this run: config cccccccccccc")
    assert not job.manifest_path.exists()


def test_a_shard_of_other_weights_is_refused(tmp_path):
    job = _finished(tmp_path)
    other = dataclasses.replace(job, run=dataclasses.replace(job.run, weights_hash="v" * 64))
    _refused(other, "t-00000.tar", "weights wwwwwwwwwwww", "this run: config cccccccccccc, weights vvvvvvvvvvvv")


def test_only_one_row_of_another_run_in_the_last_shard_is_refused(tmp_path):
    """Every row of every finished shard is compared, not the first shard's first row."""
    job = _finished(tmp_path)
    _edit_record(job.out_dir / "t-00003.tar", lambda r: r["rows"][-1].update(config_hash="e" * 64))
    _refused(job, "t-00003.tar", "config eeeeeeeeeeee")


def test_a_record_whose_rows_were_emptied_is_refused(tmp_path):
    job = _finished(tmp_path)
    _edit_record(job.out_dir / "t-00001.tar", lambda r: r.update(rows=[]))
    _refused(job, "t-00001.tar", "lists no tiles where the plan has 2 tiles (t_0000002 .. t_0000003)")


def test_a_record_missing_one_row_is_refused(tmp_path):
    job = _finished(tmp_path)
    _edit_record(job.out_dir / "t-00001.tar", lambda r: r["rows"].pop())
    _refused(job, "t-00001.tar", "lists 1 tile (t_0000002)")


def test_a_record_with_a_row_too_many_is_refused(tmp_path):
    job = _finished(tmp_path)
    _edit_record(job.out_dir / "t-00003.tar", lambda r: r["rows"].append(dict(r["rows"][0], key="t_0000007")))
    _refused(job, "t-00003.tar", "lists 2 tiles (t_0000006 .. t_0000007) where the plan has 1 tile (t_0000006)")


def test_a_record_and_tar_copied_from_another_shard_are_refused(tmp_path):
    """Shard 0 copied over shard 1, its keys edited to shard 1's: the record names another shard and members."""
    job = _finished(tmp_path)
    first, second = job.out_dir / "t-00000.tar", job.out_dir / "t-00001.tar"
    second.write_bytes(first.read_bytes())
    record = json.loads(record_path(first).read_text())
    for row, key in zip(record["rows"], ("t_0000002", "t_0000003"), strict=True):
        row["key"] = key
    record_path(second).write_text(json.dumps(record))
    _refused(job, "t-00001.tar", "its record is not this shard's", "'t-00000.tar'")


def test_a_record_listing_other_members_than_its_tar_is_refused(tmp_path):
    """A record whose member list was edited (tar untouched, sha256 still matching) is found by reading the tar."""
    job = _finished(tmp_path)
    _edit_record(job.out_dir / "t-00002.tar", lambda r: r["rows"][0]["members"].pop())
    _refused(job, "t-00002.tar", "holds other members than its record lists (8 in the tar, 7 listed)")


def test_a_record_with_a_wrong_member_hash_is_refused(tmp_path):
    job = _finished(tmp_path)
    _edit_record(job.out_dir / "t-00000.tar", lambda r: r["rows"][1]["sha256"].__setitem__(0, "0" * 64))
    _refused(job, "t-00000.tar", "holds other members than its record lists")


def test_a_record_without_rows_is_refused(tmp_path):
    job = _finished(tmp_path)
    _edit_record(job.out_dir / "t-00000.tar", lambda r: r.update(rows="none"))
    _refused(job, "t-00000.record.json", "not a JSON object with a list of rows")  # read_record refuses it first


def test_a_job_that_drops_tiles_accepts_shards_holding_some_of_their_keys(tmp_path):
    """Ingest leaves tiles under min_labelled_fraction out: a finished shard may hold some of its keys, in order."""
    job = dataclasses.replace(make_job(tmp_path), keys=[f"k{i}" for i in range(7)], drops_tiles=True)

    def dropping(task):
        for batch in render(job)(task):
            yield [s for s in batch if s["key"] != "k2"]

    run_job(job, dropping, {})
    job.manifest_path.unlink()
    assert run_job(job, dropping, {})["shards_skipped"] == 4
    _edit_record(job.out_dir / "t-00001.tar", lambda r: r["rows"][0].update(key="k4"))
    _refused(job, "t-00001.tar", "lists 1 tile (k4) where the plan has 2 tiles (k2 .. k3) or some of them")


def test_another_parts_shard_changed_while_this_part_ran_is_refused_before_the_merge(tmp_path):
    job = make_job(tmp_path)
    run_job(job, render(job), {}, rank=Rank(1, 2))
    foreign = job.out_dir / "t-00001.tar"

    def tampering(task):
        _edit_record(foreign, lambda r: r["rows"][0].update(config_hash="f" * 64))
        yield from render(job)(task)

    with pytest.raises(ShardError, match="t-00001.tar was made with config ffffffffffff"):
        run_job(job, tampering, {}, rank=Rank(0, 2))
    assert not job.manifest_path.exists()


# ------------------------------------------------------------------------------------ item 5: the weights hash


@pytest.fixture
def model(tmp_path) -> Path:
    """A diffusers-style model folder: weights, component configs, a scheduler, a tokenizer, a JSON prior."""
    root = tmp_path / "model"
    for rel, text in {
        "model_index.json": "{}",
        "unet/config.json": '{"layers": 2}',
        "unet/diffusion_pytorch_model.safetensors": "weights",
        "scheduler/scheduler_config.json": '{"steps": 10}',
        "tokenizer/tokenizer.json": '{"vocab": {}}',
        "tokenizer/merges.txt": "a b",
        "height_prior/height_prior.json": '{"gsd": 1.0}',
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize(
    "rel",
    [
        "height_prior/height_prior.json",
        "unet/config.json",
        "scheduler/scheduler_config.json",
        "tokenizer/tokenizer.json",
        "tokenizer/merges.txt",
        "model_index.json",
        "unet/diffusion_pytorch_model.safetensors",
    ],
)
def test_editing_any_file_that_defines_the_model_changes_its_weights_hash(model, rel):
    before = weights_hash(model)
    (model / rel).write_text((model / rel).read_text() + " ")
    assert weights_hash(model) != before


def test_a_new_component_file_changes_the_weights_hash(model):
    before = weights_hash(model)
    (model / "text_encoder").mkdir()
    (model / "text_encoder" / "spiece.model").write_bytes(b"sentencepiece")
    assert weights_hash(model) != before


@pytest.mark.parametrize(
    "rel", [".cache/huggingface/x.lock", ".huggingface/meta", "previews/step-1.png", "README.md", "unet/a.json.1.tmp"]
)
def test_caches_previews_and_notes_leave_the_weights_hash_alone(model, rel):
    before = weights_hash(model)
    (model / rel).parent.mkdir(parents=True, exist_ok=True)
    (model / rel).write_text("x")
    assert weights_hash(model) == before
    assert model / rel not in model_files(model)


# ------------------------------------------------------------------------------------ item 6: stale manifests


def test_a_manifest_goes_when_a_run_into_an_emptied_folder_starts(tmp_path):
    """`rm -rf out` after a finished run, then a new run stopped after its first shard: no manifest is left that
    describes the old run's tiles."""
    job = _finished(tmp_path)
    for path in job.out_dir.iterdir():
        path.unlink()
    job.out_dir.rmdir()

    def stopping(task):
        if task.indices.start:
            raise KeyboardInterrupt
        yield from render(job)(task)

    with pytest.raises(JobInterrupted, match="1 of 4 shards"):
        run_job(job, stopping, {"seed": 0}, config_paths=[tmp_path / "m.config.yaml"])
    assert not job.manifest_path.exists()


def test_saved_configs_of_an_earlier_run_go_with_its_manifest(tmp_path):
    job = make_job(tmp_path)
    saved = tmp_path / "m.config.yaml"
    saved.write_text("old: true\n")
    job.manifest_path.write_bytes(b"an old manifest")
    job.out_dir.mkdir()
    (job.out_dir / "t-00000.tar.tmp").write_bytes(b"killed")

    def stopping(task):
        raise KeyboardInterrupt
        yield

    with pytest.raises(JobInterrupted, match="0 of 4 shards"):
        run_job(job, stopping, {}, config_paths=[saved])
    assert not job.manifest_path.exists() and not saved.exists()


def test_a_rerun_of_a_finished_job_keeps_then_rewrites_the_same_manifest(tmp_path):
    job = _finished(tmp_path)
    listed = job.manifest_path.read_bytes()
    assert run_job(job, render(job), {"seed": 0})["shards_written"] == 0
    assert job.manifest_path.read_bytes() == listed


def test_a_refused_run_leaves_the_manifest_alone(tmp_path):
    job = _finished(tmp_path)
    listed = job.manifest_path.read_bytes()
    _edit_record(job.out_dir / "t-00001.tar", lambda r: r.update(rows=[]))
    _refused(job, "t-00001.tar")
    assert job.manifest_path.read_bytes() == listed


# ------------------------------------------------------------------------------------ item 13: the folder lock


def test_a_folder_another_job_writes_is_refused_saying_who(tmp_path):
    job = make_job(tmp_path)
    job.out_dir.mkdir(parents=True)
    with output_lock(job.out_dir, "someone-else"), pytest.raises(FolderBusyError) as caught:
        run_job(job, render(job), {})
    message = str(caught.value)
    assert f"{job.out_dir}: another synthgen job is writing this folder (pid {os.getpid()}, started " in message
    assert "command: " in message and "use another --out" in message
    assert sorted(p.name for p in job.out_dir.iterdir()) == [], "the lock file goes with its holder"
    run_job(job, render(job), {})  # released: the folder is free again
    assert not (job.out_dir / LOCK_NAME).exists()


def test_a_killed_holders_lock_file_does_not_lock(tmp_path):
    """kill -9 leaves the lock file, never the lock: the kernel drops a flock with its process."""
    job = make_job(tmp_path)
    job.out_dir.mkdir(parents=True)
    (job.out_dir / LOCK_NAME).write_text(json.dumps({"pid": 1, "command": "killed", "started": "long ago"}))
    assert run_job(job, render(job), {})["tiles"] == 7
    assert not (job.out_dir / LOCK_NAME).exists()


def test_parts_of_one_job_share_the_folder_but_a_whole_job_or_a_second_copy_of_a_part_does_not(tmp_path):
    job = make_job(tmp_path)
    job.out_dir.mkdir(parents=True)
    with output_lock(job.out_dir, "t", 1, 2):
        assert run_job(job, render(job), {}, rank=Rank(0, 2))["shards_written"] == 2
        with pytest.raises(FolderBusyError, match=r"part-1-of-2: pid \d+, started"):
            run_job(job, render(job), {})
        with pytest.raises(FolderBusyError, match=rf"this folder \(pid {os.getpid()}, started "):
            run_job(job, render(job), {}, rank=Rank(1, 2))
        assert (job.out_dir / part_lock_name("t", 1, 2)).is_file()
    assert run_job(job, render(job), {}, rank=Rank(1, 2))["tiles"] == 7
    assert not list(job.out_dir.glob(".synthgen*"))


def test_a_part_is_refused_while_a_whole_job_writes_the_folder(tmp_path):
    job = make_job(tmp_path)
    job.out_dir.mkdir(parents=True)
    with output_lock(job.out_dir, "t"), pytest.raises(FolderBusyError, match=f"pid {os.getpid()}"):
        run_job(job, render(job), {}, rank=Rank(0, 2))


def test_a_job_cleans_only_its_own_unfinished_files(tmp_path):
    """Another job's (other --name) temporary files and record-less tars in the same folder stay."""
    job = make_job(tmp_path)
    job.out_dir.mkdir(parents=True)
    theirs = [job.out_dir / n for n in ("u-00000.tar.tmp", "u-00001.tar", "u-00000.record.json.tmp", "notes.tmp")]
    mine = [job.out_dir / n for n in ("t-00000.tar.tmp", "t-00002.tar", "t-00001.record.json.tmp")]
    for path in [*theirs, *mine]:
        path.write_bytes(b"left by a killed run")
    manifest_tmp = job.manifest_path.with_name(job.manifest_path.name + ".4242.tmp")
    manifest_tmp.write_bytes(b"a killed run's manifest")
    summary = run_job(job, render(job), {})
    assert summary["unfinished_removed"] == 4
    assert all(p.exists() for p in theirs) and not manifest_tmp.exists()
    assert (job.out_dir / "t-00002.tar").stat().st_size > 100  # rewritten, not the leftover


# ------------------------------------------------------------------------------------ item 14: SIGINT, SIGTERM


def _stop_at_shard(job, shard: int, how):
    """A render that stops the job (``how()``) in the middle of shard ``shard``."""

    def _render(task):
        for batch in render(job, batch=1)(task):
            yield batch
            if task.indices.start == shard * job.tiles_per_shard:
                how()

    return _render


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("how", "name", "code"),
    [
        (_raise_keyboard_interrupt, "SIGINT", 130),
        (lambda: os.kill(os.getpid(), signal.SIGTERM), "SIGTERM", 143),
    ],
)
def test_a_stopped_job_says_what_it_kept_and_resumes_byte_identically(tmp_path, how, name, code):
    clean = _finished(tmp_path, "clean")
    job = make_job(tmp_path / "stopped")
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(JobInterrupted) as caught:
        run_job(job, _stop_at_shard(job, 2, how), {"seed": 0})
    assert signal.getsignal(signal.SIGTERM) is handler, "the job's SIGTERM handler outlived it"
    assert caught.value.exit_code == code
    assert str(caught.value) == (
        f"stopped by {name}: 2 of 4 shards in {job.out_dir} are finished and kept (the shard being written was "
        "dropped); run the same command again to resume"
    )
    assert sorted(files(job.out_dir)) == sorted(f"t-0000{i}.{s}" for i in (0, 1) for s in ("tar", "record.json"))
    assert not job.manifest_path.exists()
    assert run_job(job, render(job), {"seed": 0})["shards_skipped"] == 2
    assert _contents(job.out_dir) == _contents(clean.out_dir)


def _contents(folder: Path) -> dict:
    """The tars of a folder and the rows of their records (which also name the manifest's path)."""
    tars = {name: data for name, data in files(folder).items() if name.endswith(".tar")}
    rows = {p.name: json.loads(p.read_text())["rows"] for p in sorted(folder.glob("*.record.json"))}
    return {"tars": tars, "rows": rows, "names": sorted(files(folder))}


def test_a_stopped_part_counts_its_own_shards(tmp_path):
    job = make_job(tmp_path)
    with pytest.raises(JobInterrupted, match=f"stopped by SIGINT: 1 of 2 shards of part 1 of 2 in {job.out_dir}"):
        run_job(job, _stop_at_shard(job, 3, _raise_keyboard_interrupt), {}, rank=Rank(1, 2))


def test_a_stop_between_a_shards_rename_and_its_record_leaves_no_tar_without_record(tmp_path, monkeypatch):
    import synthgen.io.shards as shards

    job = make_job(tmp_path)
    atomic_write = shards.atomic_write
    calls = []

    def stopped_at_the_second_record(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return atomic_write(*args, **kwargs)

    monkeypatch.setattr(shards, "atomic_write", stopped_at_the_second_record)
    with pytest.raises(JobInterrupted, match="1 of 4 shards"):
        run_job(job, render(job), {})
    assert sorted(files(job.out_dir)) == ["t-00000.record.json", "t-00000.tar"]
