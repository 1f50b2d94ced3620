"""Bad input through the real CLI: one line 'error: ...' naming the file or value, exit != 0, no traceback, and
nothing left behind that looks like a finished shard or manifest."""

from __future__ import annotations

import shutil
import tarfile
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

from synthgen.cli import app
from tests.data.make_fixtures import write_tif

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


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


def assert_nothing_looks_complete(config: dict) -> None:
    """No manifest at the configured path, and no shard tar without its record (nor leftover temporary files)."""
    manifest = Path(config["manifest"].format(name=config["name"]))
    assert not manifest.exists(), f"{manifest} was written"
    assert not manifest.with_name(manifest.name + ".tmp").exists()
    out = Path(config["out"].format(name=config["name"]))
    if out.exists():
        for tar in out.glob("*.tar"):
            assert tar.with_name(tar.name.removesuffix(".tar") + ".record.json").is_file(), f"{tar} has no record"
        assert not list(out.glob("*.tmp")), "temporary files left behind"


def run_ingest_config(tmp_path: Path, config: dict, *extra: str):
    path = tmp_path / "ingest.yaml"
    path.write_text(yaml.safe_dump(config))
    return invoke("ingest", "--config", path, *extra)


def copy_scene(fixtures_dir: Path, tmp_path: Path, config: dict) -> Path:
    """A private copy of the scene fixture (to break), with ``config`` pointed at it."""
    root = tmp_path / "scene"
    shutil.copytree(fixtures_dir / "scene", root)
    config["root"] = str(root)
    return root


def plain_config(tmp_path: Path, root: Path) -> dict:
    return {
        "name": "plain",
        "root": str(root),
        "sources": "images/*.png",
        "image": "{path}",
        "label": "labels/{stem}.png",
        "scheme": "dubai",
        "tile_size": 32,
        "out": str(tmp_path / "out" / "{name}"),
        "manifest": str(tmp_path / "manifests" / "{name}.parquet"),
    }


# ---------------------------------------------------------------------------------------------- missing files


def test_ingest_missing_label_file_names_the_file(tmp_path, scene_config):
    scene_config["label"] = "{parent}/labels/{stem}_missing.tif"
    result = run_ingest_config(tmp_path, scene_config)
    assert_one_line_error(result, "t0_missing.tif", "not found")
    assert_nothing_looks_complete(scene_config)


def test_ingest_missing_data_root_names_the_folder(tmp_path, scene_config):
    scene_config["root"] = str(tmp_path / "no_such_root")
    result = run_ingest_config(tmp_path, scene_config)
    assert_one_line_error(result, "no_such_root", "not found")
    assert_nothing_looks_complete(scene_config)


def test_ingest_sources_pattern_matching_nothing_names_the_pattern(tmp_path, scene_config):
    scene_config["sources"] = "*/images/*.jp2"
    result = run_ingest_config(tmp_path, scene_config)
    assert_one_line_error(result, "*/images/*.jp2")
    assert_nothing_looks_complete(scene_config)


def test_ingest_missing_config_file_names_the_file(tmp_path):
    result = invoke("ingest", "--config", tmp_path / "nope.yaml")
    assert_one_line_error(result, "nope.yaml", "not found")


@pytest.mark.parametrize("command", ["info", "verify", "preview"])
def test_missing_manifest_names_the_manifest(tmp_path, command):
    manifest = tmp_path / "manifests" / "absent.parquet"
    result = invoke(command, manifest)
    assert_one_line_error(result, "absent.parquet", "not found")
    assert not list(tmp_path.rglob("*.png"))


# ---------------------------------------------------------------------------------------------- label values


@pytest.mark.parametrize("workers", [1, 2])
def test_ingest_unknown_class_value_names_file_value_and_scheme(tmp_path, scene_config, fixtures_dir, workers):
    scene_config["workers"] = workers
    root = copy_scene(fixtures_dir, tmp_path, scene_config)
    label = root / "area_a" / "labels" / "t1.tif"
    with rasterio.open(label, "r+") as ds:
        values = ds.read(1)
        values[8:24, 8:24] = 9
        ds.write(values, 1)
    result = run_ingest_config(tmp_path, scene_config)
    line = assert_one_line_error(result, "t1.tif", "value(s) 9 are not in scheme 'isprs'")
    assert "allowed: 0, 1, 2, 3, 4, 5, 6" in line
    assert_nothing_looks_complete(scene_config)


# ---------------------------------------------------------------------------------------------- sizes and grids


def test_ingest_label_size_mismatch_without_georeference_names_both_sizes(tmp_path, fixtures_dir):
    root = tmp_path / "plain"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    shutil.copy(fixtures_dir / "plain" / "images" / "p0.png", root / "images" / "p0.png")
    Image.fromarray(np.ones((60, 64), np.uint8)).save(root / "labels" / "p0.png")
    config = plain_config(tmp_path, root)
    result = run_ingest_config(tmp_path, config)
    assert_one_line_error(result, "p0.png", "64x60", "64x64")
    assert_nothing_looks_complete(config)


def test_ingest_georeferenced_image_with_unreferenced_label_of_other_size_fails(tmp_path, scene_config, fixtures_dir):
    root = copy_scene(fixtures_dir, tmp_path, scene_config)
    label = root / "area_a" / "labels" / "t0.tif"
    label.unlink()
    write_tif(label, np.ones((50, 70), np.uint8), None, Affine.identity())
    result = run_ingest_config(tmp_path, scene_config)
    assert_one_line_error(result, "t0.tif", "70x50", "96x80", "georeference")
    assert_nothing_looks_complete(scene_config)


LOCAL_CS = 'LOCAL_CS["arbitrary",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'


@pytest.mark.parametrize(
    ("crs", "transform", "problem"),
    [
        ("EPSG:32633", Affine(0.5, 0, 800_000.0, 0, -0.5, 1_000_000.0), "overlap"),
        ("EPSG:4326", Affine(1e-5, 0, -170.0, 0, -1e-5, -80.0), "overlap"),
        (LOCAL_CS, Affine(0.5, 0, 500_000.0, 0, -0.5, 5_500_000.0), "aligned"),
    ],
    ids=["same-crs-elsewhere", "wgs84-elsewhere", "local-crs-without-transformation"],
)
def test_ingest_label_crs_that_cannot_be_aligned_names_the_label(
    tmp_path, scene_config, fixtures_dir, crs, transform, problem
):
    root = copy_scene(fixtures_dir, tmp_path, scene_config)
    label = root / "area_a" / "labels" / "t0.tif"
    label.unlink()
    write_tif(label, np.ones((80, 96), np.uint8), CRS.from_user_input(crs), transform)
    result = run_ingest_config(tmp_path, scene_config)
    assert_one_line_error(result, "t0.tif", problem)
    assert_nothing_looks_complete(scene_config)


# ---------------------------------------------------------------------------------------------- unreadable rasters


@pytest.mark.parametrize("which", ["image", "label"])
def test_ingest_garbage_tif_names_the_file(tmp_path, scene_config, fixtures_dir, which):
    root = copy_scene(fixtures_dir, tmp_path, scene_config)
    bad = root / "area_a" / f"{which}s" / "t1.tif"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    result = run_ingest_config(tmp_path, scene_config)
    assert_one_line_error(result, "t1.tif", "not a readable raster")
    assert_nothing_looks_complete(scene_config)


# ---------------------------------------------------------------------------------------------- config values


CONFIG_CASES = [
    pytest.param(["--set", "bogus=1"], ["bogus", "unknown key"], id="unknown-key"),
    pytest.param(["--set", "bogus"], ["bogus", "KEY=VALUE"], id="set-without-equals"),
    pytest.param(["--set", "tile_size=abc"], ["tile_size", "abc"], id="set-wrong-type"),
    pytest.param(["--tile-size", "abc"], ["tile-size", "abc"], id="option-wrong-type"),
    pytest.param(["--set", "val_fraction=1.5"], ["val_fraction", "1.5"], id="value-out-of-range"),
    pytest.param(["--scheme", "nosuchscheme"], ["nosuchscheme", "isprs"], id="unknown-scheme"),
    pytest.param(["--target-scheme", "nosuchscheme"], ["nosuchscheme", "oem8"], id="unknown-target-scheme"),
    pytest.param(["--scheme", "missing_scheme.yaml"], ["missing_scheme.yaml", "not found"], id="missing-scheme-file"),
    pytest.param(["--tile-size", "128"], ["t0.tif", "96x80", "128"], id="tile-larger-than-image"),
    pytest.param(["--label", "labels/{nope}.png"], ["nope", "label", "stem"], id="unknown-template-field"),
    pytest.param(["--label", "labels/{stem.png"], ["labels/{stem.png", "label"], id="malformed-template"),
    pytest.param(["--label", "labels/{stem!x}.png"], ["labels/{stem!x}.png", "label"], id="bad-template-conversion"),
    pytest.param(["--bogus", "1"], ["--bogus"], id="unknown-option"),
]


@pytest.mark.parametrize(("args", "names"), CONFIG_CASES)
def test_ingest_bad_config_value_names_key_and_value(tmp_path, scene_config, args, names):
    result = run_ingest_config(tmp_path, scene_config, *args)
    assert_one_line_error(result, *names)
    assert_nothing_looks_complete(scene_config)


def test_ingest_unknown_shipped_config_lists_the_shipped_ones(tmp_path):
    result = invoke(
        "ingest", "--config", "nosuchdataset", "--out", tmp_path / "out", "--manifest", tmp_path / "m.parquet"
    )
    assert_one_line_error(result, "nosuchdataset", "dubai", "potsdam")
    assert not (tmp_path / "m.parquet").exists()


def test_ingest_config_file_with_unknown_key_names_file_and_key(tmp_path, scene_config):
    scene_config["tilesize"] = 32
    result = run_ingest_config(tmp_path, scene_config)
    assert_one_line_error(result, "ingest.yaml", "tilesize", "tile_size")
    assert_nothing_looks_complete(scene_config)


def _scheme_classes(*codes: int) -> list[dict]:
    return [{"code": c, "name": f"class {c}"} for c in codes]


ISPRS_CODES = (0, 1, 2, 3, 4, 5, 6)
SCHEME_FILE_CASES = [
    pytest.param({"name": "s", "classes": 5}, "classes", id="classes-not-a-list"),
    pytest.param({"name": "s", "classes": ["a", "b"]}, "class #0", id="class-not-a-mapping"),
    pytest.param({"name": "s", "nodata": "x", "classes": _scheme_classes(*ISPRS_CODES)}, "nodata", id="nodata-not-int"),
    pytest.param(
        {"name": "s", "classes": [{"code": 0, "name": "a", "color": [1, 2, "x"]}]}, "colour", id="colour-not-int"
    ),
    pytest.param(
        {"name": "s", "classes": _scheme_classes(*ISPRS_CODES), "to": ["oem8"]}, "'to'", id="to-not-a-mapping"
    ),
    pytest.param(
        {"name": "s", "classes": _scheme_classes(*ISPRS_CODES), "to": {"oem8": [1, 2]}},
        "oem8",
        id="mapping-not-a-table",
    ),
    pytest.param(
        {"name": "s", "classes": _scheme_classes(*ISPRS_CODES), "to": {"oem8": dict.fromkeys(ISPRS_CODES, "tree")}},
        "oem8",
        id="mapping-to-a-name",
    ),
]


@pytest.mark.parametrize(("scheme", "problem"), SCHEME_FILE_CASES)
def test_ingest_malformed_user_scheme_file_names_the_file(tmp_path, scene_config, scheme, problem):
    scheme_file = tmp_path / "my_scheme.yaml"
    scheme_file.write_text(yaml.safe_dump(scheme))
    scene_config["scheme"] = str(scheme_file)
    result = run_ingest_config(tmp_path, scene_config)
    assert_one_line_error(result, "my_scheme.yaml", problem)
    assert_nothing_looks_complete(scene_config)


def test_ingest_user_scheme_without_mapping_to_target_names_both_schemes(tmp_path, scene_config):
    scheme_file = tmp_path / "my_scheme.yaml"
    scheme_file.write_text(yaml.safe_dump({"name": "mine", "classes": _scheme_classes(*ISPRS_CODES)}))
    scene_config["scheme"] = str(scheme_file)
    result = run_ingest_config(tmp_path, scene_config)
    assert_one_line_error(result, "'mine'", "'oem8'", "no mapping")
    assert_nothing_looks_complete(scene_config)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["verify"], ["Missing argument", "manifest"]),
        (["nosuchcommand"], ["nosuchcommand"]),
        (["--bogus"], ["--bogus"]),
        (["preview", "x.parquet", "--n", "many"], ["--n", "many"]),
    ],
    ids=["missing-argument", "unknown-command", "unknown-app-option", "option-wrong-type"],
)
def test_usage_errors_are_one_line(args, names):
    assert_one_line_error(invoke(*args), *names)


# ---------------------------------------------------------------------------------------------- manifests and shards


@pytest.fixture
def ingested(tmp_path, scene_config) -> Path:
    """The scene fixture ingested through the CLI; returns the manifest path."""
    result = run_ingest_config(tmp_path, scene_config)
    assert result.exit_code == 0, result.output
    return Path(scene_config["manifest"].format(name="scene"))


@pytest.mark.parametrize("command", ["verify", "info", "preview"])
def test_manifest_with_missing_columns_names_manifest_and_columns(tmp_path, command):
    manifest = tmp_path / "thin.parquet"
    pd.DataFrame({"key": ["a", "b"], "shard": ["x.tar", "x.tar"]}).to_parquet(manifest)
    result = invoke(command, manifest)
    assert_one_line_error(result, "thin.parquet", "missing columns", "members", "sha256")
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("command", ["verify", "info"])
def test_manifest_that_is_not_parquet_names_the_manifest(tmp_path, command):
    manifest = tmp_path / "garbage.parquet"
    manifest.write_bytes(b"not parquet at all\n" * 10)
    result = invoke(command, manifest)
    assert_one_line_error(result, "garbage.parquet", "parquet")


def test_verify_member_hash_mismatch_names_shard_and_member(ingested):
    assert invoke("verify", ingested).exit_code == 0
    shard = ingested.parent.parent / "out" / "scene" / "scene-00001.tar"
    with tarfile.open(shard) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".label.tif")][1]
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = invoke("verify", ingested)
    assert_one_line_error(result, "scene-00001.tar", member.name, "sha256")


def test_verify_truncated_shard_names_the_shard(ingested):
    shard = ingested.parent.parent / "out" / "scene" / "scene-00002.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    result = invoke("verify", ingested)
    assert_one_line_error(result, "scene-00002.tar")


def test_verify_missing_shard_names_the_shard(ingested):
    (ingested.parent.parent / "out" / "scene" / "scene-00003.tar").unlink()
    result = invoke("verify", ingested)
    assert_one_line_error(result, "scene-00003.tar", "not found")


def test_verify_shard_replaced_by_garbage_names_the_shard(ingested):
    shard = ingested.parent.parent / "out" / "scene" / "scene-00000.tar"
    shard.write_bytes(b"\x01garbage" * 300)
    result = invoke("verify", ingested)
    assert_one_line_error(result, "scene-00000.tar")


def test_scheme_without_mapping_fails_before_any_shard_is_written(scene_config, tmp_path):
    scheme = tmp_path / "nomap.yaml"
    scheme.write_text("name: nomap\nnodata: 0\nclasses: [{code: 0, name: a}, {code: 1, name: b}]\n")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**scene_config, "scheme": str(scheme)}))
    result = CliRunner().invoke(app, ["ingest", "--config", str(config)])
    assert result.exit_code != 0 and "has no mapping to 'oem8'" in result.output
    assert not (tmp_path / "out").exists()
