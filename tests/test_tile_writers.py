"""Tile encoding in writer processes: the same bytes as the plain single-process ShardWriter, tiles in order whatever
finishes first, and a broken tile found in a worker aborts its shard like in the generating process."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from synthgen.engine.job import TileError, run_job
from synthgen.engine.writers import EncodeSpec, OrderedTiles
from synthgen.io.shards import ShardWriter, read_record
from tests.jobs_helpers import files, make_job, render, sample


def _tars(folder) -> dict[str, bytes]:
    return {name: data for name, data in files(folder).items() if name.endswith(".tar")}


def test_pooled_writers_give_the_bytes_of_the_plain_writer(tmp_path):
    plain = make_job(tmp_path / "plain")
    plain.out_dir.mkdir(parents=True)
    for task in plain.plan():
        with ShardWriter(task.path, plain.run, plain.scheme, plain.compress) as writer:
            for index in task.indices:
                writer.write(sample(plain, index))
    pooled = make_job(tmp_path / "pooled")
    summary = run_job(pooled, render(pooled, batch=5), {}, writers=2)
    assert summary["tiles"] == 7 and summary["shards_written"] == 4
    assert len(_tars(plain.out_dir)) == 4 and _tars(plain.out_dir) == _tars(pooled.out_dir)
    for task in plain.plan():
        assert read_record(task.path)["rows"] == read_record(pooled.out_dir / task.path.name)["rows"]


def test_pooled_and_inline_encoding_of_float_rgb_agree(tmp_path):
    pooled, inline = make_job(tmp_path / "pooled"), make_job(tmp_path / "inline")
    run_job(pooled, render(pooled, float_rgb=True), {"seed": 0}, writers=2)
    run_job(inline, render(inline, float_rgb=True), {"seed": 0}, writers=0)
    assert _tars(pooled.out_dir) == _tars(inline.out_dir)
    assert pooled.manifest_path.read_bytes() == inline.manifest_path.read_bytes()


class _SlowFirst(ThreadPoolExecutor):
    """A thread pool whose first job finishes last."""

    def submit(self, fn, /, *args, **kwargs):
        delay = 0.3 if args[0]["key"].endswith("0000000") else 0.0

        def slow():
            time.sleep(delay)
            return fn(*args, **kwargs)

        return super().submit(slow)


def test_tiles_are_appended_in_submission_order(tmp_path):
    job = make_job(tmp_path, n=4, per=4)
    job.out_dir.mkdir(parents=True)
    task = job.plan()[0]
    with _SlowFirst(4) as executor, ShardWriter(task.path, job.run, job.scheme) as writer:
        tiles = OrderedTiles(executor, writer, EncodeSpec(task.path.name, job.run, job.scheme, "zstd", ()), 8)
        added = sum(tiles.put(sample(job, i)) for i in range(4))
        added += tiles.flush()
    assert added == 4 and [row["key"] for row in read_record(task.path)["rows"]] == [job.key(i) for i in range(4)]


def test_a_nan_tile_found_by_a_writer_process_aborts_its_shard(tmp_path):
    job = make_job(tmp_path)

    def broken(task):
        for batch in render(job)(task):
            for tile in batch:
                if tile["key"] == job.key(3):
                    tile["height"] = np.full_like(tile["height"], np.nan)
            yield batch

    with pytest.raises(TileError, match="tile 't_0000003': the generated height raster holds NaN in 256 of 256"):
        run_job(job, broken, {}, writers=2)
    assert sorted(files(job.out_dir)) == ["t-00000.record.json", "t-00000.tar"]
    assert not job.manifest_path.exists()


def test_the_tile_check_counts_nan_and_flags_constant_rasters():
    from synthgen.engine.writers import check_tile

    rgb = np.full((8, 8, 3), 0.5, np.float32)
    height = np.arange(64, dtype=np.float32).reshape(8, 8)
    height[3, 3] = np.inf
    assert check_tile({"key": "k", "rgb": rgb, "height": height}, ("rgb", "height", "label")) == ["rgb_constant"]
    assert check_tile({"key": "k", "label": np.full((8, 8), 4, np.uint8)}, ("label",)) == ["label_constant"]
    assert check_tile({"key": "k", "height": np.zeros((0, 8), np.float32)}, ("height",)) == []
    rgb[0, :3] = np.nan  # 3 pixels, 9 values
    rgb[7, 7, 2] = np.nan
    with pytest.raises(TileError, match="tile 'k': the generated rgb raster holds NaN in 10 of 192 values"):
        check_tile({"key": "k", "rgb": rgb}, ("rgb",))
    assert check_tile({"key": "k", "rgb": rgb}, ("height",)) == []  # not generated: not checked


def test_a_float_rgb_in_range_is_rounded_as_the_clipped_one(tmp_path):
    from synthgen.engine.writers import EncodeSpec, encode_checked

    job = make_job(tmp_path)
    base = sample(job, 0, float_rgb=True)
    grid = (np.arange(16 * 16 * 3).reshape(16, 16, 3) % 511 / 510).astype(np.float32)  # k / 510: halves at 255
    rgbs = {
        "random": base["rgb"][:16, :16],
        "halves": grid,
        "float64": grid.astype(np.float64),
        "not contiguous": np.ascontiguousarray(base["rgb"][:32, :32].transpose(1, 0, 2))[::2, ::2],
        "out of range": grid * 1.5 - 0.25,
        "-0": np.where(grid == 0, -0.0, grid).astype(np.float32),
    }
    for name, rgb in rgbs.items():
        tile = {**base, "rgb": rgb, "label": base["label"][:16, :16], "height": base["height"][:16, :16]}
        checked = encode_checked(tile, EncodeSpec("s.tar", job.run, job.scheme, "zstd", ("rgb",)))
        clipped = encode_checked(tile, EncodeSpec("s.tar", job.run, job.scheme, "zstd", ()))  # unchecked: clipped
        want = np.rint(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
        assert checked.members == clipped.members, name
        assert (
            checked.members[0][1]
            == encode_checked({**tile, "rgb": want}, EncodeSpec("s.tar", job.run, job.scheme, "zstd", ())).members[0][1]
        ), name
