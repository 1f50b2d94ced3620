"""SPADE at tiny size: generator/discriminator and pipeline round trips, per-tile noise, check_inputs, the VGG loss
from a local file, and train 2 steps -> checkpoints, previews, metrics, pipeline -> exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.config import build_config, load_config
from synthgen.errors import ConfigError
from synthgen.jobs.ingest import IngestConfig, run_ingest
from synthgen.models.spade import (
    MultiScalePatchDiscriminator,
    SpadeGenerator,
    VGGLoss,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
)
from synthgen.pipelines.rgb_spade import RGBSpadePipeline
from synthgen.training.spade import train_spade
from synthgen.training.spade_config import SpadeTrainConfig
from tests.conftest import scene_config_values

runner = CliRunner()


@pytest.fixture(scope="module")
def scene_manifest(fixtures_dir, tmp_path_factory):
    """The scene fixture (rgb + isprs labels mapped to oem8) ingested in 32 px tiles."""
    config = build_config(IngestConfig, scene_config_values(fixtures_dir, tmp_path_factory.mktemp("scene")))
    run_ingest(config)
    return config.manifest_path


@pytest.fixture(scope="module")
def trained(scene_manifest, tmp_path_factory):
    """A tiny SPADE run (2 steps on 16 px crops) trained through the CLI; returns its training folder."""
    out = tmp_path_factory.mktemp("spade") / "run"
    torch.manual_seed(0)
    result = runner.invoke(
        app, ["train", "spade", "--config", "tiny", "--manifest", str(scene_manifest), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def _tiny_generator(**kwargs) -> SpadeGenerator:
    torch.manual_seed(0)
    return SpadeGenerator(num_classes=8, z_channels=4, block_out_channels=[16, 8, 8], spade_hidden=8, **kwargs)


def _generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def _one_hot(labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, 9)[..., 1:].permute(0, 3, 1, 2).float()


def test_generator_and_discriminator_round_trip(tmp_path):
    generator = _tiny_generator(with_height=True).eval()
    disc = MultiScalePatchDiscriminator(num_classes=8, with_height=True, channels=8, layers=3).eval()
    seg = torch.cat([_one_hot(torch.randint(0, 9, (2, 16, 16))), torch.rand(2, 1, 16, 16)], 1)
    noise = torch.randn(2, *generator.noise_shape(16, 16))
    assert generator.downsample_factor == 4 and noise.shape == (2, 4, 4, 4)
    with torch.no_grad():
        image = generator(seg, noise)
        feats = disc(seg, image)
    assert image.shape == (2, 3, 16, 16) and image.abs().max() <= 1
    assert len(feats) == 2 and all(f[-1].shape[1] == 1 for f in feats)
    generator.save_pretrained(tmp_path / "g")
    disc.save_pretrained(tmp_path / "d")
    g2 = SpadeGenerator.from_pretrained(tmp_path / "g").eval()
    d2 = MultiScalePatchDiscriminator.from_pretrained(tmp_path / "d").eval()
    assert g2.config.block_out_channels == [16, 8, 8] and g2.config.with_height
    with torch.no_grad():
        torch.testing.assert_close(g2(seg, noise), image, rtol=0, atol=0)
        torch.testing.assert_close(d2(seg, image)[1][-1], feats[1][-1], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="divisible by 4"):
        generator(seg[:, :, :14, :14])


def test_losses_are_finite_and_reach_both_networks():
    generator = _tiny_generator()
    disc = MultiScalePatchDiscriminator(num_classes=8, channels=8, layers=2)
    seg = _one_hot(torch.randint(0, 9, (2, 16, 16)))
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    fake = generator(seg, torch.randn(2, *generator.noise_shape(16, 16)))
    pred_real, pred_fake = disc(seg, real), disc(seg, fake)
    loss_d = hinge_d_loss(pred_real, disc(seg, fake.detach()))
    loss_g = hinge_g_loss(pred_fake) + 10 * feature_matching_loss(pred_real, pred_fake)
    assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    loss_g.backward()
    assert generator.conv_out.weight.grad is not None


def test_pipeline_round_trip_per_tile_noise_and_float_output(tmp_path):
    pipe = RGBSpadePipeline(_tiny_generator(), "oem8", False)
    pipe.set_progress_bar_config(disable=True)
    labels = torch.randint(0, 9, (2, 16, 16))
    first = pipe(labels=labels, generator=_generators(1, 2)).images
    assert first.dtype == np.uint8 and first.shape == (2, 16, 16, 3)
    as_float = pipe(labels=labels, generator=_generators(1, 2), output_type="np").images
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal((np.clip(as_float, 0, 1) * 255).round().astype(np.uint8), first)
    pipe.save_pretrained(tmp_path)
    loaded = RGBSpadePipeline.from_pretrained(tmp_path)
    assert (loaded.config.scheme, loaded.config.with_height) == ("oem8", False)
    np.testing.assert_array_equal(loaded(labels=labels, generator=_generators(1, 2)).images, first)
    single = loaded(labels=labels[1:], generator=_generators(2)).images[0]
    np.testing.assert_array_equal(single, first[1])  # a tile depends on its seed, not on its batch
    assert not np.array_equal(loaded(labels=labels[1:], generator=_generators(3)).images[0], single)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": torch.zeros((1, 18, 18), dtype=torch.int64)}, "18x18 px is not a positive multiple of 4"),
        ({"labels": torch.full((1, 16, 16), 9)}, r"outside scheme 'oem8' \(allowed: 0..8\)"),
        ({"num_inference_steps": 0}, r"num_inference_steps 0 is out of range \(allowed: 1..1000\)"),
        ({"num_inference_steps": 2.5}, r"num_inference_steps 2.5 is out of range \(allowed: 1..1000\)"),
        ({"guidance_scale": -1.0}, r"guidance_scale -1.0 is out of range \(allowed: 0..50\)"),
        ({"prompt": ["a", "b"]}, "2 prompts given for 1 label maps"),
        ({"generator": _generators(1, 2)}, "2 generators given for 1 label maps"),
        ({"heights": torch.zeros(1, 8, 8)}, "heights shape"),
    ],
)
def test_pipeline_check_inputs(kwargs, message):
    pipe = RGBSpadePipeline(_tiny_generator(), "oem8", False)
    with pytest.raises(ConfigError, match=message):
        pipe(**{"labels": torch.zeros((1, 16, 16), dtype=torch.int64), **kwargs})


def test_pipeline_refuses_a_generator_of_another_scheme_and_a_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="scheme 'isprs' has 6"):
        RGBSpadePipeline(_tiny_generator(), "isprs", False)
    with pytest.raises(ConfigError, match="not a SPADE model folder"):
        RGBSpadePipeline.from_pretrained(tmp_path)


def test_vgg_loss_only_from_a_local_file(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    with pytest.raises(ConfigError, match="is not a file"):
        VGGLoss(tmp_path / "missing.pth")
    torch.manual_seed(0)
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}, path)
    loss = VGGLoss(path)
    a, b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(a, a).item() == 0 and loss(a, b).item() > 0
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="not a VGG19 state dict"):
        VGGLoss(tmp_path / "bad.pth")


def test_train_writes_checkpoints_previews_metrics_and_a_pipeline(trained):
    assert sorted(p.name for p in trained.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["step"] == 2 and [s for s, _ in metrics["loss_d"]] == [1, 2]
    assert metrics["vgg_loss"].startswith("off: no local VGG19 weights") and metrics["loss_g_vgg"] == []
    assert 0 < metrics["val_ema"]["tiles"] <= 2 and -1 <= metrics["val_ema"]["ssim"] <= 1
    assert (trained / "previews" / "step-0000002.png").is_file()
    pipe = RGBSpadePipeline.from_pretrained(trained / "pipeline")
    assert pipe.generator.config.block_out_channels == [16, 8]
    images = pipe(labels=torch.randint(0, 9, (1, 32, 32)), generator=_generators(0)).images
    assert images.shape == (1, 32, 32, 3)


def test_resume_continues_at_the_right_step(scene_manifest, trained, tmp_path):
    values = {"manifest": str(scene_manifest), "out": str(tmp_path / "run"), "preview_n": 0}
    torch.manual_seed(0)
    stopped = train_spade(load_config(SpadeTrainConfig, "tiny", "train-spade", {**values, "max_steps": 1}))
    assert stopped["step"] == 1 and (tmp_path / "run" / "checkpoint-1").is_dir()
    steps = []
    resumed = train_spade(
        load_config(SpadeTrainConfig, "tiny", "train-spade", {**values, "resume": "latest"}), progress=steps.append
    )
    assert resumed["step"] == 2 and steps == [1, 1]
    full = json.loads((trained / "metrics.json").read_text())
    for name in ("loss_d", "loss_g_adv", "loss_g_fm"):
        assert [s for s, _ in resumed[name]] == [1, 2]
        np.testing.assert_allclose([v for _, v in resumed[name]], [v for _, v in full[name]], rtol=1e-5)


def _error_line(result) -> str:
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_train_bad_inputs_fail_in_one_line(scene_manifest, tmp_path):
    def train(*args: str):
        return runner.invoke(
            app,
            ["train", "spade", "--config", "tiny", "--manifest", str(scene_manifest), "--out", str(tmp_path), *args],
        )

    assert "config 'size': 13 px is not a positive multiple of 2" in _error_line(train("--set", "size=13"))
    assert "with_height" in _error_line(train("--set", "with_height=true"))
    assert "d_lr" in _error_line(train("--set", "d_lr=0"))
    assert "vgg_weights" in _error_line(train("--set", f"vgg_weights={tmp_path / 'none.pth'}"))
    assert not list(tmp_path.glob("checkpoint-*"))
