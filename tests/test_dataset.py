"""`synthgen dataset` at tiny size: tiny models built like the other tests do (land cover, SPADE, ControlNet from
configs after torch.manual_seed(0); SD3 trained 2+2 steps), passed by path through a config; every stage end to end
into a tmp folder with report.md / report.json; a rerun skips finished stages; validation on real tiles or on a
held-out part; bad configs are one line; killed with SIGKILL and rerun gives the manifests of a clean run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.config import build_config
from synthgen.dataset import stages as dataset_stages
from synthgen.io.manifest import verify_manifest
from synthgen.jobs.ingest import IngestConfig, run_ingest
from synthgen.pipelines.rgb_spade import RGBSpadePipeline
from tests.conftest import save_tiny_controlnet_pipeline, save_tiny_seg_model, scene_config_values
from tests.test_landcover import _tiny_pipeline
from tests.test_publish import offline_validator  # noqa: F401 - a fixture
from tests.test_spade import _tiny_generator

REPO = Path(__file__).resolve().parents[1]
GENERATED = ("landcover", "rgb-controlnet", "rgb-spade", "climate")
runner = CliRunner()


@pytest.fixture(scope="module")
def env(fixtures_dir, tmp_path_factory) -> dict:
    """Tiny models of every generator, the scene fixture ingested at 32 px as the real set, a 2-site sites table."""
    tmp = tmp_path_factory.mktemp("dataset-models")
    ingest = build_config(IngestConfig, scene_config_values(fixtures_dir, tmp))
    run_ingest(ingest)
    _tiny_pipeline().save_pretrained(tmp / "landcover")
    RGBSpadePipeline(_tiny_generator(), "oem8", False).save_pretrained(tmp / "spade")
    save_tiny_controlnet_pipeline(tmp / "controlnet")
    save_tiny_seg_model(tmp / "seg")
    torch.manual_seed(0)
    args = ["train", "sd3", "--config", "tiny", "--manifests", str(ingest.manifest_path), "--out", str(tmp / "sd3")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    sites = tmp / "sites.csv"
    sites.write_text(
        "site_id,lat,lon,date,temperature,precipitation,solar_radiation\n"
        "a,47.03,-99.18,2020-08-31,20.5,56.0,6.1\n"
        "b,46.80,-100.70,2020-07-15,22.0,60.0,6.5\n"
    )
    return {"tmp": tmp, "real": ingest.manifest_path, "sites": sites}


def _config(env: dict, path: Path, **changes) -> Path:
    """A dataset config over the tiny models (32 px, a few tiles, 2 steps, the tiny validation profile)."""
    m = env["tmp"]
    values = {
        "name": "tiny",
        "stages": ["landcover", "rgb-controlnet", "rgb-spade", "climate", "filter", "validate"],
        "preview_n": 4,
        "landcover": {"model": str(m / "landcover"), "n": 6, "size": 32, "steps": 2, "tiles_per_shard": 2},
        "rgb_controlnet": {"model": str(m / "controlnet"), "tiles": 4, "steps": 2, "tiles_per_shard": 2},
        "rgb_spade": {"model": str(m / "spade"), "tiles_per_shard": 4},
        "climate": {"model": str(m / "sd3" / "pipeline"), "sites": str(env["sites"]), "steps": 2, "size": 32},
        "filter": {"model": str(m / "seg"), "threshold": 0.0},
        "validate": {"profile": "tiny", "real": str(env["real"]), "arch": ["unet"]},
        **changes,
    }
    path.write_text(yaml.safe_dump(values))
    return path


def _run(config: Path, out: Path, *args: str):
    return runner.invoke(app, ["dataset", "--config", str(config), "--out", str(out), *args])


def _tiles(manifest: Path) -> list[tuple[str, tuple[str, ...]]]:
    df = pd.read_parquet(manifest)
    return [(k, tuple(h)) for k, h in zip(df["key"], df["sha256"], strict=True)]


@pytest.fixture(scope="module")
def built(env, tmp_path_factory) -> dict:
    """One complete run of every stage (validation on the real scene tiles)."""
    tmp = tmp_path_factory.mktemp("dataset")
    config = _config(env, tmp / "tiny.yaml")
    result = _run(config, tmp / "out")
    assert result.exit_code == 0, result.output
    return {"config": config, "out": tmp / "out", "output": result.output}


def test_every_stage_end_to_end_with_report(built):
    out = built["out"]
    assert f"dataset: {out}" in built["output"] and f"report: {out / 'report.md'}" in built["output"]
    report = json.loads((out / "report.json").read_text())
    stages = {r["stage"]: r for r in report["stages"]}
    assert list(stages) == [*GENERATED, "filter", "validate"] and report["finished"] and report["off"] == []
    expected = {"landcover": 6, "rgb-controlnet": 4, "rgb-spade": 6, "climate": 2}
    for stage, tiles in expected.items():
        manifest = out / stage / "manifest.parquet"
        assert stages[stage]["tiles"] == tiles == verify_manifest(manifest)["tiles"], stage
        assert stages[stage]["status"] == "done" and stages[stage]["tiles_per_s"] > 0
        assert (out / stages[stage]["preview"]).is_file()
    lineage = pd.read_parquet(out / "rgb-spade" / "manifest.parquet")["parent_keys"]
    assert [list(p) for p in lineage] == [[f"tiny-landcover_{i:07d}"] for i in range(6)]
    assert stages["landcover"]["model"].endswith("landcover") and len(stages["landcover"]["weights_hash"]) == 64
    filtered = stages["filter"]
    assert filtered["sets"]["rgb-spade"]["tiles"] == 6 and filtered["threshold"] == 0.0
    scored = pd.read_parquet(out / "filter" / "rgb-spade.scored.parquet")
    scores = [json.loads(m)["label_agreement"] for m in scored["meta"]]
    assert len(scores) == 6 and all(s is None or 0 <= s <= 1 for s in scores)
    assert filtered["sets"]["rgb-spade"]["kept"] == sum(s is not None for s in scores)
    assert verify_manifest(out / "filter" / "rgb-spade.parquet")["tiles"] == filtered["sets"]["rgb-spade"]["kept"]
    validation = stages["validate"]
    assert validation["tested_on"] == "real" and validation["runs"] == 5
    assert validation["sets"]["train"] == {
        "rgb-controlnet": 4,
        "rgb-spade": 6,
        "rgb-controlnet-filtered": filtered["sets"]["rgb-controlnet"]["kept"],
        "rgb-spade-filtered": filtered["sets"]["rgb-spade"]["kept"],
        "real": validation["sets"]["train"]["real"],
    }
    assert (out / "validate" / "report.json").is_file()
    md = (out / "report.md").read_text()
    assert "| landcover | done | 6 |" in md and "![rgb-spade](previews/rgb-spade.png)" in md
    assert "| training set | architecture | real |" in md and "tested on the real val split" in md
    assert "## Label-consistency filter" in md and "| rgb-spade | 6 |" in md
    assert validation["converged_runs"] == 0 and "**These numbers do not rank the sets**: 5 of 5 models" in md


def test_rerun_skips_finished_stages_and_a_missing_real_set_tests_on_held_out_tiles(env, built, tmp_path):
    out = built["out"]
    before = {s: (out / s / "manifest.parquet").stat().st_mtime_ns for s in GENERATED}
    again = _run(built["config"], out)
    assert again.exit_code == 0, again.output
    report = json.loads((out / "report.json").read_text())
    assert {r["stage"]: r["status"] for r in report["stages"]} == {
        s: "skipped" for s in [*GENERATED, "filter", "validate"]
    }
    assert before == {s: (out / s / "manifest.parquet").stat().st_mtime_ns for s in GENERATED}
    assert "complete earlier (skipped)" in (out / "report.md").read_text()

    missing = tmp_path / "nope.parquet"
    changed = _run(built["config"], out, "--set", f"validate.real={missing}", "--set", "validate.holdout=0.5")
    assert changed.exit_code == 0, changed.output
    report = json.loads((out / "report.json").read_text())
    statuses = {r["stage"]: r["status"] for r in report["stages"]}
    assert statuses == {**{s: "skipped" for s in (*GENERATED, "filter")}, "validate": "done"}
    validation = report["stages"][-1]
    assert validation["tested_on"] == "held-out" and "real" not in validation["sets"]["train"]
    assert validation["missing"][0]["set"] == "real" and str(missing) in validation["missing"][0]["reason"]
    tests = validation["sets"]["test"]
    assert set(tests) <= {"rgb-controlnet-heldout", "rgb-spade-heldout"} and tests["rgb-spade-heldout"] == 3
    assert validation["sets"]["train"]["rgb-spade"] == 3 and "rgb-spade-filtered-heldout" not in tests
    assert "skipped the test on real tiles" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["stages=landcover,upscale"], "config 'stages': unknown stage(s) upscale (allowed: landcover, rgb-controlnet"),
        (["landcover.n=-3"], "config 'landcover.n': -3 must be >= 1"),
        (["landcover.colour=red"], "config 'landcover': unknown key(s) colour (allowed: "),
        (["rgb-spade.tiles=0"], "config 'rgb_spade.tiles': 0 must be >= 1"),
        (["validate.steps=0"], "config 'validate.steps': 0 must be >= 1"),
        (["validate.holdout=1.5"], "config 'validate.holdout': 1.5 must be in (0, 1)"),
        (["colour=red"], "unknown key(s) colour (allowed: "),
        (["landcover.out=elsewhere"], "config 'landcover.out': set by synthgen dataset"),
        (["climate.model=/no/such/model"], "config 'climate.model': /no/such/model: model folder not found"),
        (["climate.sites=/no/sites.csv"], "config 'climate.sites': /no/sites.csv: file not found"),
        (["stages=rgb-spade,validate"], "stage 'rgb-spade' renders the dataset's land-cover tiles, but"),
        (["stages=landcover,validate"], "stage 'validate' trains on generated RGB tiles: add rgb-controlnet"),
        (["filter.threshold=1.5"], "config 'filter.threshold': 1.5 must be in [0, 1]"),
        (["filter.sets=climate"], "config 'filter.sets': climate cannot be filtered (allowed: rgb-controlnet"),
        (["filter.model=/no/seg"], "config 'filter.model' /no/seg: model folder not found"),
        (["filter.colour=red"], "config 'filter': unknown key(s) colour (allowed: "),
        (["stages=landcover,filter"], "stage 'filter' scores generated RGB tiles: add rgb-controlnet"),
    ],
)
def test_bad_config_is_one_line_and_writes_nothing(env, tmp_path, sets, message):
    config = _config(env, tmp_path / "c.yaml")
    result = _run(config, tmp_path / "out", *(a for s in sets for a in ("--set", s)))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_unknown_config_and_missing_embedded_weights_name_what_to_do(env, tmp_path, monkeypatch):
    result = runner.invoke(app, ["dataset", "--config", "phone", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown dataset config 'phone' (shipped: gpu-node, laptop" in result.output
    values = yaml.safe_load(_config(env, tmp_path / "c.yaml").read_text())
    del values["landcover"]["model"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(values))
    spec = dataset_stages.GENERATORS["landcover"]
    monkeypatch.setitem(dataset_stages.GENERATORS, "landcover", type(spec)(**{**vars(spec), "weights": tmp_path / "w"}))
    result = _run(tmp_path / "c.yaml", tmp_path / "out")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert (
        "stage 'landcover': the embedded default model synthgen/weights/w is not trained yet: run `make "
        in (result.output)
        and "weights-landcover`" in result.output
        and not (tmp_path / "out").exists()
    )


def test_shipped_configs_load():
    from synthgen.dataset.config import STAGES, load_dataset_config

    laptop = load_dataset_config("laptop")
    gpu = load_dataset_config("gpu-node", {"landcover.n": "20000"}, out="/tmp/x")
    assert laptop.stages == list(STAGES) and laptop.root == Path("datasets/laptop")
    assert gpu.landcover["n"] == "20000" and gpu.root == Path("/tmp/x") and gpu.validate["profile"] == "gpu"


def test_killed_and_rerun_gives_the_manifests_of_a_clean_run(env, tmp_path):
    config = _config(env, tmp_path / "tiny.yaml", stages=list(GENERATED))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "synthgen", "dataset", "--config", str(config), "--out", str(out)]
    env_vars = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env_vars, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "landcover" / "shards").glob("*.record.json")):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "climate" / "stage.json").exists()
    result = _run(config, out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    statuses = {r["stage"]: r["status"] for r in report["stages"]}
    assert statuses["landcover"] in ("resumed", "skipped") and statuses["climate"] == "done"
    resumed = {stage: _tiles(out / stage / "manifest.parquet") for stage in GENERATED}
    shutil.rmtree(out)  # the clean run writes to the same paths: tiles record their cond manifest's path
    assert _run(config, out).exit_code == 0
    assert resumed == {stage: _tiles(out / stage / "manifest.parquet") for stage in GENERATED}


@pytest.mark.usefixtures("offline_validator")
def test_the_published_folder_has_every_generator_stage_in_catalog_and_card(built, tmp_path, monkeypatch):
    from tests.test_publish import validate_folder

    out = built["out"]
    validate_folder(out)
    catalog = json.loads((out / "catalog.json").read_text())
    assert [link["href"] for link in catalog["links"] if link["rel"] == "child"] == [
        f"./{stage}/collection.json" for stage in GENERATED
    ]
    climate = [json.loads(p.read_text()) for p in sorted((out / "climate" / "items").glob("*.json"))]
    assert len(climate) == 2 and all(set(item["assets"]) == {"rgb"} for item in climate)
    assert sorted(item["properties"]["datetime"][:10] for item in climate) == ["2020-07-15", "2020-08-31"]
    card = (out / "README.md").read_text()
    validation = json.loads((out / "validate" / "stage.json").read_text())  # the rerun test may have changed it
    assert "### Label-consistency filter" in card and "| rgb-spade | 6 |" in card
    assert validation["note"] in card and all(line in card for line in validation["table"])
    assert "text-to-image" in card.split("---")[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets", reason="datasets is a dev extra")
    for stage, tiles in {"climate": 2, "rgb-controlnet": 4}.items():
        assert len(datasets.load_dataset(str(out), stage, split="train", cache_dir=str(tmp_path))) == tiles
