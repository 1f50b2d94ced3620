"""Tiles handed to writer processes through shared memory (synthgen.engine.handover): the same bytes as through the
pipe, the pipe where a tile does not fit or writers cannot open the memory, and slots given back on errors."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from synthgen.engine import handover as tile_handover
from synthgen.engine import job as jobs
from synthgen.engine.handover import SharedBytes, SharedSlots, encode_in_slot, open_shared_slots
from synthgen.engine.job import TileError, run_job
from synthgen.engine.writers import EncodeSpec, OrderedTiles, encode_checked
from synthgen.io.geotiff import synthetic_georef
from synthgen.io.shards import ShardWriter, read_record
from tests.jobs_helpers import files, make_job

SIDES = [192, 192, 96, 256, 192, 192, 64]  # the 256 px tile does not fit the slots the first tiles made


def big_sample(job, index: int, side: int | None = None) -> dict:
    """Tile ``index`` at ``SIDES[index]`` px (arrays above the in-place threshold), float rgb as diffusers gives."""
    side = side or SIDES[index % len(SIDES)]
    rng = np.random.default_rng(index)
    georef = synthetic_georef(index, side, 1.0)
    return {
        "key": job.key(index),
        "rgb": rng.random((side, side, 3), dtype=np.float32),
        "label": rng.integers(1, 9, (side, side), dtype=np.uint8),
        "height": (rng.random((side, side), dtype=np.float32) * 30).round(2),
        "crs": georef.crs,
        "transform": georef.transform,
        "synthetic_georef": True,
        "seed": index,
        "meta": {"split": "", "source": "test"},
    }


def render(job, batch: int = 3):
    def _render(task):
        for start in range(task.indices.start, task.indices.stop, batch):
            yield [big_sample(job, i) for i in range(start, min(start + batch, task.indices.stop))]

    return _render


def _tars(folder: Path) -> dict[str, bytes]:
    return {name: data for name, data in files(folder).items() if name.endswith(".tar")}


def test_tiles_through_shared_memory_are_the_bytes_of_the_pipe_and_of_one_process(tmp_path, monkeypatch):
    packed, pack = [], SharedSlots.pack

    def counted_pack(self, sample):
        packed.append(pack(self, sample))
        return packed[-1]

    monkeypatch.setattr(SharedSlots, "pack", counted_pack)
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    shared = make_job(tmp_path / "shared", per=4)
    run_job(shared, render(shared), {}, writers=2)
    assert len(packed) == 7 and all(packed)  # the 256 px tile got a slot of its own
    if os.path.isdir("/dev/shm"):
        assert set(os.listdir("/dev/shm")) == shm_before  # memfd: nothing named to leak if a job is killed

    monkeypatch.setattr(jobs, "open_shared_slots", lambda executor, count: None)
    piped, inline = make_job(tmp_path / "piped", per=4), make_job(tmp_path / "inline", per=4)
    run_job(piped, render(piped), {}, writers=2)
    run_job(inline, render(inline), {}, writers=0)
    assert len(_tars(shared.out_dir)) == 2
    assert _tars(shared.out_dir) == _tars(piped.out_dir) == _tars(inline.out_dir)
    assert shared.manifest_path.read_bytes() == piped.manifest_path.read_bytes() == inline.manifest_path.read_bytes()


def test_a_slot_carries_a_tile_both_ways_and_a_larger_one_is_refused(tmp_path):
    job = make_job(tmp_path)
    spec = EncodeSpec("t-00000.tar", job.run, job.scheme, "zstd", ("rgb", "height"))
    with ThreadPoolExecutor(1) as executor:  # the same process: /proc/self is where the writer looks
        slots = open_shared_slots(executor, 1)
        assert slots is not None
        try:
            tile = big_sample(job, 0, side=128)
            sent, index, ref, in_bytes = slots.pack(tile)
            assert in_bytes >= tile["rgb"].nbytes + tile["height"].nbytes
            assert isinstance(sent["rgb"], tile_handover.SharedArray) and sent["key"] == tile["key"]
            encoded = executor.submit(encode_in_slot, encode_checked, sent, ref, in_bytes, spec).result()
            assert all(isinstance(data, SharedBytes) for _, data in encoded.members)
            assert slots.unpack(index, encoded) == encode_checked(tile, spec)
            assert slots.pack(big_sample(job, 1, side=256)) is None  # larger than the one slot there may be
            assert slots.pack(big_sample(job, 2, side=64)) is not None  # a smaller one fits in it
        finally:
            slots.close()


def test_no_slots_where_writers_cannot_open_them(monkeypatch):
    class Refusing(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            future: Future = Future()
            future.set_exception(PermissionError(13, "Permission denied", "/proc/1/fd/3"))
            return future

    with Refusing(1) as executor:
        assert open_shared_slots(executor, 4) is None
    monkeypatch.delattr(os, "memfd_create")
    with ThreadPoolExecutor(1) as executor:
        assert open_shared_slots(executor, 4) is None


def test_a_nan_tile_in_a_slot_is_refused_and_its_slot_given_back(tmp_path):
    job = make_job(tmp_path)
    job.out_dir.mkdir(parents=True)
    task = job.plan()[0]
    spec = EncodeSpec(task.path.name, job.run, job.scheme, "zstd", ("rgb", "height"))
    broken = big_sample(job, 1, side=128)
    broken["height"][5, 5] = np.nan
    with ThreadPoolExecutor(2) as executor:
        slots = open_shared_slots(executor, 3)
        try:
            with ShardWriter(task.path, job.run, job.scheme) as writer:
                tiles = OrderedTiles(executor, writer, spec, 2, slots)
                tiles.put(big_sample(job, 0, side=128))
                with pytest.raises(TileError, match="the generated height raster holds NaN in 1 of 16384 values"):
                    tiles.put(broken)  # raised here if the writer is done already, else by flush
                    tiles.flush()
                assert sorted(slots.free) == list(range(len(slots.slots)))
                tiles.put(big_sample(job, 2, side=128))
                tiles.flush()
            assert [row["key"] for row in read_record(task.path)["rows"]] == [job.key(0), job.key(2)]
        finally:
            slots.close()
