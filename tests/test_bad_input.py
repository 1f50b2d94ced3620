"""Bad input through the real CLI, as one table: every command, bad flags, bad configs, bad manifests, bad models
and bad paths. Each case must end in one line 'error: ...' on stderr naming what was wrong, a non-zero exit, no
traceback, and nothing half-written: no manifest, no shard, no temporary file (no file at all) is left behind.

A row is ``case(id, args, *names, setup=...)``. ``<thing>`` in ``args`` and ``names`` is filled in from ``Bench``:
a path the case needs, built on first use (a copy of an ingested manifest, a model folder with a corrupt
``model_index.json``, a read-only folder, ...); ``setup(bench)`` breaks what the case is about before the run.
Models are tiny, built from configs after ``torch.manual_seed(0)``; never the embedded defaults.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
import yaml
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from safetensors.torch import load_file
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.config import CONFIGS_DIR, build_config
from synthgen.io.shards import read_record, record_path, sha256_file
from synthgen.jobs.ingest import IngestConfig, run_ingest
from synthgen.jobs.landcover import LandCoverGenerateConfig, run_landcover
from synthgen.pipelines.rgb_spade import RGBSpadePipeline
from tests.conftest import plain_config_values, scene_config_values
from tests.data.make_fixtures import write_tif
from tests.test_landcover import _tiny_pipeline
from tests.test_spade import _tiny_generator

runner = CliRunner()


def assert_one_line_error(result, *names: str) -> str:
    """The run failed with exactly one non-empty output line, 'error: ...', naming every one of ``names``."""
    output = result.output
    assert result.exit_code != 0, output
    assert "Traceback" not in output
    # an uncaught exception is a traceback in a real terminal; the CLI must only ever exit
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout.strip() == "", "the error must go to stderr, and nothing else to stdout"
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    for name in names:
        assert str(name) in lines[0], f"{name!r} not named in: {lines[0]}"
    return lines[0]


def files_under(*roots: Path) -> set[Path]:
    """Every file below the given folders."""
    return {p for root in roots for p in Path(root).rglob("*") if p.is_file() or p.is_symlink()}


# ---------------------------------------------------------------------------------------------- shared inputs


@pytest.fixture(scope="module")
def shared(fixtures_dir, tmp_path_factory) -> dict[str, Path]:
    """Inputs every case may read (never break): the scene fixture ingested in 32 px tiles, a tiny land-cover
    pipeline and 2 of its tiles, and a tiny SPADE pipeline (random weights, built after torch.manual_seed(0))."""
    root = tmp_path_factory.mktemp("bad-input-shared")
    config = build_config(IngestConfig, scene_config_values(fixtures_dir, root))
    run_ingest(config)
    lc_model = root / "lc_model"
    _tiny_pipeline().save_pretrained(lc_model)
    lc = LandCoverGenerateConfig(
        n=2, model=str(lc_model), size=16, steps=1, name="lc", out=str(root / "lc"), manifest=str(root / "lc.parquet")
    )
    run_landcover(lc)
    spade_model = root / "spade_model"
    RGBSpadePipeline(_tiny_generator(), "oem8", False).save_pretrained(spade_model)
    return {
        "root": root,
        "scene": config.manifest_path,
        "lc_model": lc_model,
        "landcover": lc.manifest_path,
        "spade_model": spade_model,
    }


class Bench:
    """What one case runs against: ``bench[name]`` is the path (as text) of a named input, built on first use by
    ``BUILDERS[name](bench)`` inside the case's own folder; ``ingest`` is an ingest config the case may change."""

    def __init__(self, tmp: Path, shared: dict[str, Path], fixtures_dir: Path):
        self.tmp = tmp
        self.shared = shared
        self.fixtures_dir = fixtures_dir
        self.ingest = scene_config_values(fixtures_dir, tmp)
        self.cleanups: list[Callable[[], None]] = []
        self._built: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self._built:
            if name in self.shared:
                self._built[name] = str(self.shared[name])
            else:
                self._built[name] = str(BUILDERS[name](self))
        return self._built[name]

    def fill(self, text: str) -> str:
        """``text`` with every ``<name>`` replaced by ``self[name]``."""
        return re.sub(r"<(\w+)>", lambda m: self[m.group(1)], text)

    @property
    def outputs(self) -> list[Path]:
        """Where the configured ingest run and the generators would write."""
        return [self.tmp / "out", self.tmp / "out.parquet", self.tmp / "manifests"]


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _copy_scene(bench: Bench) -> Path:
    """A private copy of the scene fixture (to break), with the ingest config pointed at it."""
    root = bench.tmp / "scene"
    if not root.exists():
        shutil.copytree(bench.fixtures_dir / "scene", root)
    bench.ingest["root"] = str(root)
    return root


def _ingested_copy(bench: Bench) -> Path:
    """A private copy of the ingested scene (shards + manifest, same layout) whose shards a case may break."""
    src = bench.shared["root"]
    shutil.copytree(src / "out", bench.tmp / "ingested" / "out")
    shutil.copytree(src / "manifests", bench.tmp / "ingested" / "manifests")
    return bench.tmp / "ingested" / "manifests" / "scene.parquet"


def _model_copy(bench: Bench, name: str = "lc_model") -> Path:
    folder = bench.tmp / f"broken_{name}"
    shutil.copytree(bench.shared[name], folder)
    return folder


def _corrupt_index(bench: Bench) -> Path:
    folder = _model_copy(bench)
    (folder / "model_index.json").write_text("{not json")
    return folder


def _corrupt_weights(bench: Bench) -> Path:
    folder = _model_copy(bench)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    return folder


def _missing_weights(bench: Bench) -> Path:
    folder = _model_copy(bench, "spade_model")
    for path in folder.rglob("*.safetensors"):
        path.unlink()
    return folder


def _thin_manifest(bench: Bench) -> Path:
    path = bench.tmp / "thin.parquet"
    pd.DataFrame({"key": ["a", "b"], "shard": ["x.tar", "x.tar"]}).to_parquet(path)
    return path


def _garbage_manifest(bench: Bench) -> Path:
    path = bench.tmp / "garbage.parquet"
    path.write_bytes(b"not parquet at all\n" * 10)
    return path


def _truncated_manifest(bench: Bench) -> Path:
    """The first half of a real manifest (a copy beside its shards, so only the parquet is broken)."""
    manifest = _ingested_copy(bench)
    data = manifest.read_bytes()
    manifest.write_bytes(data[: len(data) // 2])
    return manifest


def _read_only(bench: Bench) -> Path:
    """An existing, empty folder nobody can write into (as root: immutable, since root ignores modes)."""
    folder = bench.tmp / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    bench.cleanups.append(lambda: folder.chmod(0o755))
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
            pytest.skip("running as root without chattr: no way to make a read-only folder")
        bench.cleanups.append(lambda: subprocess.run(["chattr", "-i", str(folder)], check=True))
    return folder


def _blocker(bench: Bench) -> Path:
    """A plain file where a folder should be."""
    path = bench.tmp / "a-file"
    path.write_text("")
    return path


def _other_run(bench: Bench) -> Path:
    """An output folder holding a finished shard of another run (seed 1) of the tiny land-cover model."""
    out = bench.tmp / "out"
    run_landcover(
        LandCoverGenerateConfig(
            n=1, model=bench["lc_model"], size=16, steps=1, seed=1, out=str(out), manifest=str(bench.tmp / "o.parquet")
        )
    )
    (bench.tmp / "o.parquet").unlink()
    return out


def _corrupt_record(bench: Bench) -> Path:
    """An output folder whose one finished shard has a record that is not JSON."""
    out = _other_run(bench)
    (out / "landcover-00000.record.json").write_text("{not json")
    return out


def _landcover_run(bench: Bench, out: Path, seed: int = 0, model: str | None = None) -> Path:
    """A finished 2-tile land-cover job (a tile per shard, as ``LANDCOVER`` --n 2 --tiles-per-shard 1 makes it) in
    ``out``, without its manifest."""
    manifest = bench.tmp / f"{out.name}.parquet"
    run_landcover(
        LandCoverGenerateConfig(
            n=2, model=model or bench["lc_model"], size=16, steps=1, seed=seed, tiles_per_shard=1, out=str(out),
            manifest=str(manifest),
        )
    )  # fmt: skip
    manifest.unlink()
    return out


def _foreign_shard(bench: Bench) -> Path:
    """The issue's case: a seed-0 job whose shard 1 (tar and record) was replaced by that of a seed-1 run."""
    out, other = _landcover_run(bench, bench.tmp / "seed0"), _landcover_run(bench, bench.tmp / "seed1", seed=1)
    for name in ("landcover-00001.tar", "landcover-00001.record.json"):
        shutil.copyfile(other / name, out / name)
    return out


def _emptied_record(bench: Bench) -> Path:
    """A finished job whose shard 1's record had its rows emptied by hand."""
    out = _landcover_run(bench, bench.tmp / "emptied")
    record = read_record(out / "landcover-00001.tar")
    record_path(out / "landcover-00001.tar").write_text(json.dumps({**record, "rows": []}))
    return out


def _edited_model(bench: Bench) -> Path:
    """A model whose height prior's JSON was edited after a job was run with it (into ``<edited_model_out>``)."""
    folder = _model_copy(bench)
    _landcover_run(bench, bench.tmp / "edited_model_out", model=str(folder))
    prior = folder / "height_prior" / "height_prior.json"
    prior.write_text(prior.read_text().replace('"building_height_max": 40.0', '"building_height_max": 41.0'))
    return folder


def _edited_model_out(bench: Bench) -> Path:
    """The shard folder of the job ``<edited_model>`` ran before its edit."""
    bench["edited_model"]
    return bench.tmp / "edited_model_out"


def _locked_out(bench: Bench) -> Path:
    """An output folder another job (this test process) holds the lock of."""
    from contextlib import ExitStack

    from synthgen.engine.lock import output_lock

    out = bench.tmp / "busy"
    out.mkdir()
    stack = ExitStack()
    stack.enter_context(output_lock(out, "landcover"))
    bench.cleanups.append(stack.close)
    return out


def _unfinished_job(bench: Bench) -> Path:
    """The shard folder of a 3-tile land-cover job (a tile per shard) whose shard 1 was never finished."""
    out = bench.tmp / "job"
    run_landcover(
        LandCoverGenerateConfig(
            n=3, model=bench["lc_model"], size=16, steps=1, tiles_per_shard=1, out=str(out),
            manifest=str(bench.tmp / "job.parquet"),
        )
    )  # fmt: skip
    for path in [bench.tmp / "job.parquet", out / "landcover-00001.tar", out / "landcover-00001.record.json"]:
        path.unlink()
    return out


def _forged_record_job(bench: Bench) -> Path:
    """A finished 2-tile land-cover job whose records were edited to name a file as the job's manifest."""
    out = _unfinished_job(bench)
    victim = _write_text(bench.tmp / "victim.txt", "precious")
    for record in out.glob("*.record.json"):
        data = json.loads(record.read_text())
        data["job"]["manifest"] = str(victim)
        record.write_text(json.dumps(data))
    return out


def _replaced_cond(bench: Bench) -> Path:
    """A 2-tile land-cover manifest whose shard was replaced by the shard of another run (seed 1: same member
    names, other bytes)."""
    for seed in (0, 1):
        run_landcover(
            LandCoverGenerateConfig(
                n=2, model=bench["lc_model"], size=16, steps=1, seed=seed, out=str(bench.tmp / f"cond{seed}"),
                manifest=str(bench.tmp / f"cond{seed}.parquet"),
            )
        )  # fmt: skip
    shutil.copy(bench.tmp / "cond1" / "landcover-00000.tar", bench.tmp / "cond0" / "landcover-00000.tar")
    return bench.tmp / "cond0.parquet"


def _sites_with(suffix: str = ".csv", **columns) -> Callable[[Bench], Path]:
    """A one-site table with complete climate values, with ``columns`` set (a .parquet keeps their types)."""

    def build(bench: Bench) -> Path:
        row = {"site_id": "a", "lat": 47.0, "lon": -99.2, "date": "2014-08-01", "temperature": 20.5,
               "precipitation": 56.0, "solar_radiation": 6.1, **columns}  # fmt: skip
        path = bench.tmp / f"sites{suffix}"
        frame = pd.DataFrame([row])
        frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
        return path

    return build


def _normals_with(line: str, cell: tuple[int, str] | None = None) -> Callable[[Bench], Path]:
    """The shipped Bismarck normals with comment line ``line`` added (e.g. a bad station_lat, which comes first) or
    ``cell`` (row, text) put in the tmax_f column."""

    def build(bench: Bench) -> Path:
        from synthgen.climate.lookup import NORMALS_DIR

        lines = (NORMALS_DIR / "bismarck_nd.csv").read_text().splitlines()
        if cell is not None:
            data = [i for i, text in enumerate(lines) if text and not text.startswith("#")]
            parts = lines[data[cell[0]]].split(",")
            parts[1] = cell[1]
            lines[data[cell[0]]] = ",".join(parts)
        return _write_text(bench.tmp / "normals.csv", "\n".join([line, *lines]) + "\n")

    return build


def alias_bomb(key: str = "bands", levels: int = 9) -> str:
    """A few hundred bytes of YAML whose aliases expand ``key`` to 9**levels strings ("billion laughs")."""
    lines = ["x0: &l0 [" + ", ".join(['"lol"'] * 9) + "]"]
    for i in range(1, levels):
        lines.append(f"x{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    lines.append(f"{key}: [" + ", ".join([f"*l{levels - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _bomb_file(name: str, key: str = "bands") -> Callable[[Bench], Path]:
    return lambda bench: _write_text(bench.tmp / name, alias_bomb(key))


def _dataset_yaml(**change) -> Callable[[Bench], Path]:
    def build(bench: Bench) -> Path:
        data = yaml.safe_load((CONFIGS_DIR / "dataset" / "laptop.yaml").read_text())
        data.update(change)
        return _write_yaml(bench.tmp / "dataset.yaml", data)

    return build


def _train_yaml(kind: str, **change) -> Callable[[Bench], Path]:
    def build(bench: Bench) -> Path:
        values = yaml.safe_load((CONFIGS_DIR / kind / "tiny.yaml").read_text())
        values.update(manifest=str(bench.shared["scene"]), out=str(bench.tmp / "out"), **change)
        return _write_yaml(bench.tmp / f"{kind}.yaml", values)

    return build


def _pickle_weights(name: str) -> Callable[[Bench], Path]:
    """A copy of a shared model folder whose safetensors files are re-saved as pickle (``torch.save``) ``.bin``."""

    def build(bench: Bench) -> Path:
        folder = _model_copy(bench, name)
        for path in folder.rglob("*.safetensors"):
            torch.save(load_file(path), path.with_suffix(".bin"))
            path.unlink()
        return folder

    return build


def _scheme_file(scheme: dict, name: str = "my_scheme.yaml") -> Callable[[Bench], None]:
    def setup(bench: Bench) -> None:
        bench.ingest["scheme"] = str(_write_yaml(bench.tmp / name, scheme))

    return setup


BUILDERS: dict[str, Callable[[Bench], object]] = {
    "tmp": lambda b: b.tmp,
    "out": lambda b: b.tmp / "out",
    "manifest": lambda b: b.tmp / "out.parquet",
    "missing": lambda b: b.tmp / "no-such-thing",
    "ingest_yaml": lambda b: _write_yaml(b.tmp / "ingest.yaml", b.ingest),
    "sites": lambda b: _write_text(b.tmp / "sites.csv", "site_id,lat,lon,date\na,47.0,-99.2,2014-08-01\n"),
    "sites_hot": _sites_with(temperature="hot"),
    "sites_cloudy_abc": _sites_with(cloud_cover="abc"),
    "sites_lots_of_trees": _sites_with(lc_tree="lots"),
    "sites_bool_lat": _sites_with(".parquet", lat=True),
    "sites_bool_lat_csv": _sites_with(lat=True),
    "sites_huge_gsd": _sites_with(gsd=1e300),
    "sites_date_number": _sites_with(".parquet", date=20140801),
    "sites_bool_site_id": _sites_with(".parquet", site_id=True),
    "sites_list_place": _sites_with(".parquet", place=["a", "b"]),
    "sites_long_value": _sites_with(temperature="x" * 100_000),
    "normals_bad_station": _normals_with("# station_lat: abc"),
    "normals_bad_cell": _normals_with("#", (1, "hot")),
    "bomb_yaml": _bomb_file("bomb.yaml"),
    "bomb_scheme": _bomb_file("bomb_scheme.yaml", "classes"),
    "bomb_prompts": _bomb_file("bomb_prompts.yaml", "spatial"),
    "bomb_train": _bomb_file("bomb_train.yaml", "ae_block_out_channels"),
    "deep_yaml": lambda b: _write_text(b.tmp / "deep.yaml", "bands: " + "[" * 5000 + "]" * 5000 + "\n"),
    "looped_yaml": lambda b: _write_text(b.tmp / "looped.yaml", "bands: &a [1, *a]\n"),
    "huge_int_yaml": lambda b: _write_text(b.tmp / "huge_int.yaml", "tile_size: 1" + "0" * 5000 + "\n"),
    "ingested": _ingested_copy,
    "thin": _thin_manifest,
    "garbage": _garbage_manifest,
    "truncated_manifest": _truncated_manifest,
    "corrupt_index": _corrupt_index,
    "corrupt_weights": _corrupt_weights,
    "missing_weights": _missing_weights,
    "read_only": _read_only,
    "blocker": _blocker,
    "other_run": _other_run,
    "corrupt_record": _corrupt_record,
    "unfinished_job": _unfinished_job,
    "forged_record_job": _forged_record_job,
    "replaced_cond": _replaced_cond,
    "foreign_shard": _foreign_shard,
    "emptied_record": _emptied_record,
    "edited_model": _edited_model,
    "edited_model_out": _edited_model_out,
    "locked_out": _locked_out,
    "dataset_unknown_key": _dataset_yaml(tiles_per_sahrd=4),
    "dataset_bad_stage": _dataset_yaml(stages=["landcover", "paint"]),
    "train_unknown_key": _train_yaml("train-landcover", ae_stepz=2),
    "train_negative": _train_yaml("train-landcover", ae_steps=-2),
    "spade_negative_lr": _train_yaml("train-spade", g_lr=-0.1),
    "lc_pickle": _pickle_weights("lc_model"),
    "spade_pickle": _pickle_weights("spade_model"),
    "garbage_dataset": lambda b: _write_text(_mkdir(b.tmp / "ds" / "landcover") / "manifest.parquet", "x").parents[1],
}


# ---------------------------------------------------------------------------------------------- setups: broken data


def _break_label_value(bench: Bench) -> None:
    root = _copy_scene(bench)
    with rasterio.open(root / "area_a" / "labels" / "t1.tif", "r+") as ds:
        values = ds.read(1)
        values[8:24, 8:24] = 9
        ds.write(values, 1)


def _garbage_tif(which: str) -> Callable[[Bench], None]:
    def setup(bench: Bench) -> None:
        root = _copy_scene(bench)
        bad = root / "area_a" / f"{which}s" / "t1.tif"
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())

    return setup


def _label_with_grid(crs: str | None, transform: Affine, shape=(80, 96)) -> Callable[[Bench], None]:
    def setup(bench: Bench) -> None:
        label = _copy_scene(bench) / "area_a" / "labels" / "t0.tif"
        label.unlink()
        write_tif(label, np.ones(shape, np.uint8), CRS.from_user_input(crs) if crs else None, transform)

    return setup


def _plain_label_of_other_size(bench: Bench) -> None:
    root = bench.tmp / "plain"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    shutil.copy(bench.fixtures_dir / "plain" / "images" / "p0.png", root / "images" / "p0.png")
    Image.fromarray(np.ones((60, 64), np.uint8)).save(root / "labels" / "p0.png")
    bench.ingest = plain_config_values(root, bench.tmp)


def _rewrite_scene_raster(rel: str, convert, **profile) -> Callable[[Bench], None]:
    """Rewrite one raster of a private scene copy as ``convert(array)`` on its grid, with ``profile`` changes."""

    def setup(bench: Bench) -> None:
        path = _copy_scene(bench) / rel
        with rasterio.open(path) as ds:
            array, kept = convert(ds.read()), ds.profile
        kept.update(dtype=array.dtype.name, **profile)
        path.unlink()
        with rasterio.open(path, "w", **kept) as dst:
            dst.write(array)

    return setup


def _plain_label_holding_jpeg(bench: Bench) -> None:
    """The plain fixture whose label p0.png holds JPEG bytes under its PNG name."""
    _plain_label_of_other_size(bench)
    label = Path(bench.ingest["root"]) / "labels" / "p0.png"
    Image.fromarray(np.ones((64, 64), np.uint8)).save(label, format="JPEG")


def _ingest_set(**values) -> Callable[[Bench], None]:
    return lambda bench: bench.ingest.update(values)


def _shard_of(bench: Bench, index: int) -> Path:
    return Path(bench["ingested"]).parent.parent / "out" / "scene" / f"scene-{index:05d}.tar"


def _flip_member_byte(bench: Bench) -> None:
    shard = _shard_of(bench, 1)
    with tarfile.open(shard) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".label.tif")][1]
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    bench._built["member"] = member.name


def _truncate_shard(bench: Bench) -> None:
    shard = _shard_of(bench, 2)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])


def _delete_shard(bench: Bench) -> None:
    _shard_of(bench, 3).unlink()


def _garbage_shard(bench: Bench) -> None:
    _shard_of(bench, 0).write_bytes(b"\x01garbage" * 300)


def _edit_rows(change: Callable[[list[dict]], list[dict]]) -> Callable[[Bench], None]:
    """Rewrite the rows of the ingested copy's manifest, its schema and metadata kept (as pyarrow edits keep them)."""

    def setup(bench: Bench) -> None:
        manifest = bench["ingested"]
        table = pq.read_table(manifest)
        pq.write_table(pa.Table.from_pylist(change(table.to_pylist()), schema=table.schema), manifest)

    return setup


def _set_row(index: int, **values) -> Callable[[list[dict]], list[dict]]:
    return lambda rows: [{**row, **values} if i == index else row for i, row in enumerate(rows)]


def _scheme_classes(*codes: int) -> list[dict]:
    return [{"code": c, "name": f"class {c}"} for c in codes]


ISPRS_CODES = (0, 1, 2, 3, 4, 5, 6)
LOCAL_CS = 'LOCAL_CS["arbitrary",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
INGEST = ("ingest", "--config", "<ingest_yaml>")
LANDCOVER = ("landcover", "--out", "<out>", "--manifest", "<manifest>", "--size", "16", "--steps", "1")
RGB = ("rgb", "--out", "<out>", "--manifest", "<manifest>")
CLIMATE = ("climate", "--sites", "<sites>", "--out", "<out>", "--manifest", "<manifest>")


def case(id: str, args, *names: str, setup: Callable[[Bench], None] | None = None, keeps_finished: bool = False):
    """One row of the table: run ``args``; the error line must name every one of ``names``.

    ``keeps_finished``: the error is only found while reading the data, so shards finished before it may stay
    (complete, with their record, for a resume); anything else left behind still fails the case.
    """
    return pytest.param(list(args), list(names), setup, keeps_finished, id=id)


CASES = [
    # -------------------------------------------------------------------------------- usage: flags and commands
    case("usage-missing-argument", ["verify"], "Missing argument", "manifest"),
    case("usage-unknown-command", ["nosuchcommand"], "nosuchcommand"),
    case("usage-unknown-app-option", ["--bogus"], "--bogus"),
    case("usage-option-wrong-type", ["preview", "x.parquet", "--n", "many"], "--n", "many"),
    case("usage-unknown-subcommand", ["train", "gan"], "gan"),
    case("schemes-unknown-name", ["schemes", "nosuchscheme"], "nosuchscheme", "oem8"),
    # -------------------------------------------------------------------------------- ingest: missing files
    case("ingest-missing-label-file", INGEST, "t0_missing.tif", "not found",
         setup=_ingest_set(label="{parent}/labels/{stem}_missing.tif")),
    case("ingest-missing-data-root", INGEST, "no_such_root", "not found",
         setup=lambda b: b.ingest.update(root=str(b.tmp / "no_such_root"))),
    case("ingest-sources-match-nothing", INGEST, "*/images/*.jp2", setup=_ingest_set(sources="*/images/*.jp2")),
    case("ingest-missing-config-file", ["ingest", "--config", "<tmp>/nope.yaml"], "nope.yaml", "not found"),
    case("ingest-unknown-shipped-config",
         ["ingest", "--config", "nosuchdataset", "--out", "<out>", "--manifest", "<manifest>"],
         "nosuchdataset", "dubai", "potsdam"),
    # -------------------------------------------------------------------------------- ingest: bad rasters
    case("ingest-unknown-class-value", INGEST, "t1.tif", "value(s) 9 are not in scheme 'isprs'",
         "allowed: 0, 1, 2, 3, 4, 5, 6", setup=_break_label_value, keeps_finished=True),
    case("ingest-unknown-class-value-2-workers", [*INGEST, "--workers", "2"], "t1.tif",
         "value(s) 9 are not in scheme 'isprs'", setup=_break_label_value, keeps_finished=True),
    case("ingest-label-size-mismatch", INGEST, "p0.png", "64x60", "64x64", setup=_plain_label_of_other_size),
    case("ingest-unreferenced-label-of-other-size", INGEST, "t0.tif", "70x50", "96x80", "georeference",
         setup=_label_with_grid(None, Affine.identity(), (50, 70))),
    case("ingest-label-same-crs-elsewhere", INGEST, "t0.tif", "overlap",
         setup=_label_with_grid("EPSG:32633", Affine(0.5, 0, 800_000.0, 0, -0.5, 1_000_000.0))),
    case("ingest-label-wgs84-elsewhere", INGEST, "t0.tif", "overlap",
         setup=_label_with_grid("EPSG:4326", Affine(1e-5, 0, -170.0, 0, -1e-5, -80.0))),
    case("ingest-label-local-crs", INGEST, "t0.tif", "aligned",
         setup=_label_with_grid(LOCAL_CS, Affine(0.5, 0, 500_000.0, 0, -0.5, 5_500_000.0))),
    case("ingest-garbage-image-tif", INGEST, "t1.tif", "not a readable raster", setup=_garbage_tif("image")),
    case("ingest-garbage-label-tif", INGEST, "t1.tif", "not a readable raster", setup=_garbage_tif("label"),
         keeps_finished=True),
    # -------------------------------------------------------------------------------- ingest: pixels and labels
    case("ingest-image-int16", INGEST, "t1.tif", "image dtype int16", "allowed: uint8, uint16",
         setup=_rewrite_scene_raster("area_a/images/t1.tif", lambda a: a.astype(np.int16))),
    case("ingest-image-uint32", INGEST, "t0.tif", "image dtype uint32", "float32",
         setup=_rewrite_scene_raster("area_a/images/t0.tif", lambda a: a.astype(np.uint32))),
    case("ingest-bit-depth-above-uint8", [*INGEST, "--set", "bit_depth=12"], "bit_depth", "12", "uint8"),
    case("ingest-bit-depth-out-of-range", [*INGEST, "--set", "bit_depth=17"], "bit_depth", "17", "1..16"),
    case("ingest-label-png-holding-jpeg", INGEST, "p0.png", "JPEG", "lossy", setup=_plain_label_holding_jpeg),
    case("ingest-label-tif-jpeg-compressed", INGEST, "t1.tif", "JPEG-compressed", "lossy",
         setup=_rewrite_scene_raster("area_a/labels/t1.tif", lambda a: a, compress="jpeg")),
    case("ingest-label-float", INGEST, "t1.tif", "float32", "integer",
         setup=_rewrite_scene_raster("area_a/labels/t1.tif", lambda a: a.astype(np.float32))),
    case("ingest-sources-absolute-glob", [*INGEST, "--sources", "/etc/*.conf"], "/etc/*.conf", "relative to root"),
    case("ingest-sources-absolute-glob-in-root", [*INGEST, "--sources", "<tmp>/*/images/*.tif"], "absolute",
         setup=_copy_scene),
    case("ingest-sources-leave-root", [*INGEST, "--sources", "../*/images/*.tif"], "../*/images/*.tif", "'..'"),
    case("ingest-sources-empty", [*INGEST, "--sources", ""], "sources", "empty"),
    # -------------------------------------------------------------------------------- ingest: bad config values
    case("ingest-set-unknown-key", [*INGEST, "--set", "bogus=1"], "bogus", "unknown key"),
    case("ingest-set-without-equals", [*INGEST, "--set", "bogus"], "bogus", "KEY=VALUE"),
    case("ingest-set-wrong-type", [*INGEST, "--set", "tile_size=abc"], "tile_size", "abc"),
    case("ingest-option-wrong-type", [*INGEST, "--tile-size", "abc"], "tile-size", "abc"),
    case("ingest-value-out-of-range", [*INGEST, "--set", "val_fraction=1.5"], "val_fraction", "1.5"),
    case("ingest-unknown-scheme", [*INGEST, "--scheme", "nosuchscheme"], "nosuchscheme", "isprs"),
    case("ingest-unknown-target-scheme", [*INGEST, "--target-scheme", "nosuchscheme"], "nosuchscheme", "oem8"),
    case("ingest-missing-scheme-file", [*INGEST, "--scheme", "missing_scheme.yaml"], "missing_scheme.yaml",
         "not found"),
    case("ingest-tile-larger-than-image", [*INGEST, "--tile-size", "128"], "t0.tif", "96x80", "128"),
    case("ingest-unknown-template-field", [*INGEST, "--label", "labels/{nope}.png"], "nope", "label", "stem"),
    case("ingest-malformed-template", [*INGEST, "--label", "labels/{stem.png"], "labels/{stem.png", "label"),
    case("ingest-bad-template-conversion", [*INGEST, "--label", "labels/{stem!x}.png"], "labels/{stem!x}.png",
         "label"),
    case("ingest-unknown-option", [*INGEST, "--bogus", "1"], "--bogus"),
    case("ingest-negative-tile-size", [*INGEST, "--tile-size", "-32"], "tile_size", "-32"),
    case("ingest-config-file-unknown-key", INGEST, "ingest.yaml", "tilesize", "tile_size",
         setup=_ingest_set(tilesize=32)),
    case("ingest-out-below-a-file", [*INGEST, "--out", "<blocker>/shards"], "a-file"),
    case("ingest-out-read-only", [*INGEST, "--out", "<read_only>/{name}"], "<read_only>", "cannot write"),
    case("ingest-manifest-read-only", [*INGEST, "--manifest", "<read_only>/{name}.parquet"], "<read_only>",
         "cannot write the output folder"),
    # -------------------------------------------------------------------------------- ingest: bad scheme files
    case("scheme-classes-not-a-list", INGEST, "my_scheme.yaml", "classes",
         setup=_scheme_file({"name": "s", "classes": 5})),
    case("scheme-class-not-a-mapping", INGEST, "my_scheme.yaml", "class #0",
         setup=_scheme_file({"name": "s", "classes": ["a", "b"]})),
    case("scheme-nodata-not-int", INGEST, "my_scheme.yaml", "nodata",
         setup=_scheme_file({"name": "s", "nodata": "x", "classes": _scheme_classes(*ISPRS_CODES)})),
    case("scheme-colour-not-int", INGEST, "my_scheme.yaml", "colour",
         setup=_scheme_file({"name": "s", "classes": [{"code": 0, "name": "a", "color": [1, 2, "x"]}]})),
    case("scheme-to-not-a-mapping", INGEST, "my_scheme.yaml", "'to'",
         setup=_scheme_file({"name": "s", "classes": _scheme_classes(*ISPRS_CODES), "to": ["oem8"]})),
    case("scheme-mapping-not-a-table", INGEST, "my_scheme.yaml", "oem8",
         setup=_scheme_file({"name": "s", "classes": _scheme_classes(*ISPRS_CODES), "to": {"oem8": [1, 2]}})),
    case("scheme-mapping-to-a-name", INGEST, "my_scheme.yaml", "oem8",
         setup=_scheme_file({"name": "s", "classes": _scheme_classes(*ISPRS_CODES),
                             "to": {"oem8": dict.fromkeys(ISPRS_CODES, "tree")}})),
    case("scheme-without-mapping-to-target", INGEST, "'mine'", "'oem8'", "no mapping",
         setup=_scheme_file({"name": "mine", "classes": _scheme_classes(*ISPRS_CODES)})),
    case("scheme-two-classes-without-mapping", INGEST, "has no mapping to 'oem8'",
         setup=_scheme_file({"name": "nomap", "nodata": 0, "classes": _scheme_classes(0, 1)}, "nomap.yaml")),
    # -------------------------------------------------------------------------------- manifests: info verify preview
    *[case(f"{c}-missing-manifest", [c, "<tmp>/manifests/absent.parquet"], "absent.parquet", "not found")
      for c in ("info", "verify", "preview")],
    *[case(f"{c}-manifest-missing-columns", [c, "<thin>"], "thin.parquet", "missing columns", "members", "sha256")
      for c in ("verify", "info", "preview")],
    *[case(f"{c}-manifest-not-parquet", [c, "<garbage>"], "garbage.parquet", "parquet") for c in ("verify", "info")],
    case("info-truncated-parquet", ["info", "<truncated_manifest>"], "scene.parquet", "parquet"),
    case("verify-member-hash-mismatch", ["verify", "<ingested>"], "scene-00001.tar", "<member>", "sha256",
         setup=_flip_member_byte),
    case("verify-truncated-shard", ["verify", "<ingested>"], "scene-00002.tar", setup=_truncate_shard),
    case("verify-missing-shard", ["verify", "<ingested>"], "scene-00003.tar", "not found", setup=_delete_shard),
    case("verify-garbage-shard", ["verify", "<ingested>"], "scene-00000.tar", setup=_garbage_shard),
    case("verify-null-shard", ["verify", "<ingested>"], "row 1", "shard null",
         setup=_edit_rows(_set_row(1, shard=None))),
    case("verify-duplicated-key", ["verify", "<ingested>"], "is in 2 rows",
         setup=_edit_rows(lambda rows: [rows[0], *rows[:-1]])),
    case("verify-rows-removed", ["verify", "<ingested>"], "scene-00006.tar", "2 rows in the manifest",
         setup=_edit_rows(lambda rows: rows[:-1])),
    case("verify-null-members", ["verify", "<ingested>"], "row 2", "members is null",
         setup=_edit_rows(_set_row(2, members=None))),
    case("verify-fewer-digests-than-members", ["verify", "<ingested>"], "row 0", "sha256 digests",
         setup=_edit_rows(lambda rows: _set_row(0, sha256=rows[0]["sha256"][:1])(rows))),
    case("verify-absolute-shard-path", ["verify", "<ingested>"], "/etc/passwd", "relative",
         setup=_edit_rows(_set_row(0, shard="/etc/passwd"))),
    case("verify-manifest-without-plan", ["verify", "<tmp>/resaved.parquet"], "no job plan", "--subset",
         setup=lambda b: pd.read_parquet(b["scene"]).to_parquet(b.tmp / "resaved.parquet")),
    case("preview-zero-tiles", ["preview", "<scene>", "--out", "<tmp>/p.png", "--n", "0"], "n=0", "at least 1"),
    case("preview-out-existing-folder", ["preview", "<scene>", "--out", "<tmp>"], "<tmp>", "is a folder"),
    case("preview-out-existing-folder-slash", ["preview", "<scene>", "--out", "<tmp>/"], "<tmp>", "is a folder"),
    case("preview-out-read-only", ["preview", "<scene>", "--out", "<read_only>/p.png"], "<read_only>",
         "permission denied"),
    # -------------------------------------------------------------------------------- landcover: flags and models
    case("landcover-n-zero", [*LANDCOVER, "--n", "0", "--model", "<lc_model>"], "--n 0 must be >= 1"),
    case("landcover-n-negative", [*LANDCOVER, "--n", "-3", "--model", "<lc_model>"], "--n -3 must be >= 1"),
    case("landcover-n-not-a-number", [*LANDCOVER, "--n", "many", "--model", "<lc_model>"], "--n", "many"),
    case("landcover-n-missing", [*LANDCOVER, "--model", "<lc_model>"], "--n"),
    case("landcover-size-not-multiple", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--size", "30"],
         "size 30 px"),
    case("landcover-zero-gsd", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--gsd", "0"], "gsd", "0"),
    case("landcover-zero-tiles-per-shard", [*LANDCOVER, "--n", "2", "--model", "<lc_model>",
                                            "--tiles-per-shard", "0"], "tiles-per-shard", "0"),
    case("landcover-name-with-slash", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--name", "a/b"], "a/b"),
    case("landcover-missing-model", [*LANDCOVER, "--n", "2", "--model", "<missing>"], "no-such-thing",
         "not a landcover model folder"),
    case("landcover-corrupt-model-index", [*LANDCOVER, "--n", "2", "--model", "<corrupt_index>"],
         "model_index.json", "not valid JSON"),
    case("landcover-corrupt-weights", [*LANDCOVER, "--n", "2", "--model", "<corrupt_weights>"], "<corrupt_weights>"),
    case("landcover-pickle-weights", [*LANDCOVER, "--n", "2", "--model", "<lc_pickle>"],
         "diffusion_pytorch_model.bin", "pickle weights are refused", "safetensors"),
    case("landcover-model-of-another-kind", [*LANDCOVER, "--n", "2", "--model", "<spade_model>"], "<spade_model>",
         "RGBSpadePipeline"),
    case("landcover-scheme-of-another-model", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--scheme", "isprs"],
         "generates 'oem8' labels"),
    case("landcover-unknown-scheme", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--scheme", "nosuch"],
         "nosuch"),
    case("landcover-out-below-a-file", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--out", "<blocker>/shards"],
         "a-file"),
    case("landcover-out-read-only", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--out", "<read_only>"],
         "<read_only>", "cannot write"),
    case("landcover-manifest-read-only", [*LANDCOVER, "--n", "2", "--model", "<lc_model>",
                                          "--manifest", "<read_only>/m.parquet"], "<read_only>", "cannot write"),
    case("landcover-out-of-another-run", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--out", "<other_run>"],
         "holds shards of another run"),
    case("landcover-out-with-a-shard-of-another-seed", [*LANDCOVER, "--n", "2", "--tiles-per-shard", "1", "--model",
                                                        "<lc_model>", "--out", "<foreign_shard>"],
         "landcover-00001.tar", "holds shards of another run", "this run: config"),
    case("landcover-out-with-a-record-emptied-by-hand", [*LANDCOVER, "--n", "2", "--tiles-per-shard", "1",
                                                         "--model", "<lc_model>", "--out", "<emptied_record>"],
         "landcover-00001.tar", "lists no tiles where the plan has 1 tile"),
    case("landcover-model-config-edited-since-its-shards", [*LANDCOVER, "--n", "2", "--tiles-per-shard", "1",
                                                            "--model", "<edited_model>", "--out", "<edited_model_out>"],
         "landcover-00000.tar", "holds shards of another run", "weights"),
    case("landcover-out-being-written-by-another-job", [*LANDCOVER, "--n", "2", "--model", "<lc_model>",
                                                        "--out", "<locked_out>"],
         "<locked_out>", "another synthgen job is writing this folder", f"pid {os.getpid()}"),
    case("landcover-corrupt-shard-record", [*LANDCOVER, "--n", "2", "--model", "<lc_model>",
                                            "--out", "<corrupt_record>"], "landcover-00000.record.json", "JSON"),
    # -------------------------------------------------------------------------------- generators: sizes and counts
    case("landcover-size-below-the-unet-factor", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--size", "4"],
         "size 4 px is not a positive multiple of 8", "autoencoder's factor 4", "UNet's downsampling 2"),
    case("landcover-size-of-the-autoencoder-only", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--size", "36"],
         "size 36 px", "multiple of 8"),
    case("landcover-size-over-the-maximum", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--size", "100000"],
         "--size 100000 px", "maximum tile side of 2048 px"),
    case("landcover-n-of-a-trillion", [*LANDCOVER, "--n", "1000000000000", "--model", "<lc_model>"],
         "--n 1000000000000", "maximum of 10000000 tiles"),
    case("landcover-too-many-shards", [*LANDCOVER, "--n", "200000", "--tiles-per-shard", "1", "--model",
                                       "<lc_model>"], "200000 shards", "maximum of 100000", "--tiles-per-shard >= 2"),
    case("landcover-batch-over-free-memory", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--size", "2048",
                                              "--batch-size", "100000"], "--size 2048 with --batch-size 100000",
         "needs at least", "available on this machine"),
    case("rgb-size-over-the-maximum", [*RGB, "--cond", "<landcover>", "--model", "<spade_model>", "--size", "4096"],
         "--size 4096 px", "2048"),
    case("rgb-batch-over-free-memory", [*RGB, "--cond", "<landcover>", "--model", "<spade_model>", "--batch-size",
                                        "1000000000"], "--size 16 with --batch-size 1000000000", "needs at least"),
    case("climate-size-over-the-maximum", [*CLIMATE, "--model", "<missing>", "--size", "4096"], "--size 4096 px",
         "2048"),
    case("climate-n-per-site-over-the-maximum", [*CLIMATE, "--model", "<missing>", "--n-per-site", "20000000"],
         "--n-per-site 20000000", "maximum of 10000000 tiles"),
    # -------------------------------------------------------------------------------- rgb: conds, flags, models
    case("rgb-missing-cond", [*RGB, "--cond", "<tmp>/none.parquet", "--model", "<spade_model>"], "none.parquet",
         "manifest not found"),
    case("rgb-cond-missing-columns", [*RGB, "--cond", "<thin>", "--model", "<spade_model>"], "thin.parquet",
         "missing columns"),
    case("rgb-cond-truncated-parquet", [*RGB, "--cond", "<truncated_manifest>", "--model", "<spade_model>"],
         "scene.parquet", "parquet"),
    case("rgb-cond-with-missing-shard", [*RGB, "--cond", "<ingested>", "--model", "<spade_model>"],
         "scene-00003.tar", "not found", setup=_delete_shard),
    case("rgb-unknown-method", [*RGB, "--cond", "<scene>", "--model", "<spade_model>", "--method", "gan"],
         "--method 'gan' is unknown", "controlnet, spade"),
    case("rgb-size-not-multiple", [*RGB, "--cond", "<scene>", "--model", "<spade_model>", "--size", "12"],
         "--size 12"),
    case("rgb-zero-steps", [*RGB, "--cond", "<scene>", "--model", "<spade_model>", "--steps", "0"], "--steps 0"),
    case("rgb-nan-guidance", [*RGB, "--cond", "<scene>", "--model", "<spade_model>", "--guidance", "nan"],
         "--guidance nan"),
    case("rgb-zero-batch", [*RGB, "--cond", "<scene>", "--model", "<spade_model>", "--batch-size", "0"],
         "--batch-size 0"),
    case("rgb-missing-model", [*RGB, "--cond", "<scene>", "--model", "<missing>"], "no-such-thing", "not found"),
    case("rgb-model-of-another-kind", [*RGB, "--cond", "<scene>", "--model", "<lc_model>"], "<lc_model>",
         "LandCoverPipeline"),
    case("rgb-model-without-weights", [*RGB, "--cond", "<landcover>", "--model", "<missing_weights>"],
         "<missing_weights>"),
    case("rgb-pickle-weights", [*RGB, "--cond", "<landcover>", "--model", "<spade_pickle>"],
         "generator/diffusion_pytorch_model.bin", "pickle weights are refused"),
    case("rgb-cond-shard-replaced", [*RGB, "--cond", "<replaced_cond>", "--model", "<spade_model>"],
         "landcover-00000.tar", "landcover_0000000.label.tif", "sha256"),
    case("rgb-out-read-only", [*RGB, "--cond", "<landcover>", "--model", "<spade_model>", "--out", "<read_only>"],
         "<read_only>", "cannot write"),
    # -------------------------------------------------------------------------------- climate (fails before a model)
    case("climate-missing-model", [*CLIMATE, "--model", "<missing>"], "no-such-thing"),
    case("climate-zero-steps", [*CLIMATE, "--model", "<missing>", "--steps", "0"], "steps", "0"),
    case("climate-zero-images-per-site", [*CLIMATE, "--model", "<missing>", "--n-per-site", "0"], "n-per-site", "0"),
    case("climate-unknown-lookup", [*CLIMATE, "--model", "<missing>", "--climate-method", "cubic"], "cubic",
         "nearest"),
    case("climate-controlnet-without-control", [*CLIMATE, "--model", "<lc_model>", "--controlnet", "<missing>"],
         "--controlnet needs --control"),
    case("prompts-show-missing-sites", ["prompts", "show", "--sites", "<tmp>/none.csv"], "none.csv", "not found"),
    case("prompts-sites-missing-manifest", ["prompts", "sites", "--manifest", "<tmp>/none.parquet", "--out",
                                            "<tmp>/s.csv", "--date", "2014-08-01"], "none.parquet", "not found"),
    # -------------------------------------------------------------------------------- path templates: only {name}
    case("landcover-out-unknown-field", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--out", "<tmp>/data{v2}"],
         "--out", "data{v2}", "braces in a path may only hold {name}"),
    case("landcover-out-positional-field", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--out",
                                            "<tmp>/run{1}"], "run{1}", "{name}"),
    case("landcover-out-attribute-of-name", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--out",
                                             "<tmp>/o{name.__class__.__mro__}"], "o{name.__class__.__mro__}"),
    case("landcover-out-escaped-braces", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--out",
                                          "<tmp>/a{{name}}"], "a{{name}}"),
    case("landcover-manifest-stray-brace", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--manifest",
                                            "<tmp>/m}.parquet"], "--manifest", "m}.parquet"),
    case("rgb-out-format-spec", [*RGB, "--cond", "<landcover>", "--model", "<spade_model>", "--out",
                                 "<tmp>/{name:>99999999999}"], "{name:>99999999999}"),
    case("climate-manifest-unknown-field", [*CLIMATE, "--model", "<missing>", "--manifest", "<tmp>/{date}.parquet"],
         "--manifest", "{date}.parquet"),
    case("ingest-out-source-field", [*INGEST, "--out", "<tmp>/{stem}"], "{stem}", "{name}"),
    case("dataset-out-unknown-field", ["dataset", "--out", "<tmp>/d{x}"], "d{x}", "{name}"),
    case("evaluate-rgb-out-unknown-field", ["evaluate", "rgb", "--real", "<scene>", "--out", "<tmp>/r{0}.json"],
         "r{0}.json", "{method}"),
    # -------------------------------------------------------------------------------- YAML aliases, values cut
    case("ingest-config-alias-bomb", ["ingest", "--config", "<bomb_yaml>"], "bomb.yaml",
         "aliases expand it past 100000 values"),
    case("dataset-config-alias-bomb", ["dataset", "--config", "<bomb_yaml>", "--out", "<out>"], "bomb.yaml",
         "aliases expand it past"),
    case("train-config-alias-bomb", ["train", "landcover", "--config", "<bomb_train>", "--out", "<out>"],
         "bomb_train.yaml", "aliases expand it past"),
    case("scheme-file-alias-bomb", [*INGEST, "--scheme", "<bomb_scheme>"], "bomb_scheme.yaml",
         "aliases expand it past"),
    case("prompts-file-alias-bomb", ["prompts", "show", "--sites", "<sites>", "--prompts", "<bomb_prompts>"],
         "bomb_prompts.yaml", "aliases expand it past"),
    case("ingest-config-nested-too-deep", ["ingest", "--config", "<deep_yaml>"], "deep.yaml",
         "nest deeper than 64 levels"),
    case("ingest-config-alias-loop", ["ingest", "--config", "<looped_yaml>"], "looped.yaml",
         "an alias refers to a value that holds it"),
    case("ingest-config-integer-of-5000-digits", ["ingest", "--config", "<huge_int_yaml>"], "huge_int.yaml",
         "a value cannot be read"),
    case("ingest-set-huge-value-is-cut", [*INGEST, "--set", "tile_size=" + "x" * 100_000], "tile_size", "'xxx",
         "..."),
    case("usage-huge-command-name-is-cut", ["x" * 100_000], "No such command", "..."),
    # -------------------------------------------------------------------------------- sites and normals tables
    case("prompts-show-temperature-not-a-number", ["prompts", "show", "--sites", "<sites_hot>"], "sites.csv",
         "site 'a' (row 1)", "temperature 'hot' is not a number", "allowed: -90..60 °C"),
    case("prompts-show-cloud-cover-not-a-number", ["prompts", "show", "--sites", "<sites_cloudy_abc>"],
         "row 1", "cloud_cover 'abc' is not a number", "0..100 %"),
    case("prompts-show-share-not-a-number", ["prompts", "show", "--sites", "<sites_lots_of_trees>"],
         "lc_tree 'lots' is not a number", "0..1"),
    case("prompts-show-boolean-latitude", ["prompts", "show", "--sites", "<sites_bool_lat>"], "sites.parquet",
         "lat True is not a number", "-90..90"),
    case("prompts-show-boolean-latitude-csv", ["prompts", "show", "--sites", "<sites_bool_lat_csv>"],
         "lat True is not a number"),
    case("prompts-show-huge-gsd", ["prompts", "show", "--sites", "<sites_huge_gsd>"], "gsd 1e+300 is out of range",
         "0.001..1000 m"),
    case("prompts-show-date-a-number", ["prompts", "show", "--sites", "<sites_date_number>"],
         "date 20140801 is not a date", "YYYY-MM-DD"),
    case("prompts-show-boolean-site-id", ["prompts", "show", "--sites", "<sites_bool_site_id>"], "row 1",
         "site_id True is not text"),
    case("prompts-show-list-place", ["prompts", "show", "--sites", "<sites_list_place>"], "place", "is not text"),
    case("prompts-show-huge-value-is-cut", ["prompts", "show", "--sites", "<sites_long_value>"],
         "temperature 'xxx", "...", "is not a number"),
    case("prompts-show-normals-bad-station", ["prompts", "show", "--sites", "<sites>", "--normals",
                                              "<normals_bad_station>"], "normals.csv", "station_lat", "'abc'"),
    case("prompts-show-normals-bad-cell", ["prompts", "show", "--sites", "<sites>", "--normals",
                                           "<normals_bad_cell>"], "normals.csv", "row 1, column 'tmax_f'", "'hot'"),
    case("climate-gsd-of-1e300", [*CLIMATE, "--model", "<missing>", "--gsd", "1e300"], "--gsd 1e+300",
         "0.001..1000 metres"),
    case("landcover-gsd-of-1e300", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--gsd", "1e300"],
         "--gsd 1e+300", "0.001..1000 metres"),
    case("landcover-gsd-nan", [*LANDCOVER, "--n", "2", "--model", "<lc_model>", "--gsd", "nan"], "--gsd nan"),
    # -------------------------------------------------------------------------------- train: configs and paths
    case("train-landcover-config-unknown-key", ["train", "landcover", "--config", "<train_unknown_key>"],
         "train-landcover.yaml", "ae_stepz", "ae_steps"),
    case("train-landcover-config-negative-value", ["train", "landcover", "--config", "<train_negative>"],
         "ae_steps", "-2"),
    case("train-landcover-unknown-shipped-config", ["train", "landcover", "--config", "huge", "--out", "<out>"],
         "huge", "tiny"),
    case("train-landcover-zero-max-steps", ["train", "landcover", "--config", "tiny", "--max-steps", "0",
                                            "--out", "<out>"], "max_steps"),
    case("train-landcover-missing-manifest", ["train", "landcover", "--config", "tiny", "--manifest",
                                              "<tmp>/none.parquet", "--out", "<out>"], "none.parquet", "not found"),
    case("train-landcover-missing-checkpoint", ["train", "landcover", "--config", "tiny", "--manifest", "<scene>",
                                                "--out", "<out>", "--resume", "checkpoint-99"], "checkpoint-99"),
    case("train-spade-config-negative-lr", ["train", "spade", "--config", "<spade_negative_lr>"], "g_lr", "-0.1"),
    case("train-spade-thin-manifest", ["train", "spade", "--config", "tiny", "--manifest", "<thin>", "--out",
                                       "<out>"], "thin.parquet", "missing columns"),
    case("train-sd-base-unknown-key", ["train", "sd-base", "--config", "tiny", "--set", "bogus=1", "--out", "<out>"],
         "bogus"),
    case("train-controlnet-missing-base", ["train", "controlnet", "--config", "tiny", "--manifest", "<scene>",
                                           "--base", "<missing>", "--out", "<out>"], "no-such-thing"),
    case("train-sd3-missing-manifest", ["train", "sd3", "--config", "tiny", "--manifests", "<tmp>/none.parquet",
                                        "--out", "<out>"], "none.parquet"),
    case("train-sd3-controlnet-missing-base", ["train", "sd3-controlnet", "--config", "tiny", "--manifest",
                                               "<scene>", "--base", "<missing>", "--out", "<out>"], "no-such-thing"),
    # -------------------------------------------------------------------------------- evaluate, validate, report
    case("evaluate-layout-missing-real", ["evaluate", "layout", "--real", "<tmp>/none.parquet", "--synthetic",
                                          "<landcover>"], "none.parquet", "not found"),
    case("evaluate-layout-absent-split", ["evaluate", "layout", "--real", "<scene>", "--synthetic", "<landcover>",
                                          "--split", "test", "--out", "<tmp>/r.json"], "test"),
    case("evaluate-rgb-unknown-method", ["evaluate", "rgb", "--real", "<scene>", "--method", "gan", "--out",
                                         "<tmp>/r.json"], "gan"),
    case("evaluate-climate-missing-generated", ["evaluate", "climate", "--generated", "<tmp>/none.parquet",
                                                "--real", "<scene>", "--out", "<tmp>/r.json"], "none.parquet"),
    case("validate-unknown-architecture", ["validate", "--config", "tiny", "--out", "<out>", "--train",
                                           "a=<scene>", "--test", "b=<scene>", "--arch", "segformer"], "segformer"),
    case("validate-missing-manifest", ["validate", "--config", "tiny", "--out", "<out>", "--train",
                                       "a=<tmp>/none.parquet", "--test", "b=<scene>"], "none.parquet"),
    case("report-missing-json", ["report", "<tmp>/none.json"], "none.json", "not found"),
    case("report-garbage-json", ["report", "<garbage>"], "garbage.parquet"),
    # -------------------------------------------------------------------------------- dataset, manifest rebuild
    case("dataset-unknown-shipped-config", ["dataset", "--config", "huge", "--out", "<out>"], "huge", "laptop",
         "gpu-node"),
    case("dataset-config-unknown-key", ["dataset", "--config", "<dataset_unknown_key>", "--out", "<out>"],
         "tiles_per_sahrd"),
    case("dataset-config-unknown-stage", ["dataset", "--config", "<dataset_bad_stage>", "--out", "<out>"], "paint",
         "rgb-spade"),
    case("dataset-negative-tile-count", ["dataset", "--set", "landcover.n=-3", "--out", "<out>"], "landcover.n",
         "-3"),
    case("dataset-unknown-section-key", ["dataset", "--set", "landcover.bogus=1", "--out", "<out>"], "bogus",
         "tiles_per_shard"),
    case("dataset-unknown-section", ["dataset", "--set", "paint.n=1", "--out", "<out>"], "paint", "rgb_spade"),
    case("dataset-missing-model", ["dataset", "--set", "rgb_spade.model=<missing>", "--out", "<out>"],
         "rgb_spade.model", "no-such-thing"),
    case("dataset-out-read-only", ["dataset", "--set", "stages=landcover", "--set", "landcover.n=2",
                                   "--set", "landcover.model=<lc_model>", "--set", "landcover.size=16",
                                   "--set", "landcover.steps=1", "--out", "<read_only>"], "<read_only>"),
    case("manifest-rebuild-missing-folder", ["manifest", "rebuild", "<missing>"], "no-such-thing", "not found"),
    case("manifest-rebuild-no-job-here", ["manifest", "rebuild", "<tmp>"], "no finished shard"),
    case("manifest-rebuild-record-names-a-file", ["manifest", "rebuild", "<forged_record_job>", "--partial"],
         "victim.txt", "--manifest"),
    case("manifest-rebuild-over-a-file", ["manifest", "rebuild", "<unfinished_job>", "--partial", "--manifest",
                                          "<tmp>/notes.txt"], "notes.txt", "not a parquet manifest",
         setup=lambda b: _write_text(b.tmp / "notes.txt", "precious")),
    case("manifest-rebuild-unfinished-shard", ["manifest", "rebuild", "<unfinished_job>"], "landcover-00001",
         "--partial"),
    # -------------------------------------------------------------------------------- publishing: stac, card
    case("stac-missing-folder", ["stac", "<missing>"], "no-such-thing", "dataset folder not found"),
    case("stac-not-a-dataset", ["stac", "<tmp>", "--extract"], "no stage manifests", "/manifest.parquet"),
    case("card-not-a-dataset", ["card", "<tmp>"], "no stage manifests"),
    case("card-garbage-manifest", ["card", "<garbage_dataset>"], "manifest.parquet", "not a readable parquet"),
    case("stac-garbage-manifest", ["stac", "<garbage_dataset>"], "manifest.parquet", "not a readable parquet"),
    case("adapt-threshold-out-of-range", ["adapt", "--config", "tiny", "--out", "<out>", "--source", "s=<scene>",
                                          "--target", "t=<scene>", "--threshold", "2"], "threshold", "2"),
]  # fmt: skip


@pytest.fixture
def bench(tmp_path, shared, fixtures_dir):
    """The case's own folder and inputs; read-only folders are made writable again afterwards."""
    bench = Bench(tmp_path / "case", shared, fixtures_dir)
    bench.tmp.mkdir()
    yield bench
    for cleanup in reversed(bench.cleanups):
        cleanup()


def finished_shards(paths: list[Path]) -> list[Path]:
    """The shard tars among ``paths`` that are complete: their record is there too and holds their sha256."""
    names = {p.name for p in paths}
    return [
        p for p in paths
        if p.suffix == ".tar" and record_path(p).name in names and read_record(p)["sha256"] == sha256_file(p)
    ]  # fmt: skip


@pytest.mark.parametrize(("args", "names", "setup", "keeps_finished"), CASES)
def test_bad_input_is_one_line_and_leaves_nothing_behind(bench, args, names, setup, keeps_finished):
    if setup is not None:
        setup(bench)
    argv = [bench.fill(a) for a in args]
    roots = [bench.tmp, bench.shared["root"]]
    before = files_under(*roots)
    result = runner.invoke(app, argv)
    assert_one_line_error(result, *[bench.fill(n) for n in names])
    left = sorted(files_under(*roots) - before)
    if keeps_finished:
        kept = finished_shards(left)
        left = [p for p in left if p not in kept and p not in {record_path(k) for k in kept}]
    assert not left, f"left behind: {[str(p) for p in left]}"


def test_the_table_holds_at_least_40_cases_over_every_command():
    assert len(CASES) >= 40 and sum(p.values[3] for p in CASES) <= 3
    commands = {" ".join(a for a in p.values[0][:2] if not a.startswith(("-", "<"))) for p in CASES}
    for command in (
        "ingest",
        "verify",
        "info",
        "preview",
        "landcover",
        "rgb",
        "climate",
        "train landcover",
        "train spade",
        "train sd-base",
        "train controlnet",
        "train sd3",
        "train sd3-controlnet",
        "evaluate layout",
        "evaluate rgb",
        "evaluate climate",
        "validate",
        "report",
        "adapt",
        "schemes",
        "dataset",
        "manifest rebuild",
        "stac",
        "card",
    ):
        assert any(c == command or c.startswith(command + " ") for c in commands), command  # fmt: skip
