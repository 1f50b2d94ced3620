"""SD3 climate generator at tiny size (real diffusers SD3 classes, tokenizer trained locally, no network):
train -> save -> load -> generate, shards and manifest, the time-series ControlNet, evaluation, resume, LoRA,
and bad input through the CLI (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.climate.sites import sites_table_from_manifest
from synthgen.config import build_config
from synthgen.io.manifest import iter_samples, verify_manifest
from synthgen.jobs.ingest import IngestConfig, run_ingest
from synthgen.pipelines.climate import ClimatePipeline
from tests.conftest import scene_config_values

runner = CliRunner()


def _ingest(values: dict) -> Path:
    config = build_config(IngestConfig, values)
    run_ingest(config)
    return config.manifest_path


@pytest.fixture(scope="module")
def data(fixtures_dir, tmp_path_factory) -> dict:
    """The scene fixture (labels) and the dated series fixture (3 summers, EPSG:26914), ingested at 32 px."""
    tmp = tmp_path_factory.mktemp("climate-data")
    scene = _ingest(scene_config_values(fixtures_dir, tmp))
    series = _ingest(
        {
            "name": "series",
            "root": str(fixtures_dir / "series"),
            "sources": "*.tif",
            "image": "{path}",
            "align": "first",
            "date_regex": r"_(\d{8})\.tif$",
            "tile_size": 32,
            "area": "{block}",
            "area_block": 32,
            "val_fraction": 0.3,
            "tiles_per_shard": 8,
            "out": str(tmp / "out" / "series"),
            "manifest": str(tmp / "manifests" / "series.parquet"),
        }  # fmt: skip
    )
    sites = sites_table_from_manifest(series, tmp / "sites.csv", "2014-08-01", "2012-07-01", None, "North Dakota", 32)
    df = pd.read_csv(sites, comment="#")
    df["temperature"], df["precipitation"], df["solar_radiation"] = 20.5, 56.0, 6.1
    df.to_csv(sites, index=False)
    return {"scene": scene, "series": series, "sites": sites, "tmp": tmp}


@pytest.fixture(scope="module")
def model(data) -> Path:
    """A tiny SD3 (VAE 2 steps, transformer 2 steps) trained through the CLI on both manifests."""
    out = data["tmp"] / "sd3"
    torch.manual_seed(0)
    result = runner.invoke(app, ["train", "sd3", "--config", "tiny", "--manifests", f"{data['scene']},{data['series']}",
                                 "--out", str(out), "--set", "holdout_dates=2014-08-01"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def controlnet(data, model) -> Path:
    """A tiny time-series ControlNet (2 steps) on the tiny SD3, trained through the CLI."""
    out = data["tmp"] / "cn"
    result = runner.invoke(app, ["train", "sd3-controlnet", "--config", "tiny", "--base", str(model / "pipeline"),
                                 "--manifest", str(data["series"]), "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_train_save_load_generate(model, data):
    folder = model / "pipeline"
    info = json.loads((folder / "climate.json").read_text())
    assert info["max_sequence_length"] == 0 and info["size"] == 32 and info["prompts"]["climate"]["parts"]
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["step"] == 4 and len(metrics["loss_vae"]) == 2 and len(metrics["loss_transformer"]) == 2
    assert metrics["prompts_truncated"] == 0
    assert (model / "checkpoint-4" / "trainer_state.json").is_file() and list((model / "previews").glob("*.png"))
    pipe = ClimatePipeline.from_pretrained(folder)
    assert pipe.sd3.text_encoder_3 is None and not pipe.with_t5
    sites = [{"site_id": "a", "lat": 47.0, "lon": -99.2, "date": "2014-08-01", "temperature": 20.0,
              "precipitation": 50.0, "solar_radiation": 6.0, "landcover_fractions": {"tree": 1.0}}] * 2  # fmt: skip
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    out = pipe(sites, size=32, num_inference_steps=2, guidance_scale=3.0, generator=gens)
    assert out.images.shape == (2, 32, 32, 3) and out.images.dtype == np.uint8
    assert "100 % tree" in out.prompts[0].spatial and "mm/month" in out.prompts[0].climate
    again = pipe(
        sites[:1], size=32, num_inference_steps=2, guidance_scale=3.0, generator=[torch.Generator().manual_seed(1)]
    )
    assert np.array_equal(again.images[0], out.images[0])


def test_climate_cli_shards_manifest_and_resume(model, data):
    out, manifest = data["tmp"] / "gen", data["tmp"] / "gen.parquet"
    args = ["climate", "--sites", str(data["sites"]), "--model", str(model / "pipeline"), "--steps", "2",
            "--n-per-site", "2", "--out", str(out), "--manifest", str(manifest), "--tiles-per-shard", "8"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(manifest)
    assert len(df) == 12 and verify_manifest(manifest)["tiles"] == 12
    meta = json.loads(df["meta"].iloc[0])
    assert meta["temperature"] == 20.5 and meta["date"] == "2014-08-01" and meta["control_key"].startswith("series")
    assert "°C" in meta["climate_prompt"] and df["prompt"].iloc[0].startswith(meta["spatial_prompt"])
    assert df["crs"].iloc[0] == "EPSG:32614" and not df["synthetic_georef"].any()
    first = [s["rgb"] for s in iter_samples(manifest)]
    assert all(im.shape == (32, 32, 3) for im in first)
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0 and json.loads(rerun.output)["shards_skipped"] == 2


def test_controlnet_time_series_and_evaluation(model, controlnet, data):
    assert (controlnet / "controlnet" / "config.json").is_file()
    assert json.loads((controlnet / "controlnet" / "climate.json").read_text())["base"] == str(model / "pipeline")
    out, manifest = data["tmp"] / "ts", data["tmp"] / "ts.parquet"
    result = runner.invoke(app, ["climate", "--sites", str(data["sites"]), "--model", str(model / "pipeline"),
                                 "--control", str(data["series"]), "--controlnet", str(controlnet / "controlnet"),
                                 "--steps", "2", "--out", str(out), "--manifest", str(manifest)])  # fmt: skip
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(manifest)
    real = pd.read_parquet(data["series"]).set_index("key")
    for row in df.itertuples():
        control = real.loc[row.parent_keys[0]]
        assert row.crs == control["crs"] and list(row.transform) == list(control["transform"])  # same footprint
        assert row.generator == "climate-controlnet"
    report_path = data["tmp"] / "eval.json"
    result = runner.invoke(app, ["evaluate", "climate", "--generated", str(manifest), "--real", str(data["series"]),
                                 "--out", str(report_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["pairs"] == 6 and report["unmatched"] == 0 and -1 <= report["ssim"]["mean"] <= 1
    assert report["psnr"]["mean"] > 0 and "skipped" in report["clip_score"] and "skipped" in report["fid"]


def test_resume_continues_the_same_run(data, model):
    out = data["tmp"] / "resume"
    base = ["train", "sd3", "--config", "tiny", "--manifests", str(data["series"]), "--out", str(out)]
    assert runner.invoke(app, [*base, "--max-steps", "3"]).exit_code == 0
    assert (out / "checkpoint-3").is_dir() and not (out / "pipeline").exists()
    result = runner.invoke(app, [*base, "--resume", "latest"])
    assert result.exit_code == 0, result.output
    full = data["tmp"] / "full"
    assert runner.invoke(app, [*base[:-1], str(full)]).exit_code == 0
    resumed = json.loads((out / "metrics.json").read_text())["loss_transformer"]
    straight = json.loads((full / "metrics.json").read_text())["loss_transformer"]
    assert [s for s, _ in resumed] == [3, 4]
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in straight], rel=1e-5)


def test_lora_on_a_base_model(data, model):
    out = data["tmp"] / "lora"
    result = runner.invoke(app, ["train", "sd3", "--config", "tiny", "--manifests", str(data["series"]), "--out",
                                 str(out), "--base-model", str(model / "pipeline"), "--lora-rank", "2",
                                 "--set", "vae_steps=0", "--set", "transformer_steps=1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "pipeline" / "pytorch_lora_weights.safetensors").is_file()
    pipe = ClimatePipeline.from_pretrained(out / "pipeline")
    site = {"site_id": "a", "lat": 47.0, "lon": -99.2, "date": "2014-08-01", "temperature": 20.0,
            "precipitation": 50.0, "solar_radiation": 6.0}  # fmt: skip
    assert pipe([site], size=32, num_inference_steps=1).images.shape == (1, 32, 32, 3)


def _bad_sites(data, tmp_path, **change) -> Path:
    df = pd.read_csv(data["sites"], comment="#").head(2)
    for key, value in change.items():
        if value is None:
            df = df.drop(columns=[key])
        else:
            df[key] = value
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "change, extra, message",
    [
        ({"precipitation": None}, [], "missing climate variable(s) precipitation"),
        ({"lat": 91.0}, [], "lat 91 is out of range"),
        ({"lon": -181.0}, [], "lon -181 is out of range"),
        ({}, ["--prompts", "UNKNOWN_FIELD"], "unknown template field 'altitude'"),
        ({}, ["--prompts", "EMPTY"], "the spatial prompt is empty"),
        ({"control_key": "nope"}, ["--control", "SERIES"], "control tile(s) nope"),
        ({"control_key": None}, ["--control", "SERIES"], "have no control_key"),
        ({"place": "a very long place name " * 20}, [], "the CLIP prompt is"),
        ({}, ["--size", "260"], "size 260 px is over the model's largest image side, 256 px"),
        ({"temperature": "hot"}, [], "temperature 'hot' is not a number (allowed: -90..60 °C)"),
        ({"cloud_cover": "abc"}, [], "cloud_cover 'abc' is not a number"),
        ({"lat": True}, [], "lat True is not a number"),
        ({"gsd": 1e300}, [], "gsd 1e+300 is out of range (allowed: 0.001..1000 m)"),
    ],
)
def test_bad_input_one_line_nothing_written(model, controlnet, data, tmp_path, change, extra, message):
    prompts = {
        "UNKNOWN_FIELD": "spatial: {parts: ['at {altitude} m']}\nclimate: {parts: []}\n",
        "EMPTY": "spatial: {lead: image, parts: ['{landcover}']}\nclimate: {parts: []}\n",
    }
    extra = list(extra)
    for i, arg in enumerate(extra):
        if arg in prompts:
            (tmp_path / "p.yaml").write_text(prompts[arg])
            extra[i] = str(tmp_path / "p.yaml")
        elif arg == "SERIES":
            extra[i] = str(data["series"])
            extra += ["--controlnet", str(controlnet / "controlnet")]
    out = tmp_path / "out"
    result = runner.invoke(app, ["climate", "--sites", str(_bad_sites(data, tmp_path, **change)), "--model",
                                 str(model / "pipeline"), "--steps", "1", "--out", str(out), "--manifest",
                                 str(tmp_path / "m.parquet"), *extra])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert message in result.output
    assert not out.exists() and not (tmp_path / "m.parquet").exists()


def test_prompt_ablation_reports_which_fields_move_the_image(tmp_path, monkeypatch):
    """scripts/climate_prompt_ablation.py on the embedded default at 2 steps: every field is measured, and a field
    the prompt template does not use (gsd) is reported as changing nothing."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "scripts" / "climate_prompt_ablation.py"
    spec = importlib.util.spec_from_file_location("climate_prompt_ablation", path)
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    monkeypatch.setattr(ablation, "VARIANTS", {"month": [1, 7], "gsd": [1.0, 100.0]})
    out = tmp_path / "ablation.json"
    monkeypatch.setattr(sys, "argv", ["ablation", "--out", str(out), "--steps", "2"])
    ablation.main()
    report = json.loads(out.read_text())
    assert report["n_sites"] == 12 and report["seed_noise_distance"] > 0
    assert report["fields"]["gsd"]["changes_the_image"] is False
    assert report["fields"]["gsd"]["distance_share_of_seed_noise"] == 0.0
    assert report["fields"]["month"]["changes_the_image"] is True
    assert [v["value"] for v in report["fields"]["month"]["values"]] == [1, 7]
