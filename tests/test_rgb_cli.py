"""`synthgen rgb` and `synthgen evaluate rgb` at tiny size: a tiny SPADE trained 2 steps renders a landcover manifest
and an ingested one into shards with lineage; determinism; resume after SIGKILL; the per-tile check of the job
engine; every bad input; and the RGB metrics on a hand-made case."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from affine import Affine
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.config import build_config
from synthgen.engine.job import ShardJob, TileError, run_job, tile_seed
from synthgen.engine.weights import weights_hash
from synthgen.errors import ConfigError
from synthgen.evaluation.rgb import FID_SKIPPED, RGBFidelity
from synthgen.io.manifest import iter_samples, read_manifest, verify_manifest
from synthgen.io.shards import RECORD_SUFFIX, RunInfo
from synthgen.jobs.ingest import IngestConfig, run_ingest
from synthgen.jobs.landcover import LandCoverGenerateConfig, run_landcover
from synthgen.jobs.rgb import METHODS, RGBGenerateConfig, run_rgb
from synthgen.schema import load_scheme
from tests.conftest import save_tiny_controlnet_pipeline, save_tiny_seg_model, scene_config_values
from tests.test_landcover import _tiny_pipeline

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _ingest(fixtures_dir: Path, tmp: Path, **values) -> Path:
    config = build_config(IngestConfig, {**scene_config_values(fixtures_dir, tmp), **values})
    run_ingest(config)
    return config.manifest_path


@pytest.fixture(scope="module")
def manifests(fixtures_dir, tmp_path_factory) -> dict[str, Path]:
    """Cond manifests: the scene fixture (rgb + oem8 labels, 32 px), the same with isprs labels, rgb only, and 6
    landcover tiles (label + height, 16 px) from the tiny land-cover pipeline of tests/test_landcover.py."""
    tmp = tmp_path_factory.mktemp("cond")
    lc_model = tmp / "lc_model"
    _tiny_pipeline().save_pretrained(lc_model)
    run_landcover(
        LandCoverGenerateConfig(
            n=6, model=str(lc_model), size=16, steps=2, tiles_per_shard=4, name="lc", out=str(tmp / "lc"),
            manifest=str(tmp / "lc.parquet"),
        )
    )  # fmt: skip
    return {
        "scene": _ingest(fixtures_dir, tmp),
        "isprs": _ingest(fixtures_dir, tmp, name="isprs", target_scheme="isprs"),
        "rgbonly": _ingest(fixtures_dir, tmp, name="rgbonly", label=None),
        "landcover": tmp / "lc.parquet",
    }


@pytest.fixture(scope="module")
def spade_model(manifests, tmp_path_factory) -> Path:
    """A tiny SPADE pipeline folder trained 2 steps through the CLI on the scene tiles."""
    out = tmp_path_factory.mktemp("spade") / "run"
    torch.manual_seed(0)
    result = runner.invoke(
        app,
        ["train", "spade", "--config", "tiny", "--manifest", str(manifests["scene"]), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    return out / "pipeline"


def _rgb(cond: Path, model: Path, out: Path, *args: str):
    return runner.invoke(
        app,
        ["rgb", "--cond", str(cond), "--model", str(model), "--out", str(out), "--manifest", f"{out}.parquet", *args],
    )


def test_rgb_on_a_landcover_manifest_keeps_labels_heights_georef_and_lineage(manifests, spade_model, tmp_path):
    result = _rgb(manifests["landcover"], spade_model, tmp_path / "rgb", "--batch-size", "4", "--tiles-per-shard", "4")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["tiles"] == 6 and summary["shards_written"] == 2 and summary["method"] == "spade"
    df, parents = read_manifest(tmp_path / "rgb.parquet"), read_manifest(manifests["landcover"])
    assert [list(p) for p in df["parent_keys"]] == [[k] for k in parents["key"]]
    assert list(df["key"]) == [f"rgb_{i:07d}" for i in range(6)] and set(df["generator"]) == {"rgb-spade"}
    assert list(df["seed"]) == [tile_seed(0, i) for i in range(6)] and set(df["prompt"]) == {""}
    assert list(df["crs"]) == list(parents["crs"]) and df["synthetic_georef"].all()
    assert [list(t) for t in df["transform"]] == [list(t) for t in parents["transform"]]
    for kind in ("label", "height"):  # the parent's rasters, byte for byte (same georeference, same encoding)
        ours = [
            dict(zip(m, h, strict=True))[f"{k}.{kind}.tif"]
            for k, m, h in zip(df.key, df.members, df.sha256, strict=True)
        ]
        theirs = [
            dict(zip(m, h, strict=True))[f"{k}.{kind}.tif"]
            for k, m, h in zip(parents.key, parents.members, parents.sha256, strict=True)
        ]  # noqa: E501
        assert ours == theirs
    sample = next(iter_samples(tmp_path / "rgb.parquet"))
    assert sample["rgb"].shape == (16, 16, 3) and sample["rgb"].dtype == np.uint8
    assert json.loads(df["meta"][0])["cond_manifest"] == str(manifests["landcover"])
    assert verify_manifest(tmp_path / "rgb.parquet")["tiles"] == 6


def test_rgb_on_ingested_tiles_cut_into_windows(manifests, spade_model, tmp_path):
    result = _rgb(manifests["scene"], spade_model, tmp_path / "w", "--size", "16", "--tiles-per-shard", "40")
    assert result.exit_code == 0, result.output
    df, parents = read_manifest(tmp_path / "w.parquet"), read_manifest(manifests["scene"])
    assert len(df) == 4 * len(parents) and (df["width_px"] == 16).all()
    assert list(df["split"][:4]) == [parents["split"][0]] * 4 and not df["synthetic_georef"].any()
    x0, y0 = parents["transform"][0][2], parents["transform"][0][5]
    gsd = parents["transform"][0][0]
    assert [(t[2], t[5]) for t in df["transform"][:4]] == [
        (x0, y0), (x0 + 16 * gsd, y0), (x0, y0 - 16 * gsd), (x0 + 16 * gsd, y0 - 16 * gsd)
    ]  # fmt: skip
    assert json.loads(df["meta"][3])["parent_window"] == [16, 16, 16, 16]


def test_same_seed_same_bytes_whatever_the_batch_size(manifests, spade_model, tmp_path):
    def run(name: str, *args: str) -> pd.DataFrame:
        result = _rgb(manifests["landcover"], spade_model, tmp_path / name, *args)
        assert result.exit_code == 0, result.output
        return read_manifest(tmp_path / f"{name}.parquet")

    first = run("a", "--batch-size", "3")
    assert [list(h) for h in run("b", "--batch-size", "3")["sha256"]] == [list(h) for h in first["sha256"]]
    assert [h[0] for h in run("c", "--batch-size", "3", "--seed", "1")["sha256"]] != [h[0] for h in first["sha256"]]
    assert [list(h) for h in run("d", "--batch-size", "1")["sha256"]] == [list(h) for h in first["sha256"]]


def test_rgb_killed_with_sigkill_then_resumed_equals_a_clean_run(manifests, spade_model, tmp_path):
    values = {
        "cond": str(manifests["scene"]),
        "model": str(spade_model),
        "batch_size": 2,
        "tiles_per_shard": 1,
    }
    args = [f"--{k.replace('_', '-')}={v}" for k, v in values.items()]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "synthgen", "rgb", *args, f"--out={killed}", f"--manifest={killed}.parquet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    while proc.poll() is None and len(list(killed.glob(f"*{RECORD_SUFFIX}"))) < 3:
        time.sleep(0.002)
    assert proc.poll() is None, "rgb finished before it could be killed: the cond manifest is too small"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed.parquet").exists()
    resumed = run_rgb(build_config(RGBGenerateConfig, {**values, "out": str(killed), "manifest": f"{killed}.parquet"}))
    assert resumed["shards_skipped"] >= 3 and resumed["tiles"] == len(read_manifest(manifests["scene"]))
    clean = tmp_path / "clean"
    run_rgb(build_config(RGBGenerateConfig, {**values, "out": str(clean), "manifest": f"{clean}.parquet"}))
    a, b = read_manifest(f"{killed}.parquet"), read_manifest(f"{clean}.parquet")
    assert list(a["key"]) == list(b["key"]) and [list(h) for h in a["sha256"]] == [list(h) for h in b["sha256"]]
    assert (killed / "rgb-00000.tar").read_bytes() == (clean / "rgb-00000.tar").read_bytes()
    assert not list(killed.glob("*.tmp"))


@pytest.fixture(scope="module")
def controlnet_model(tmp_path_factory) -> Path:
    """A tiny RGBControlNetPipeline (random weights, built from configs after torch.manual_seed(0)), saved."""
    return save_tiny_controlnet_pipeline(tmp_path_factory.mktemp("controlnet") / "pipeline")


def test_rgb_by_controlnet_records_prompts_and_is_batch_independent(manifests, controlnet_model, tmp_path):
    from synthgen.prompts import composition_prompt

    def run(name: str, batch: str) -> pd.DataFrame:
        args = ["--method", "controlnet", "--steps", "2", "--guidance", "3", "--batch-size", batch]
        result = _rgb(manifests["landcover"], controlnet_model, tmp_path / name, *args)
        assert result.exit_code == 0, result.output
        return read_manifest(tmp_path / f"{name}.parquet")

    df = run("cn", "4")
    assert set(df["generator"]) == {"rgb-controlnet"} and len(df) == 6
    scheme = load_scheme("oem8")
    samples = list(iter_samples(tmp_path / "cn.parquet"))
    assert list(df["prompt"]) == [composition_prompt(s["label"], scheme) for s in samples]
    assert df["prompt"][0].startswith("aerial image; ")
    assert json.loads(df["meta"][0])["steps"] == 2 and json.loads(df["meta"][0])["guidance"] == 3.0
    assert [list(h) for h in run("cn1", "1")["sha256"]] == [list(h) for h in df["sha256"]]


def _error_line(result) -> str:
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize(
    "cond, args, message",
    [
        ("rgbonly", [], "has no label raster"),
        ("isprs", [], "labels are in scheme(s) isprs, the model was trained on 'oem8'"),
        ("scene", ["--size", "12"], "--size 12 is not a positive multiple of 8"),
        ("scene", ["--size", "24"], "--size 24 does not divide the cond tiles' 32 px"),
        ("scene", ["--steps", "0"], "--steps 0 is out of range (allowed: 1..1000)"),
        ("scene", ["--steps", "5000"], "--steps 5000 is out of range"),
        ("scene", ["--guidance", "-1"], "--guidance -1.0 is out of range (allowed: 0..50)"),
        ("scene", ["--guidance", "nan"], "--guidance nan is out of range"),
        ("scene", ["--method", "gan"], "--method 'gan' is unknown (allowed: controlnet, spade)"),
        ("scene", ["--batch-size", "0"], "--batch-size 0 must be >= 1"),
        ("scene", ["--conditioning-scale", "0"], "--conditioning-scale 0.0 is out of range (allowed: > 0 and <= 20)"),
        ("scene", ["--conditioning-scale", "inf"], "--conditioning-scale inf is out of range"),
    ],
)
def test_rgb_bad_input_fails_in_one_line_and_writes_nothing(manifests, spade_model, tmp_path, cond, args, message):
    assert message in _error_line(_rgb(manifests[cond], spade_model, tmp_path / "out", *args))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.parquet").exists()


def test_rgb_missing_model_missing_cond_and_unwritable_out(manifests, spade_model, tmp_path):
    missing = tmp_path / "no-such-model"
    assert f"--model {missing}: model folder not found" in _error_line(
        _rgb(manifests["scene"], missing, tmp_path / "o")
    )
    assert "manifest not found" in _error_line(_rgb(tmp_path / "none.parquet", spade_model, tmp_path / "o"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "a-file" in _error_line(_rgb(manifests["scene"], spade_model, blocker / "shards"))
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("*.parquet"))
    if not (METHODS["spade"].default_weights / "model_index.json").is_file():
        result = runner.invoke(
            app,
            [
                "rgb",
                "--cond",
                str(manifests["scene"]),
                "--out",
                str(tmp_path / "o"),
                "--manifest",
                str(tmp_path / "o.parquet"),
            ],
        )
        assert "run `make weights-rgb`" in _error_line(result)


def _job(tmp_path: Path, n: int = 2) -> ShardJob:
    run = RunInfo(generator="test", scheme="oem8", config_hash="c")
    return ShardJob("t", n, 1, tmp_path / "out", tmp_path / "m.parquet", run, load_scheme("oem8"), generated=("rgb",))


def _tile(key: str, rgb: np.ndarray) -> dict:
    return {"key": key, "rgb": rgb, "crs": "EPSG:3857", "transform": Affine(1, 0, 0, 0, -1, 0), "meta": {}}


def test_job_refuses_a_nan_tile_and_flags_a_constant_one(tmp_path):
    grey = np.full((8, 8, 3), 0.5, np.float32)
    noisy = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    summary = run_job(_job(tmp_path), lambda task: [[_tile(f"t{task.indices[0]}", [grey, noisy][task.indices[0]])]], {})
    df = read_manifest(tmp_path / "m.parquet")
    assert summary["tiles"] == 2 and [list(f) for f in df["quality_flags"]] == [["rgb_constant"], []]
    broken = noisy.copy()
    broken[2, 3, 1] = np.nan
    with pytest.raises(TileError, match="tile 't1': the generated rgb raster holds NaN in 1 of 192 values"):
        run_job(
            _job(tmp_path / "nan"), lambda task: [[_tile(f"t{task.indices[0]}", [noisy, broken][task.indices[0]])]], {}
        )  # noqa: E501
    assert [p.name for p in sorted((tmp_path / "nan" / "out").iterdir())] == ["t-00000.record.json", "t-00000.tar"]
    assert not (tmp_path / "nan" / "m.parquet").exists()


def test_rgb_metrics_on_a_hand_made_case():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array([[1] * 8 + [5] * 8]), 16, axis=0)[None].repeat(2, 0).astype(np.uint8)
    real = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    same = RGBFidelity(load_scheme("oem8"))
    same.update(real, real.copy(), labels)
    report = same.report()
    assert report["tiles"] == 2 and report["ssim"]["mean"] == pytest.approx(1.0)
    assert report["psnr_db"]["identical_tiles"] == 2 and report["psnr_db"]["mean"] == 100.0
    assert report["fid"] == FID_SKIPPED and set(report["per_class"]) == {"bareland", "tree"}
    assert report["per_class"]["tree"]["rgb_mean_abs_gap"] == 0 and report["per_class"]["tree"]["gradient_ratio"] == 1
    other = RGBFidelity(load_scheme("oem8"))
    other.update(np.clip(real.astype(int) + 16, 0, 255).astype(np.uint8), real, labels)
    worse = other.report()
    assert worse["ssim"]["mean"] < 1 and 20 < worse["psnr_db"]["mean"] < 30
    assert worse["per_class"]["bareland"]["rgb_mean_abs_gap"] > 10


def test_evaluate_rgb_cli_writes_json(manifests, spade_model, tmp_path):
    out = tmp_path / "report.json"
    args = ["evaluate", "rgb", "--real", str(manifests["scene"]), "--model", str(spade_model), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    val = read_manifest(manifests["scene"]).query("split == 'val'")
    assert report["tiles"] == len(val) and report["split"] == "val" and report["method"] == "spade"
    assert report["fid"] == report["kid"] == FID_SKIPPED and "skipped: no local Inception weights" in result.output
    assert -1 <= report["ssim"]["mean"] <= 1 and report["per_class"]
    bad = runner.invoke(app, [*args[:4], "--split", "test", "--model", str(spade_model)])
    assert "no tiles in split 'test'" in _error_line(bad)


def test_fid_needs_an_existing_weights_file(tmp_path):
    with pytest.raises(ConfigError, match="--inception-weights .*missing.pth: file not found"):
        RGBFidelity(load_scheme("oem8"), tmp_path / "missing.pth")


@pytest.mark.slow
def test_fid_and_kid_with_local_inception_weights(tmp_path):
    """Random Inception weights in torch-fidelity's layout stand in for the real file (no network here)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _RandomInception(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    torch.save({}, tmp_path / "empty.pth")
    torch.manual_seed(0)
    model = _RandomInception("inception-v3-compat", ["2048"], feature_extractor_weights_path=tmp_path / "empty.pth")
    torch.save(model.state_dict(), tmp_path / "inception.pth")
    fidelity = RGBFidelity(load_scheme("oem8"), tmp_path / "inception.pth")
    real = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    fidelity.update(real, real.copy(), np.ones((4, 16, 16), np.uint8))
    report = fidelity.report()
    assert all(isinstance(report[k], float) for k in ("fid", "kid_mean", "kid_std"))
    assert abs(report["fid"]) < 1e-6 and abs(report["kid_mean"]) < 1e-6


@pytest.mark.parametrize("method", ["spade", "controlnet"])
def test_embedded_default_renders_and_is_recorded_package_relative(manifests, tmp_path, method):
    """Without --model the method's folder in synthgen/weights/ is used, recorded as synthgen/weights/<name> so the
    tile bytes do not depend on where synthgen is installed."""
    out = tmp_path / "rgb"
    result = runner.invoke(
        app,
        ["rgb", "--cond", str(manifests["landcover"]), "--method", method, "--steps", "2", "--out", str(out),
         "--manifest", f"{out}.parquet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    df = read_manifest(tmp_path / "rgb.parquet")
    assert len(df) == 6 and set(df["model_id"]) == {f"synthgen/weights/rgb_{method}"}
    assert set(df["weights_hash"]) == {weights_hash(METHODS[method].default_weights)}


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory) -> Path:
    """A tiny oem8 UNet of synthgen validate (random init after torch.manual_seed(0)), saved."""
    return save_tiny_seg_model(tmp_path_factory.mktemp("seg") / "model")


def test_label_recovery_scores_real_and_rendered_images_with_a_segmentation_model(
    manifests, spade_model, seg_model, tmp_path
):
    from synthgen.evaluation.rgb import iter_real_batches
    from synthgen.validation.label_recovery import LabelRecovery

    same = LabelRecovery(seg_model)  # an image "rendered" as the real one itself is recovered exactly as well
    for batch in iter_real_batches(manifests["scene"], "val", 4, None):
        same.update(batch["rgb"], batch["rgb"], batch["labels"])
    assert same.report()["miou_ratio"] == 1.0 and same.report()["real"] == same.report()["rendered"]

    out = tmp_path / "report.json"
    args = ["evaluate", "rgb", "--real", str(manifests["scene"]), "--model", str(spade_model), "--out", str(out)]
    result = runner.invoke(app, [*args, "--seg-model", str(seg_model)])
    assert result.exit_code == 0, result.output
    recovery = json.loads(out.read_text())["label_recovery"]
    assert 0 <= recovery["real"]["miou"] <= 1 and 0 <= recovery["rendered"]["miou"] <= 1
    assert recovery["miou_ratio"] == pytest.approx(recovery["rendered"]["miou"] / recovery["real"]["miou"], abs=1e-4)
    assert "label recovery (" in result.output
    bad = runner.invoke(app, [*args, "--seg-model", str(tmp_path)])
    assert "not a model folder of synthgen validate" in _error_line(bad)


def test_filter_scores_every_tile_and_keeps_those_above_the_threshold(manifests, spade_model, seg_model, tmp_path):
    import torch

    from synthgen.io.manifest import verify_manifest
    from synthgen.validation.label_filter import tile_agreement

    truth = torch.tensor([[[0, 0], [1, 1]], [[0, 0], [-1, -1]]])
    pred = torch.tensor([[[0, 0], [1, 0]], [[0, 0], [1, 1]]])
    # tile 0: class 0 IoU 2/3, class 1 IoU 1/2; tile 1: only labelled pixels count, all right
    np.testing.assert_allclose(tile_agreement(pred, truth, 2), [(2 / 3 + 1 / 2) / 2, 1.0])

    assert _rgb(manifests["scene"], spade_model, tmp_path / "gen").exit_code == 0
    generated = tmp_path / "gen.parquet"
    out, scored = tmp_path / "kept" / "f.parquet", tmp_path / "s.parquet"
    args = ["filter", "--manifest", str(generated), "--seg-model", str(seg_model), "--out", str(out)]
    result = runner.invoke(app, [*args, "--scored", str(scored), "--threshold", "0.2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    all_rows = read_manifest(scored)
    scores = [json.loads(m)["label_agreement"] for m in all_rows["meta"]]
    assert len(all_rows) == summary["tiles"] == len(read_manifest(generated)) and all(0 <= s <= 1 for s in scores)
    kept = read_manifest(out)
    assert list(kept["key"]) == [k for k, s in zip(all_rows["key"], scores, strict=True) if s >= 0.2]
    assert summary["kept"] == len(kept) and verify_manifest(scored)["tiles"] == len(all_rows)  # shards re-based
    assert all(json.loads(m)["label_filter_model"] == str(seg_model) for m in all_rows["meta"])
    bad = runner.invoke(app, [*args[:3], "--seg-model", str(seg_model), "--threshold", "1.5"])
    assert "--threshold 1.5 must be in [0, 1]" in _error_line(bad)
    same = runner.invoke(app, [*args[:3], "--seg-model", str(seg_model), "--out", str(generated)])
    assert "would overwrite the input manifest" in _error_line(same)


def test_filter_defaults_to_the_embedded_model_and_names_its_make_target_when_absent(
    manifests, spade_model, tmp_path, monkeypatch
):
    from synthgen.validation import label_filter

    assert _rgb(manifests["scene"], spade_model, tmp_path / "gen").exit_code == 0
    args = ["filter", "--manifest", str(tmp_path / "gen.parquet"), "--out", str(tmp_path / "f.parquet")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["model"] == str(label_filter.DEFAULT_FILTER_MODEL) and summary["threshold"] == 0.3
    assert summary["tiles"] == len(read_manifest(tmp_path / "gen.parquet"))
    monkeypatch.setattr(label_filter, "DEFAULT_FILTER_MODEL", tmp_path / "not-trained")
    line = _error_line(runner.invoke(app, args))
    assert "not trained yet: run `make weights-label-filter`, or give --seg-model" in line
    assert "--seg-model /no/model: model folder not found" in _error_line(
        runner.invoke(app, [*args, "--seg-model", "/no/model"])
    )


def test_filter_scores_only_the_split_it_is_given(manifests, seg_model, tmp_path):
    scene = manifests["scene"]
    val = read_manifest(scene).query("split == 'val'")
    args = ["filter", "--manifest", str(scene), "--seg-model", str(seg_model), "--split", "val", "--threshold", "0"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "f.parquet"), "--scored", str(tmp_path / "s.parquet")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["tiles"] == len(val) > 0
    assert sorted(read_manifest(tmp_path / "s.parquet")["key"]) == sorted(val["key"])
    assert "no tiles in split 'test'" in _error_line(runner.invoke(app, [*args[:-4], "--split", "test"]))
