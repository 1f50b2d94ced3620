"""Land-cover generator at tiny size: autoencoder and pipeline round trips, train -> save -> load -> generate ->
shards, determinism across runs and batch sizes, exact resume, and bad input through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.config import build_config, load_config
from synthgen.errors import ConfigError
from synthgen.io.manifest import iter_samples, verify_manifest
from synthgen.jobs.ingest import IngestConfig, run_ingest
from synthgen.jobs.landcover import LandCoverGenerateConfig, run_landcover, tile_seed
from synthgen.models.height_prior import HeightPrior
from synthgen.models.layout_autoencoder import LayoutAutoencoder
from synthgen.pipelines.landcover import LandCoverPipeline, make_scheduler
from synthgen.training.landcover import train_landcover
from synthgen.training.landcover_config import LandCoverTrainConfig
from tests.conftest import scene_config_values

runner = CliRunner()


@pytest.fixture(scope="module")
def scene_manifest(fixtures_dir, tmp_path_factory) -> Path:
    """The scene fixture (isprs labels mapped to oem8) ingested in 32 px tiles."""
    tmp = tmp_path_factory.mktemp("scene")
    config = build_config(
        IngestConfig,
        scene_config_values(fixtures_dir, tmp),
    )
    run_ingest(config)
    return config.manifest_path


@pytest.fixture(scope="module")
def trained(scene_manifest, tmp_path_factory) -> Path:
    """A tiny run (2 autoencoder + 2 UNet steps) trained through the CLI; returns its training folder."""
    out = tmp_path_factory.mktemp("train") / "run"
    torch.manual_seed(0)
    result = runner.invoke(
        app, ["train", "landcover", "--config", "tiny", "--manifest", str(scene_manifest), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def _tiny_unet(attention: bool) -> UNet2DModel:
    down = "AttnDownBlock2D" if attention else "DownBlock2D"
    up = "AttnUpBlock2D" if attention else "UpBlock2D"
    return UNet2DModel(
        sample_size=4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", down),
        up_block_types=(up, "UpBlock2D"),
        norm_num_groups=8,
    )


def _tiny_pipeline() -> LandCoverPipeline:
    torch.manual_seed(0)
    ae = LayoutAutoencoder(num_classes=8, block_out_channels=[8, 16, 16], norm_num_groups=4)
    unet = _tiny_unet(attention=True)
    pipe = LandCoverPipeline(ae, unet, make_scheduler("dpm", DDPMScheduler().config), "oem8", HeightPrior(gsd=1.0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_autoencoder_round_trip(tmp_path):
    torch.manual_seed(0)
    ae = LayoutAutoencoder(
        num_classes=8, with_height=True, block_out_channels=[8, 16, 16], norm_num_groups=4, scaling_factor=0.5
    )
    labels = torch.randint(0, 9, (2, 16, 16))
    height = torch.rand(2, 16, 16) * 20
    height[0, 0, 0] = float("nan")
    parts = ae.loss(labels, height)
    assert set(parts) == {"loss", "ce", "kl", "height"} and torch.isfinite(parts["loss"])
    parts["loss"].backward()
    ae.save_pretrained(tmp_path)
    loaded = LayoutAutoencoder.from_pretrained(tmp_path)
    public = [k for k in ae.config if not k.startswith("_")]
    assert {k: loaded.config[k] for k in public} == {k: ae.config[k] for k in public}
    assert loaded.downsample_factor == 4
    with torch.no_grad():
        latents = ae.encode(ae.one_hot(labels), height)
        assert latents.shape == (2, 4, 4, 4)
        torch.testing.assert_close(loaded.encode(loaded.one_hot(labels), height), latents, rtol=0, atol=0)
        logits, h = loaded.decode(latents)
    assert logits.shape == (2, 8, 16, 16) and h.shape == (2, 16, 16)


def test_pipeline_round_trip_gives_identical_output(tmp_path):
    pipe = _tiny_pipeline()
    first = pipe(batch_size=2, size=16, num_inference_steps=2, generator=_generators(1, 2), gsd=1.0)
    assert first.labels.dtype == np.uint8 and first.labels.shape == (2, 16, 16)
    assert first.heights.dtype == np.float32 and set(np.unique(first.labels)) <= set(range(1, 9))
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "height_prior" / "height_prior.json").is_file()
    loaded = LandCoverPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.scheme == "oem8" and loaded.height_prior.config.gsd == 1.0
    assert type(loaded.scheduler).__name__ == "DPMSolverMultistepScheduler"
    again = loaded(batch_size=2, size=16, num_inference_steps=2, generator=_generators(1, 2), gsd=1.0)
    np.testing.assert_array_equal(first.labels, again.labels)
    np.testing.assert_array_equal(first.heights, again.heights)
    single = loaded(batch_size=1, size=16, num_inference_steps=2, generator=_generators(2), gsd=1.0)
    np.testing.assert_array_equal(single.labels[0], first.labels[1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 18}, r"size 18 px is not a positive multiple of 8 \(the layout autoencoder's factor 4 x the UNet's"),
        ({"size": 12}, r"size 12 px is not a positive multiple of 8 .* downsampling 2\)"),
        ({"num_inference_steps": 0}, "num_inference_steps 0 must be >= 1"),
        ({"batch_size": 0}, "batch_size 0 must be >= 1"),
    ],
)
def test_pipeline_check_inputs(kwargs, message):
    with pytest.raises(Exception, match=message):
        _tiny_pipeline()(**{"batch_size": 1, "size": 16, "num_inference_steps": 1, **kwargs})


def test_train_save_load_generate_into_shards(trained, tmp_path):
    assert sorted(p.name for p in trained.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["step"] == 4 and len(metrics["loss_ae"]) == 2 and len(metrics["loss_unet"]) == 2
    assert 0 <= metrics["val_autoencoder"]["pixel_accuracy"] <= 1 and 0 <= metrics["val_autoencoder"]["miou"] <= 1
    assert (trained / "previews" / "step-0000004.png").is_file()
    config = LandCoverGenerateConfig(
        n=5,
        model=str(trained / "pipeline"),
        size=32,
        steps=2,
        batch_size=2,
        tiles_per_shard=2,
        out=str(tmp_path / "gen"),
        manifest=str(tmp_path / "gen.parquet"),
    )
    summary = run_landcover(config)
    assert summary["tiles"] == 5 and summary["shards_written"] == 3
    df = pd.read_parquet(tmp_path / "gen.parquet")
    assert list(df["seed"]) == [tile_seed(0, i) for i in range(5)]
    assert set(df["generator"]) == {"landcover"} and df["synthetic_georef"].all()
    assert df["weights_hash"].str.len().min() == 64 and (df["height_max"] >= 0).all()
    sample = next(iter_samples(tmp_path / "gen.parquet"))
    assert sample["label"].shape == (32, 32) and sample["height"].dtype == np.float32
    assert verify_manifest(tmp_path / "gen.parquet")["tiles"] == 5
    assert run_landcover(config)["shards_skipped"] == 3


def test_trained_pipeline_does_not_clip_latents(trained):
    # Unit-std latents clipped to [-1, 1] at each DDIM step decode to one dominant class.
    pipe = LandCoverPipeline.from_pretrained(trained / "pipeline")
    assert pipe.scheduler.config.clip_sample is False


def test_same_seed_same_bytes_whatever_the_batch(trained, tmp_path):
    def sha(name: str, batch: int, seed: int = 0) -> list:
        run_landcover(
            LandCoverGenerateConfig(
                n=3,
                model=str(trained / "pipeline"),
                size=32,
                steps=2,
                seed=seed,
                batch_size=batch,
                out=str(tmp_path / name),
                manifest=str(tmp_path / f"{name}.parquet"),
            )
        )
        return [list(h) for h in pd.read_parquet(tmp_path / f"{name}.parquet")["sha256"]]

    first = sha("a", 2)
    assert sha("b", 2) == first
    assert sha("c", 1) == first
    assert sha("d", 2, seed=1) != first


def test_generation_killed_with_sigkill_then_resumed_equals_clean_run(trained, tmp_path):
    model = str(trained / "pipeline")
    args = "--n 12 --size 32 --steps 2 --batch-size 1 --tiles-per-shard 1".split() + ["--model", model]
    killed = tmp_path / "killed"
    kills = 0
    for wait_for in (2, 6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "synthgen", "landcover", *args, "--out", str(killed)]
            + ["--manifest", str(tmp_path / "killed.parquet")],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while proc.poll() is None and len(list(killed.glob("*.record.json"))) < wait_for:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert not (tmp_path / "killed.parquet").exists()
    assert kills == 2, "generation finished before it could be killed"
    common = {"n": 12, "model": model, "size": 32, "steps": 2, "batch_size": 1, "tiles_per_shard": 1}
    resumed = run_landcover(
        LandCoverGenerateConfig(**common, out=str(killed), manifest=str(tmp_path / "killed.parquet"))
    )
    assert resumed["shards_skipped"] >= 6 and resumed["tiles"] == 12
    run_landcover(LandCoverGenerateConfig(**common, out=str(tmp_path / "clean"), manifest=str(tmp_path / "c.parquet")))
    killed_df, clean_df = pd.read_parquet(tmp_path / "killed.parquet"), pd.read_parquet(tmp_path / "c.parquet")
    assert killed_df["key"].is_unique and list(killed_df["key"]) == list(clean_df["key"])
    assert [list(h) for h in killed_df["sha256"]] == [list(h) for h in clean_df["sha256"]]
    assert verify_manifest(tmp_path / "killed.parquet")["tiles"] == 12
    assert not list(killed.glob("*.tmp"))


def test_embedded_default_is_used_without_model(tmp_path):
    summary = run_landcover(
        LandCoverGenerateConfig(n=2, steps=2, out=str(tmp_path / "d"), manifest=str(tmp_path / "d.parquet"))
    )
    assert summary["model"].endswith("weights/landcover") and summary["tiles"] == 2
    sample = next(iter_samples(tmp_path / "d.parquet"))
    assert sample["label"].shape == (128, 128) and set(np.unique(sample["label"])) <= set(range(1, 9))
    assert pd.read_parquet(tmp_path / "d.parquet")["model_id"].tolist() == ["synthgen/weights/landcover"] * 2


def test_resume_continues_at_the_right_step(scene_manifest, trained, tmp_path):
    values = {"manifest": str(scene_manifest), "out": str(tmp_path / "run"), "preview_n": 0}
    torch.manual_seed(0)
    stopped = train_landcover(load_config(LandCoverTrainConfig, "tiny", "train-landcover", {**values, "max_steps": 3}))
    assert stopped["step"] == 3 and (tmp_path / "run" / "checkpoint-3").is_dir()
    steps = []
    resumed = train_landcover(
        load_config(LandCoverTrainConfig, "tiny", "train-landcover", {**values, "resume": "latest"}),
        progress=steps.append,
    )
    assert resumed["step"] == 4 and steps == [3, 1]
    full = json.loads((trained / "metrics.json").read_text())
    assert [s for s, _ in resumed["loss_ae"] + resumed["loss_unet"]] == [1, 2, 3, 4]
    np.testing.assert_allclose(
        [v for _, v in resumed["loss_ae"] + resumed["loss_unet"]],
        [v for _, v in full["loss_ae"] + full["loss_unet"]],
        rtol=1e-5,
    )


def test_resume_with_another_architecture_is_refused(scene_manifest, tmp_path):
    values = {"manifest": str(scene_manifest), "out": str(tmp_path / "run"), "preview_n": 0, "max_steps": 1}
    train_landcover(load_config(LandCoverTrainConfig, "tiny", "train-landcover", values))
    changed = {**values, "resume": "latest", "latent_channels": 2}
    with pytest.raises(ConfigError, match="other values of latent_channels"):
        train_landcover(load_config(LandCoverTrainConfig, "tiny", "train-landcover", changed))


def _error_line(result) -> str:
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_cli_bad_inputs_fail_in_one_line_and_write_nothing(trained, tmp_path):
    model = str(trained / "pipeline")

    def gen(*args: str):
        return runner.invoke(
            app, ["landcover", "--out", str(tmp_path / "out"), "--manifest", str(tmp_path / "m.parquet"), *args]
        )

    assert "--n 0 must be >= 1" in _error_line(gen("--n", "0", "--model", model))
    assert "--n -3 must be >= 1" in _error_line(gen("--n", "-3", "--model", model))
    assert "size 30 px" in _error_line(gen("--n", "2", "--model", model, "--size", "30"))
    assert "not a landcover model folder" in _error_line(gen("--n", "2", "--model", str(tmp_path / "missing")))
    assert "generates 'oem8' labels" in _error_line(gen("--n", "2", "--model", model, "--scheme", "isprs"))
    assert "unknown" in _error_line(gen("--n", "2", "--model", model, "--scheme", "nosuch")).lower()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(model, corrupt)
    (corrupt / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    assert str(corrupt) in _error_line(gen("--n", "2", "--model", str(corrupt)))
    (corrupt / "model_index.json").write_text("{not json")
    assert "model_index.json" in _error_line(gen("--n", "2", "--model", str(corrupt)))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(
        app,
        [
            "landcover",
            "--n",
            "2",
            "--model",
            model,
            "--size",
            "32",
            "--steps",
            "1",
            "--out",
            str(blocker / "shards"),
            "--manifest",
            str(tmp_path / "m.parquet"),
        ],
    )
    assert "a-file" in _error_line(result)
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.parquet").exists()
    bad_train = runner.invoke(app, ["train", "landcover", "--config", "tiny", "--max-steps", "0"])
    assert "max_steps" in _error_line(bad_train)


def test_height_channel_model_gives_heights_from_the_autoencoder():
    torch.manual_seed(0)
    ae = LayoutAutoencoder(num_classes=8, with_height=True, block_out_channels=[8, 16, 16], norm_num_groups=4)
    unet = _tiny_unet(attention=False)
    pipe = LandCoverPipeline(ae, unet, make_scheduler("ddim", DDPMScheduler().config))
    pipe.set_progress_bar_config(disable=True)
    both = pipe(batch_size=2, size=16, num_inference_steps=2, generator=_generators(5, 6))
    one = pipe(batch_size=1, size=16, num_inference_steps=2, generator=_generators(6))
    assert np.isfinite(both.heights).all() and (both.heights >= 0).all()
    np.testing.assert_array_equal(both.heights[1], one.heights[0])


def test_longer_training_starts_from_a_pipeline_and_keeps_its_autoencoder(scene_manifest, trained, tmp_path):
    start = trained / "pipeline"
    values = {"manifest": str(scene_manifest), "out": str(tmp_path / "run"), "preview_n": 0}
    values |= {"init_pipeline": str(start), "ae_steps": 0, "unet_steps": 2}
    metrics = train_landcover(load_config(LandCoverTrainConfig, "tiny", "train-landcover", values))
    before, after = (
        LandCoverPipeline.from_pretrained(start),
        LandCoverPipeline.from_pretrained(tmp_path / "run" / "pipeline"),
    )
    assert (
        metrics["scaling_factor"] == before.autoencoder.config.scaling_factor == after.autoencoder.config.scaling_factor
    )
    for a, b in zip(before.autoencoder.state_dict().values(), after.autoencoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the latents the UNet knows stay the same
    assert any(
        not torch.equal(a, b)
        for a, b in zip(before.unet.state_dict().values(), after.unet.state_dict().values(), strict=True)
    )
    assert [s for s, _ in metrics["loss_unet"]] == [1, 2] and metrics["loss_ae"] == []
    wider = {**values, "out": str(tmp_path / "wider"), "unet_block_out_channels": [32, 32]}
    with pytest.raises(ConfigError, match="the unet of .* is not this config's architecture"):
        train_landcover(load_config(LandCoverTrainConfig, "tiny", "train-landcover", wider))
    with pytest.raises(ConfigError, match="is not a land-cover pipeline folder"):
        train_landcover(
            load_config(LandCoverTrainConfig, "tiny", "train-landcover", {**values, "init_pipeline": str(tmp_path)})
        )


def test_v_prediction_with_min_snr_trains_and_samples_as_v(scene_manifest, tmp_path):
    values = {"manifest": str(scene_manifest), "out": str(tmp_path / "run"), "preview_n": 0}
    values |= {"prediction_type": "v_prediction", "snr_gamma": 5.0}
    train_landcover(load_config(LandCoverTrainConfig, "tiny", "train-landcover", values))
    pipe = LandCoverPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    labels = pipe(batch_size=2, size=32, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).labels
    assert labels.shape == (2, 32, 32) and labels.min() >= 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prediction_type": "sample"}, "config 'prediction_type': 'sample' is not one of epsilon, v_prediction"),
        ({"snr_gamma": 0}, "snr_gamma.* must be > 0"),
    ],
)
def test_bad_objective_settings_are_one_line(change, message):
    with pytest.raises(ConfigError, match=message):
        load_config(LandCoverTrainConfig, "tiny", "train-landcover", change)
