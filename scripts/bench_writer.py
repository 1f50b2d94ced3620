"""The tile writer part of bench_engine.py: 512 px tiles as the rgb generators hand them to the writer, through the
engine's own writing path, inline and in writer processes; compared with GDAL's default ZSTD level and with the plain
way of writing GeoTIFFs.

A tile is ``rgb`` float32 in [0, 1] (as the rgb pipelines return it), the parent's ``label`` uint8 (written with its
colour table) and ``height`` float32; the content: mosaics of 4 x 4 real Dubai 128 px tiles, heights drawn from the
labels by the embedded height prior. ``run_job`` checks each tile, encodes its three rasters as COGs (ZSTD +
predictor), hashes them, appends them to tar shards, writes the records and the manifest. tiles/s/core is tiles per
CPU second of the processes that encode (the writer processes, read before they exit, start-up included; or the one
process inline), so it holds on a loaded machine too.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np


def writer_samples(cond: Path, count: int, side: int = 512) -> list[dict]:
    """``count`` distinct tiles of ``side`` px as an rgb generator hands them to the writer: ``rgb`` float32 in
    [0, 1], ``label`` uint8, ``height`` float32 (see the module docstring)."""
    import itertools

    from synthgen.io.manifest import iter_samples, read_manifest
    from synthgen.jobs.landcover import DEFAULT_WEIGHTS
    from synthgen.models.height_prior import HeightPrior

    prior = HeightPrior.from_pretrained(DEFAULT_WEIGHTS / "height_prior")
    df = read_manifest(cond)
    per = side // int(df["width_px"].iloc[0])
    parents = list(itertools.islice(iter_samples(df), per * per * count))
    out = []
    for t in range(count):
        chunk = parents[t * per * per : (t + 1) * per * per]

        def mosaic(kind: str, chunk=chunk) -> np.ndarray:
            return np.concatenate(
                [np.concatenate([s[kind] for s in chunk[r * per : (r + 1) * per]], axis=1) for r in range(per)]
            )

        label = mosaic("label")
        out.append(
            {
                "rgb": mosaic("rgb").astype(np.float32) / 255,
                "label": label,
                "height": prior(label, 1.0, np.random.default_rng(t)).astype(np.float32),
            }
        )
    return out


WRITER_ROUNDS = 3
WARM_UP_TILES = 32  # steady state: tiles per CPU second after the first 32, past the workers' start-up and imports


def _worker_cpu_seconds(executor) -> float | None:
    """User + system CPU seconds of a ProcessPoolExecutor's live workers (None for the inline executor)."""
    import psutil

    procs = getattr(executor, "_processes", None)
    if procs is None:
        return None
    total = 0.0
    for pid in list(procs):
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def write_run(contents: list[dict], n: int, writers: int, folder: Path, compress: str = "zstd") -> dict:
    """``n`` tiles through ``run_job`` with ``writers`` processes: wall, CPU seconds of this process and of the
    encoding processes, tiles/s and tiles per encoding CPU second."""
    from synthgen.engine import job as jobs
    from synthgen.io.geotiff import synthetic_georef
    from synthgen.io.shards import RunInfo
    from synthgen.schema import load_scheme

    run = RunInfo(generator="bench-writer", scheme="oem8", config_hash="bench")
    job = jobs.ShardJob("w", n, 64, folder, folder / "w.parquet", run, load_scheme("oem8"), compress, ("rgb",))
    made: list = []
    original = jobs.tile_executor
    jobs.tile_executor = lambda w: made.append(original(w)) or made[-1]
    seen = {"tiles": 0, "worker_cpu_s": None, "warm": None}

    def progress(k: int) -> None:
        seen["tiles"] += k
        if seen["warm"] is None and seen["tiles"] >= WARM_UP_TILES:  # the workers have started and imported
            seen["warm"] = (seen["tiles"], _worker_cpu_seconds(made[-1]), time.process_time())
        if seen["tiles"] == n:  # every tile is encoded; the workers are still alive
            seen["worker_cpu_s"] = _worker_cpu_seconds(made[-1])

    def render(task):
        for start in range(task.indices.start, task.indices.stop, 8):
            batch = []
            for i in range(start, min(start + 8, task.indices.stop)):
                georef = synthetic_georef(i, 512, 1.0)
                batch.append(
                    {
                        **contents[i % len(contents)],
                        "key": job.key(i),
                        "crs": georef.crs,
                        "transform": georef.transform,
                        "synthetic_georef": True,
                        "seed": i,
                        "parent_keys": [f"parent_{i}"],
                        "meta": {"split": "", "source": "bench"},
                    }
                )
            yield batch

    cpu, start = time.process_time(), time.perf_counter()
    try:
        jobs.run_job(job, render, {}, progress=progress, writers=writers)
    finally:
        jobs.tile_executor = original
    wall, main_cpu = time.perf_counter() - start, time.process_time() - cpu
    encode_cpu = main_cpu if writers == 0 else seen["worker_cpu_s"]
    warm_tiles, warm_cpu = n, None  # no steady state in runs of WARM_UP_TILES or fewer (--quick)
    if seen["warm"] is not None:
        warm_tiles, warm_worker_cpu, warm_main_cpu = seen["warm"]
        warm_cpu = (cpu + main_cpu - warm_main_cpu) if writers == 0 else seen["worker_cpu_s"] - warm_worker_cpu
    size = sum(p.stat().st_size for p in folder.glob("*.tar"))
    return {
        "writers": writers,
        "n": n,
        "wall_s": wall,
        "tiles_per_s": n / wall,
        "main_cpu_s": main_cpu,
        "encode_cpu_s": encode_cpu,
        "tiles_per_s_per_core": n / encode_cpu if encode_cpu else None,
        "main_cpu_ms_per_tile": 1000 * main_cpu / n,
        "steady_tiles_per_s_per_core": (n - warm_tiles) / warm_cpu if warm_cpu else None,
        "bytes_per_tile": size / n,
    }


def plain_write_run(contents: list[dict], n: int, folder: Path) -> dict:
    """The plain way: rasterio writes each raster of a tile to its own GTiff (DEFLATE), no check, hash or tar."""
    import rasterio

    from synthgen.io.geotiff import synthetic_georef

    folder.mkdir(parents=True, exist_ok=True)
    cpu, start = time.process_time(), time.perf_counter()
    for i in range(n):
        tile = contents[i % len(contents)]
        georef = synthetic_georef(i, 512, 1.0)
        rgb = (np.clip(tile["rgb"], 0, 1) * 255).round().astype(np.uint8).transpose(2, 0, 1)
        for kind, bands in (("rgb", rgb), ("label", tile["label"][None]), ("height", tile["height"][None])):
            profile = {
                "driver": "GTiff",
                "width": 512,
                "height": 512,
                "count": len(bands),
                "dtype": bands.dtype.name,
                "crs": georef.crs,
                "transform": georef.transform,
                "compress": "deflate",
            }
            with rasterio.open(folder / f"{i:07d}.{kind}.tif", "w", **profile) as dst:
                dst.write(bands)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    size = sum(p.stat().st_size for p in folder.glob("*.tif"))
    return {
        "n": n,
        "wall_s": wall,
        "tiles_per_s": n / wall,
        "main_cpu_s": cpu,
        "tiles_per_s_per_core": n / cpu,
        "bytes_per_tile": size / n,
    }


def _per_core(run: dict) -> float:
    """A run's tiles per CPU second of its encoding processes, past their start-up where measured."""
    return run.get("steady_tiles_per_s_per_core") or run["tiles_per_s_per_core"]


def _direct_vs_gdal(direct: dict, gdal: dict) -> dict:
    """``cog_writer`` against GDAL's COG driver, both at ZSTD level 1 for every raster of a tile (three)."""
    return {
        "speedup_per_core": _per_core(direct) / _per_core(gdal),
        "gdal_extra_cpu_ms_per_raster": (1000 / _per_core(gdal) - 1000 / _per_core(direct)) / 3,
        "bytes_ratio": direct["bytes_per_tile"] / gdal["bytes_per_tile"],
    }


def bench_writer(n: int, cond: Path, old_zstd_level: int, work: Path, rounds: int = WRITER_ROUNDS) -> dict:
    """The tile writer at 512 px rgb + label + height: inline, 1 and 2 writer processes, 1 through the pipe, inline at
    ``old_zstd_level``, inline with the float heights at the level of the other rasters, the same with every raster
    by GDAL's COG driver, uncompressed (what the COG writing costs without compression: the floor), and the plain
    way; ``n`` tiles each, in ``rounds`` alternated rounds, each run reported by its median round (the machine's
    speed drifts between runs of a few seconds)."""
    from synthgen.engine import job as jobs
    from synthgen.io import geotiff

    contents = writer_samples(cond, 8)
    inline = functools.partial(write_run, contents, n, 0)
    same = contextlib.nullcontext
    plan: list[tuple[str, Callable[[Path], dict], Callable[[], contextlib.AbstractContextManager]]] = [
        ("inline", inline, same),
        ("writers_1", functools.partial(write_run, contents, n, 1), same),
        ("writers_2", functools.partial(write_run, contents, n, 2), same),
        # the tiles through the executor's pipe, as where memfd_create is missing
        ("writers_1_pipe", functools.partial(write_run, contents, n, 1),
         lambda: mock.patch.object(jobs, "open_shared_slots", lambda executor, count: None)),
        (f"inline_zstd_level_{old_zstd_level}", inline,
         lambda: mock.patch.multiple(geotiff, ZSTD_LEVEL=old_zstd_level, ZSTD_LEVEL_FLOAT=old_zstd_level)),
        ("inline_float_zstd_level_1", inline,
         lambda: mock.patch.object(geotiff, "ZSTD_LEVEL_FLOAT", geotiff.ZSTD_LEVEL)),
        # every raster by GDAL's COG driver, which takes ZSTD levels >= 1 only: the same levels as the run above
        ("inline_gdal_cog", inline, lambda: mock.patch.object(geotiff, "_encode_direct", lambda *args: None)),
        ("inline_uncompressed", functools.partial(write_run, contents, n, 0, compress="none"), same),
        ("plain_gtiff_deflate", functools.partial(plain_write_run, contents, n), same),
    ]  # fmt: skip
    results: dict[str, list[dict]] = {name: [] for name, _, _ in plan}
    for r in range(rounds):
        for name, fn, settings in plan:
            with settings():
                run = fn(work / f"writer-{name}-{r}")
            run["cpu_ms_per_tile"] = 1000 / run["tiles_per_s_per_core"] if run["tiles_per_s_per_core"] else None
            results[name].append(run)
            steady = run.get("steady_tiles_per_s_per_core")
            print(
                f"writer {name:26s} round {r + 1}/{rounds} {run['tiles_per_s']:6.1f} tiles/s  "
                f"{run['tiles_per_s_per_core']:6.1f}" + (f" ({steady:6.1f} steady)" if steady else "")
                + f" tiles/s/core  {run['bytes_per_tile'] / 1e6:.2f} MB/tile",
                file=sys.stderr,
            )  # fmt: skip
    runs: dict[str, dict] = {}
    for name, rounds_of_run in results.items():
        runs[name] = sorted(rounds_of_run, key=_per_core)[len(rounds_of_run) // 2]
        runs[name]["rounds_tiles_per_s_per_core"] = [_per_core(run) for run in rounds_of_run]
    old = runs[f"inline_zstd_level_{old_zstd_level}"]
    return {
        "tile": "512 x 512: rgb float32 [0, 1] -> uint8 x 3, label uint8 + colour table, height float32; COG, ZSTD "
        f"level {geotiff.ZSTD_LEVEL} (height {geotiff.ZSTD_LEVEL_FLOAT}) + predictor, sha256, tar, records, manifest",
        "content": "mosaics of 4 x 4 Dubai 128 px tiles (rgb, labels), heights from the embedded height prior",
        "zstd_level": geotiff.ZSTD_LEVEL,
        "zstd_level_float": geotiff.ZSTD_LEVEL_FLOAT,
        "rounds": rounds,
        "runs": runs,
        # the target's number: a writer process of a long job (the GPU default), past its start-up
        "tiles_per_s_per_core": _per_core(runs["writers_1"]),
        "speedup_vs_old_zstd_level_per_core": _per_core(runs["inline"]) / _per_core(old),
        "speedup_vs_plain_per_core": _per_core(runs["inline"]) / _per_core(runs["plain_gtiff_deflate"]),
        "bytes_vs_old_zstd_level": runs["inline"]["bytes_per_tile"] / old["bytes_per_tile"],
        "hand_over": {  # one writer process: its tiles through shared memory vs through the executor's pipe
            way: {key: runs[run][key] for key in ("main_cpu_ms_per_tile", "steady_tiles_per_s_per_core")}
            for way, run in (("shared_memory", "writers_1"), ("pipe", "writers_1_pipe"))
        },
        "direct_cog_writer": _direct_vs_gdal(runs["inline_float_zstd_level_1"], runs["inline_gdal_cog"]),
        "float_level": {
            "speedup_per_core": _per_core(runs["inline"]) / _per_core(runs["inline_float_zstd_level_1"]),
            "bytes_ratio": runs["inline"]["bytes_per_tile"] / runs["inline_float_zstd_level_1"]["bytes_per_tile"],
        },
    }
