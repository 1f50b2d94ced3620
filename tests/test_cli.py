"""The command line, in process: help and version, schemes, a user scheme file in ingest, and a whole run
ingest -> info -> verify -> preview with the resolved config saved beside its outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from synthgen import __version__
from synthgen.cli.main import app
from synthgen.config import load_config
from synthgen.errors import ConfigError
from synthgen.io.manifest import manifest_config, read_manifest
from synthgen.jobs.ingest import IngestConfig
from synthgen.validation.config import ValidateConfig

runner = CliRunner()
COMMANDS = ["ingest", "verify", "info", "preview", "schemes"]
BUILTIN_SCHEMES = ["oem8", "dubai", "isprs", "loveda", "dronedeploy", "worldcover"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.stdout


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------- help and version


def test_app_help_lists_every_command():
    out = ok(invoke("--help"))
    assert "Usage" in out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_exits_zero(command):
    out = ok(invoke(command, "--help"))
    assert "Usage" in out and command in out


def test_no_arguments_shows_help():
    result = invoke()
    assert "Usage" in result.output and "ingest" in result.output
    assert "error" not in result.output.lower()


def test_version_prints_package_version():
    assert ok(invoke("--version")).strip() == f"synthgen {__version__}"


# ---------------------------------------------------------------------------------------------- schemes


def test_schemes_lists_every_builtin_scheme():
    out = ok(invoke("schemes"))
    listed = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert sorted(listed) == sorted(BUILTIN_SCHEMES)


def test_schemes_dubai_prints_json_with_mapping_to_oem8():
    doc = json.loads(ok(invoke("schemes", "dubai")))
    assert doc["name"] == "dubai"
    assert doc["nodata"] == 255
    assert {c["code"] for c in doc["classes"]} == {0, 1, 2, 3, 4, 5, 255}
    assert doc["to"]["oem8"] == {"0": 8, "1": 1, "2": 4, "3": 5, "4": 6, "5": 0, "255": 0}


DUBAI_AS_USER_SCHEME = {
    "name": "my-dubai",
    "description": "the dubai index masks, as a user's own scheme file",
    "nodata": 255,
    "classes": [
        {"code": 0, "name": "building", "color": "#3c1098"},
        {"code": 1, "name": "land", "color": "#8429f6"},
        {"code": 2, "name": "road", "color": [110, 193, 228]},
        {"code": 3, "name": "vegetation", "color": "#fedd3a"},
        {"code": 4, "name": "water", "color": "#e2a929"},
        {"code": 5, "name": "unlabeled", "color": "#9b9b9b"},
        {"code": 255, "name": "undefined", "color": "#000000"},
    ],
    "to": {"oem8": {0: 8, 1: 1, 2: 4, 3: 5, 4: 6, 5: 0, 255: 0}},
}


def plain_config(fixtures_dir: Path, tmp_path: Path, tag: str) -> dict:
    return {
        "name": "plain",
        "root": str(fixtures_dir / "plain"),
        "sources": "images/*.png",
        "image": "{path}",
        "label": "labels/{stem}.png",
        "tile_size": 32,
        "out": str(tmp_path / tag / "out" / "{name}"),
        "manifest": str(tmp_path / tag / "manifests" / "{name}.parquet"),
    }


def test_user_scheme_yaml_file_works_in_ingest_like_the_builtin_one(fixtures_dir, tmp_path):
    scheme_file = write_yaml(tmp_path / "my-dubai.yaml", DUBAI_AS_USER_SCHEME)
    shown = json.loads(ok(invoke("schemes", scheme_file)))
    assert shown["name"] == "my-dubai" and shown["to"]["oem8"]["0"] == 8

    manifests = {}
    for tag, scheme in [("user", str(scheme_file)), ("builtin", "dubai")]:
        config = write_yaml(tmp_path / f"{tag}.yaml", plain_config(fixtures_dir, tmp_path, tag))
        summary = json.loads(ok(invoke("ingest", "--config", config, "--scheme", scheme)))
        assert summary["sources"] == 2 and summary["tiles"] == 8
        manifests[tag] = read_manifest(Path(summary["manifest"]))

    user, builtin = manifests["user"], manifests["builtin"]
    assert set(user["scheme"]) == {"oem8"}
    building = sum(h[8] for h in user["class_hist"])
    assert building > 0
    # same codes, same mapping: every tile and every member byte is the same as with the built-in scheme
    assert list(user["key"]) == list(builtin["key"])
    assert [list(h) for h in user["sha256"]] == [list(h) for h in builtin["sha256"]]
    assert [list(h) for h in user["class_hist"]] == [list(h) for h in builtin["class_hist"]]
    assert manifest_config(Path(tmp_path / "user" / "manifests" / "plain.parquet"))["scheme"] == str(scheme_file)


# ---------------------------------------------------------------------------------------------- a whole run


@pytest.fixture
def scene_run(scene_config, tmp_path):
    """The scene fixture ingested through the CLI with a YAML config plus overrides from the command line."""
    config_path = write_yaml(tmp_path / "scene.yaml", scene_config)
    result = invoke("ingest", "--config", config_path, "--set", "tiles_per_shard=8", "--set", "split_seed=7")
    summary = json.loads(ok(result))
    return config_path, Path(scene_config["manifest"].format(name="scene")), summary


def test_ingest_info_verify_preview_end_to_end(scene_run, tmp_path):
    _, manifest, summary = scene_run
    assert summary["manifest"] == str(manifest)
    assert summary["tiles"] == 27 and summary["shards"] == 4 and summary["shards_written"] == 4
    assert sum(summary["splits"].values()) == 27 and summary["splits"]["val"] > 0

    text = ok(invoke("info", manifest))
    assert str(manifest) in text
    assert any(line.split()[:2] == ["tiles", "27"] for line in text.splitlines())

    doc = json.loads(ok(invoke("info", manifest, "--json")))
    assert doc["tiles"] == 27 and doc["shards"] == 4 and doc["missing_shards"] == []
    assert doc["splits"] == summary["splits"]
    assert doc["rasters"] == {"rgb": 27, "label": 27, "height": 0}

    assert ok(invoke("verify", manifest)).strip() == f"ok: 27 tiles, 81 members in 4 shards match {manifest}"

    out = ok(invoke("preview", manifest))
    default_png = manifest.with_name("scene.preview.png")
    assert out.strip() == f"wrote {default_png}"
    with Image.open(default_png) as img:
        img.load()
        assert img.format == "PNG" and img.width > 0 and img.height > 0

    custom_png = tmp_path / "sheets" / "four.png"
    ok(invoke("preview", manifest, "--out", custom_png, "--n", "4", "--columns", "2", "--seed", "1"))
    with Image.open(custom_png) as img:
        img.load()
        assert img.format == "PNG"


def test_resolved_config_is_saved_beside_manifest_and_in_out_folder(scene_run, scene_config):
    config_path, manifest, summary = scene_run
    beside_manifest = manifest.with_name("scene.config.yaml")
    in_out = Path(summary["out"]) / "config.yaml"
    assert beside_manifest.is_file() and in_out.is_file()

    expected = load_config(IngestConfig, config_path, "ingest", {"tiles_per_shard": 8, "split_seed": 7})
    for saved in (beside_manifest, in_out):
        assert load_config(IngestConfig, saved, "ingest") == expected
        raw = yaml.safe_load(saved.read_text())
        assert raw["tiles_per_shard"] == 8 and raw["split_seed"] == 7 and raw["scheme"] == "isprs"
        assert {k: raw[k] for k in scene_config if k not in ("tiles_per_shard", "split_seed")} == {
            k: v for k, v in scene_config.items() if k not in ("tiles_per_shard", "split_seed")
        }
    stored = manifest_config(manifest)
    assert {k: v for k, v in stored.items() if k != "config_hash"} == yaml.safe_load(beside_manifest.read_text())

    # the saved config reproduces the run: rerunning with it finds every shard done
    rerun = json.loads(ok(invoke("ingest", "--config", beside_manifest)))
    assert rerun["shards_skipped"] == rerun["shards"] == 4 and rerun["tiles"] == 27


def test_an_unknown_key_is_reported_with_its_source(scene_config, tmp_path):
    """A key from `--set` is named as coming from --set, not from the config file; one in the file names the file;
    both list the allowed keys."""
    config = write_yaml(tmp_path / "scene.yaml", scene_config)
    result = invoke("ingest", "--config", config, "--set", "bogus=1")
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --set: unknown key(s) bogus (allowed: "), result.output
    assert str(config) not in lines[0]
    assert not (tmp_path / "out").exists()

    with pytest.raises(ConfigError, match=r"^--set: unknown key\(s\) stepz \(did you mean steps\? allowed: "):
        load_config(ValidateConfig, "tiny", "validate", {"stepz": 3})
    with pytest.raises(ConfigError, match=r"^overrides: unknown key\(s\) bogus"):
        load_config(IngestConfig, config, "ingest", {"bogus": 1}, overrides_from="overrides")

    in_file = write_yaml(tmp_path / "bad.yaml", {**scene_config, "bogus": 1})
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(in_file))}: unknown key\(s\) bogus \(allowed: "):
        load_config(IngestConfig, in_file, "ingest", {"tiles_per_shard": 8})
