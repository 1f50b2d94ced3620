"""Bad input through the real CLI, as one table: every command, bad flags, bad configs, bad manifests, bad models
and bad paths. Each case must end in one line 'error: ...' on stderr naming what was wrong, a non-zero exit, no
traceback, and nothing half-written: no manifest, no shard, no temporary file (no file at all) is left behind.

A row is ``case(id, args, *names, setup=...)``. ``<thing>`` in ``args`` and ``names`` is filled in from ``Bench``:
a path the case needs, built on first use (a copy of an ingested manifest, a model folder with a corrupt
``model_index.json``, a read-only folder, ...); ``setup(bench)`` breaks what the case is about before the run.
Models are tiny, built from configs after ``torch.manual_seed(0)``; never the embedded defaults.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.config import CONFIGS_DIR, build_config
from synthgen.io.shards import read_record, record_path, sha256_file
from synthgen.jobs.ingest import IngestConfig, run_ingest
from synthgen.jobs.landcover import LandCoverGenerateConfig, run_landcover
from synthgen.pipelines.rgb_spade import RGBSpadePipeline
from tests.conftest import scene_config_values
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
    "dataset_unknown_key": _dataset_yaml(tiles_per_sahrd=4),
    "dataset_bad_stage": _dataset_yaml(stages=["landcover", "paint"]),
    "train_unknown_key": _train_yaml("train-landcover", ae_stepz=2),
    "train_negative": _train_yaml("train-landcover", ae_steps=-2),
    "spade_negative_lr": _train_yaml("train-spade", g_lr=-0.1),
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
    bench.ingest = {
        "name": "plain",
        "root": str(root),
        "sources": "images/*.png",
        "image": "{path}",
        "label": "labels/{stem}.png",
        "scheme": "dubai",
        "tile_size": 32,
        "out": str(bench.tmp / "out" / "{name}"),
        "manifest": str(bench.tmp / "manifests" / "{name}.parquet"),
    }


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
    case("preview-zero-tiles", ["preview", "<scene>", "--out", "<tmp>/p.png", "--n", "0"], "n=0", "at least 1"),
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
    case("landcover-corrupt-shard-record", [*LANDCOVER, "--n", "2", "--model", "<lc_model>",
                                            "--out", "<corrupt_record>"], "landcover-00000.record.json", "JSON"),
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
