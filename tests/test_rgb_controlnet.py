"""ControlNet label→RGB at tiny size: composition prompts, the locally trained tokenizer, tiny SD base + ControlNet
trained 2 steps through the CLI → saved → loaded → rendered, determinism (runs, batch sizes), a frozen base,
one-hot vs palette control, exact resume, an SD 1.5-style base folder (factor 8, PNDM), and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler, StableDiffusionPipeline
from safetensors.torch import load_file
from typer.testing import CliRunner

from synthgen.cli.main import app
from synthgen.config import build_config, load_config
from synthgen.errors import ConfigError, SchemeError, SynthgenError
from synthgen.jobs.ingest import IngestConfig, run_ingest
from synthgen.models.sd_components import load_base_components
from synthgen.models.text_tokenizer import load_tokenizer, train_tokenizer
from synthgen.pipelines.rgb_controlnet import RGBControlNetPipeline
from synthgen.prompts import composition_prompt, composition_prompts, prompt_vocabulary
from synthgen.schema import load_scheme
from synthgen.training.controlnet import train_controlnet
from synthgen.training.controlnet_config import ControlNetTrainConfig
from synthgen.training.sd_base import train_sd_base
from synthgen.training.sd_base_config import SDBaseTrainConfig
from tests.conftest import scene_config_values, tiny_sd_components

runner = CliRunner()
OEM8 = load_scheme("oem8")


@pytest.fixture(scope="module")
def scene_manifest(fixtures_dir, tmp_path_factory) -> Path:
    """The scene fixture (rgb + isprs labels mapped to oem8) ingested in 32 px tiles."""
    tmp = tmp_path_factory.mktemp("scene")
    config = build_config(IngestConfig, scene_config_values(fixtures_dir, tmp))
    run_ingest(config)
    return config.manifest_path


@pytest.fixture(scope="module")
def trained(scene_manifest, tmp_path_factory) -> dict:
    """Tiny base (2 VAE + 2 UNet steps) then a tiny ControlNet (2 steps), both through the CLI."""
    root = tmp_path_factory.mktemp("train")
    torch.manual_seed(0)
    base = runner.invoke(
        app, ["train", "sd-base", "--config", "tiny", "--manifest", str(scene_manifest), "--out", str(root / "base")]
    )
    assert base.exit_code == 0, base.output
    args = ["train", "controlnet", "--config", "tiny", "--manifest", str(scene_manifest), "--out", str(root / "cn")]
    result = runner.invoke(app, [*args, "--base", str(root / "base" / "pipeline")])
    assert result.exit_code == 0, result.output
    return {"base": root / "base", "cn": root / "cn", "manifest": scene_manifest}


def _weights(folder: Path) -> dict:
    """The tensors of a model folder's single safetensors file."""
    (path,) = folder.glob("*.safetensors")
    return load_file(path)


def _load(folder: Path) -> RGBControlNetPipeline:
    pipe = RGBControlNetPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _labels(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Blocky label maps with codes 0..8 (nodata included)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 9, (batch, size // 8, size // 8))
    return torch.from_numpy(np.kron(blocks, np.ones((8, 8), np.int64)))


def _gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_composition_prompt_sorts_rounds_and_drops():
    labels = np.zeros((20, 20), np.uint8)  # 400 px: 20 nodata, 230 building, 100 road, 48 tree, 2 water
    labels.flat[20:250] = 8
    labels.flat[250:350] = 4
    labels.flat[350:398] = 5
    labels.flat[398:] = 6
    assert composition_prompt(labels, OEM8) == "aerial image; 60 % building, 25 % road, 15 % tree"
    assert composition_prompt(labels, OEM8, extra="summer, noon") == (
        "aerial image; 60 % building, 25 % road, 15 % tree; summer, noon"
    )
    hist = np.bincount(labels.ravel(), minlength=9)  # a manifest's class_hist gives the same text
    assert composition_prompt(hist, OEM8) == composition_prompt(labels, OEM8)
    assert composition_prompt({"road": 1, "tree": 1}, OEM8) == "aerial image; 50 % road, 50 % tree"
    assert composition_prompt(np.zeros((4, 4), np.uint8), OEM8) == "aerial image"
    assert composition_prompts(torch.from_numpy(np.stack([labels, labels])), OEM8)[1] == composition_prompt(
        labels, OEM8
    )
    with pytest.raises(ConfigError, match="label value"):
        composition_prompt(np.full((2, 2), 12), OEM8)


def test_tokenizer_round_trip(tmp_path):
    texts = prompt_vocabulary(OEM8) + ["aerial image; 60 % building, 25 % road"]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    assert tokenizer.get_vocab() == train_tokenizer(list(reversed(texts)), vocab_size=400).get_vocab()
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    text = ["aerial image; 40 % building, 25 % road; Dubai, ünïcode!"]
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids
    assert loaded(text, padding="max_length", max_length=77, truncation=True).input_ids == ids
    assert len(ids[0]) == 77 and loaded.model_max_length == 77
    assert ids[0][0] == loaded.bos_token_id and loaded.eos_token_id in ids[0] and ids[0][-1] == loaded.pad_token_id
    assert loaded.decode(ids[0], skip_special_tokens=True) == text[0].lower()
    with pytest.raises(ConfigError, match="no training text"):
        train_tokenizer([""])


def test_train_save_load_render(trained):
    cn = trained["cn"]
    assert (cn / "checkpoint-2" / "trainer_state.json").is_file()
    assert list((cn / "validation").glob("step-*.png"))
    metrics = json.loads((cn / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["base_frozen"] is True and metrics["validation"][-1]["finite"]
    index = json.loads((cn / "pipeline" / "model_index.json").read_text())
    assert (index["scheme"], index["cond_encoding"], index["with_height"]) == ("oem8", "onehot", False)
    assert index["safety_checker"] == [None, None]
    pipe = _load(cn / "pipeline")
    assert pipe.controlnet.config.conditioning_channels == 8
    for size in (16, 32):
        images = pipe(_labels(2, size), num_inference_steps=2, generator=_gens(1, 2)).images
        assert images.shape == (2, size, size, 3) and images.dtype == np.uint8
    floats = pipe(_labels(1, 16), num_inference_steps=2, generator=_gens(1), output_type="np").images
    assert floats.dtype == np.float32 and 0 <= floats.min() and floats.max() <= 1
    text2img = StableDiffusionPipeline.from_pretrained(trained["base"] / "pipeline")
    text2img.set_progress_bar_config(disable=True)
    assert text2img(["aerial image"], height=16, width=16, num_inference_steps=2, output_type="np").images.shape == (
        1,
        16,
        16,
        3,
    )


def test_same_seed_same_bytes_whatever_the_batch(trained):
    pipe = _load(trained["cn"] / "pipeline")
    labels = _labels(2, 32, seed=3)
    first = pipe(labels, num_inference_steps=2, guidance_scale=3.0, generator=_gens(5, 6)).images
    again = _load(trained["cn"] / "pipeline")(labels, num_inference_steps=2, guidance_scale=3.0, generator=_gens(5, 6))
    single = pipe(labels[1:], num_inference_steps=2, guidance_scale=3.0, generator=_gens(6)).images
    assert first.tobytes() == again.images.tobytes()
    assert first[1].tobytes() == single[0].tobytes()
    other = pipe(labels, num_inference_steps=2, guidance_scale=3.0, generator=_gens(5, 7)).images
    assert first[0].tobytes() == other[0].tobytes() and first[1].tobytes() != other[1].tobytes()


def test_base_is_frozen(trained):
    base, cn = trained["base"] / "pipeline", trained["cn"] / "pipeline"
    for part in ("unet", "vae", "text_encoder"):
        before, after = _weights(base / part), _weights(cn / part)
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before), part
    controlnet = _weights(cn / "controlnet")
    zero_convs = [v for k, v in controlnet.items() if k.startswith("controlnet_down_blocks")]
    assert any(v.abs().sum() > 0 for v in zero_convs)  # the zero convolutions have learnt something


@pytest.mark.parametrize(("encoding", "with_height", "channels"), [("onehot", True, 9), ("palette", False, 3)])
def test_onehot_and_palette_control(encoding, with_height, channels):
    from diffusers import ControlNetModel, DDIMScheduler

    parts = tiny_sd_components()
    controlnet = ControlNetModel.from_unet(
        parts["unet"], conditioning_channels=channels, conditioning_embedding_out_channels=(8, 16, 16)
    )
    parts["scheduler"] = DDIMScheduler.from_config(parts["scheduler"].config)
    pipe = RGBControlNetPipeline(**parts, controlnet=controlnet, cond_encoding=encoding, with_height=with_height)
    pipe.set_progress_bar_config(disable=True)
    heights = torch.rand(1, 16, 16) * 30 if with_height else None
    images = pipe(_labels(1, 16), heights, num_inference_steps=2, generator=_gens(0)).images
    assert images.shape == (1, 16, 16, 3)
    wrong = "palette" if encoding == "onehot" else "onehot"
    with pytest.raises(ConfigError, match=f"takes {channels} control channels"):
        RGBControlNetPipeline(**parts, controlnet=controlnet, cond_encoding=wrong, with_height=with_height)


def test_resume_equals_uninterrupted_run(trained, tmp_path):
    values = {"manifest": str(trained["manifest"]), "base": str(trained["base"] / "pipeline")}
    out = tmp_path / "cn"
    first = load_config(ControlNetTrainConfig, "tiny", "train-controlnet", {**values, "out": str(out), "max_steps": 1})
    assert train_controlnet(first)["step"] == 1
    resumed = load_config(ControlNetTrainConfig, "tiny", "train-controlnet", {**values, "out": str(out)})
    resumed.resume = "latest"
    metrics = train_controlnet(resumed)
    assert metrics["step"] == 2
    reference = json.loads((trained["cn"] / "metrics.json").read_text())
    assert metrics["loss"] == reference["loss"]
    a = _weights(out / "pipeline" / "controlnet")
    b = _weights(trained["cn"] / "pipeline" / "controlnet")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sd_base_resume_equals_uninterrupted_run(trained, tmp_path):
    out = tmp_path / "base"
    values = {"manifest": str(trained["manifest"]), "out": str(out)}
    train_sd_base(load_config(SDBaseTrainConfig, "tiny", "train-sd-base", {**values, "max_steps": 3}))
    assert (out / "checkpoint-3").is_dir() and (out / "tokenizer" / "tokenizer.json").is_file()
    metrics = train_sd_base(load_config(SDBaseTrainConfig, "tiny", "train-sd-base", {**values, "resume": "latest"}))
    reference = json.loads((trained["base"] / "metrics.json").read_text())
    assert metrics["step"] == 4 and metrics["loss_unet"] == reference["loss_unet"]
    assert metrics["scaling_factor"] == reference["scaling_factor"]
    a, b = _weights(out / "pipeline" / "unet"), _weights(trained["base"] / "pipeline" / "unet")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sd15_style_base_folder(trained, tmp_path):
    """A base in SD 1.5's layout (factor-8 VAE, PNDM scheduler config) loads by path; SD's control widths apply."""
    parts = tiny_sd_components(factor=8)
    parts["scheduler"] = PNDMScheduler.from_config(parts["scheduler"].config)
    StableDiffusionPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    ).save_pretrained(tmp_path / "sd15")
    loaded = load_base_components(tmp_path / "sd15")
    assert type(loaded["scheduler"]).__name__ == "DDPMScheduler"
    config = load_config(
        ControlNetTrainConfig,
        "tiny",
        "train-controlnet",
        {
            "manifest": str(trained["manifest"]),
            "base": str(tmp_path / "sd15"),
            "out": str(tmp_path / "cn"),
            "conditioning_embedding_out_channels": [],
            "cond_encoding": "palette",
            "steps": 1,
        },
    )
    metrics = train_controlnet(config)
    pipe = _load(tmp_path / "cn" / "pipeline")
    assert pipe.controlnet.config.conditioning_embedding_out_channels == [16, 32, 96, 256]
    assert metrics["base_frozen"] and pipe(_labels(1, 16), num_inference_steps=1).images.shape == (1, 16, 16, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"scheme": "isprs"}, SchemeError, "labels in scheme 'isprs', the model wants 'oem8'"),
        ({"labels": torch.zeros(1, 20, 20, dtype=torch.long)}, ConfigError, "20x20 px is not a positive multiple of 8"),
        ({"labels": torch.full((1, 16, 16), 12)}, SchemeError, "label values 12 are not in scheme 'oem8'"),
        ({"num_inference_steps": 0}, ConfigError, "num_inference_steps 0 is out of range (allowed: 1..1000)"),
        ({"num_inference_steps": 5000}, ConfigError, "allowed: 1..1000"),
        ({"guidance_scale": -1.0}, ConfigError, "guidance_scale -1.0 is out of range (allowed: 0..50)"),
        ({"guidance_scale": float("nan")}, ConfigError, "guidance_scale nan is out of range"),
        ({"generator": _gens(1, 2)}, ConfigError, "2 generators given for 1 label maps"),
        ({"prompt": ["a", "b"]}, ConfigError, "prompt must be a list of 1 strings"),
        ({"heights": torch.zeros(1, 8, 8)}, ConfigError, "heights shape (1, 8, 8) differs"),
        ({"output_type": "pil"}, ConfigError, "output_type 'pil' is not one of np, uint8"),
    ],
)
def test_bad_pipeline_input_is_one_line(trained, kwargs, error, message):
    pipe = _load(trained["cn"] / "pipeline")
    call = {"labels": torch.zeros(1, 16, 16, dtype=torch.long), "num_inference_steps": 1, **kwargs}
    with pytest.raises(error) as info:
        pipe(**call)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base", "/nonexistent/base"], "error: --base /nonexistent/base: not a Stable Diffusion folder"),
        (["--set", "cond_encoding=rgb"], "config 'cond_encoding': 'rgb' is not one of onehot, palette"),
        (["--set", "scheme=isprs"], "labels are in scheme(s) oem8, the model wants 'isprs'"),
        (["--set", "size=20"], "config 'size': 20 px is not a positive multiple of 8"),
        (["--set", "stepz=3"], "unknown key(s) stepz (did you mean steps?"),
        (["--set", "timestep_sampling=cosine"], "config 'timestep_sampling': 'cosine' is not one of cubic, uniform"),
        (["--set", "init_controlnet=/nonexistent/cn"], "/nonexistent/cn is not a ControlNetModel folder"),
        (["--set", "cond_encoding=palette", "--set", "init_controlnet={cn}"], "takes 8 control channels, this run"),
    ],
)
def test_bad_training_input_is_one_line(trained, tmp_path, args, message):
    out = tmp_path / "cn"
    base = ["--base", str(trained["base"] / "pipeline")]
    cmd = ["train", "controlnet", "--config", "tiny", "--manifest", str(trained["manifest"]), "--out", str(out)]
    args = [a.format(cn=trained["cn"] / "pipeline" / "controlnet") for a in args]
    result = runner.invoke(app, [*cmd, *base, *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (out / "pipeline").exists()


def test_bad_model_folder_is_one_line(tmp_path):
    with pytest.raises(SynthgenError, match="not a ControlNet model folder"):
        RGBControlNetPipeline.from_pretrained(tmp_path)


def test_resume_with_another_architecture_is_refused(trained, tmp_path):
    out = tmp_path / "cn"
    shutil.copytree(trained["cn"], out)
    cmd = ["train", "controlnet", "--config", "tiny", "--manifest", str(trained["manifest"]), "--out", str(out)]
    args = ["--base", str(trained["base"] / "pipeline"), "--resume", "latest", "--set", "learning_rate=0.5"]
    result = runner.invoke(app, [*cmd, *args])
    assert result.exit_code == 2
    assert "its checkpoints were trained with other values of learning_rate" in result.output.strip()
    assert (out / "config.yaml").read_text() == (trained["cn"] / "config.yaml").read_text()


def test_fine_tuning_from_a_controlnet_with_cubic_timesteps(trained, tmp_path):
    from synthgen.training.timesteps import sample_timesteps

    cubic = sample_timesteps("cubic", 20000, 1000, torch.Generator().manual_seed(0))
    uniform = sample_timesteps("uniform", 20000, 1000, torch.Generator().manual_seed(0))
    assert 0 <= int(cubic.min()) and int(cubic.max()) <= 999 and cubic.dtype == torch.int64
    assert float((cubic >= 500).float().mean()) == pytest.approx(
        0.5 ** (1 / 3), abs=0.01
    )  # P(1 - u^3 >= 0.5) = P(u <= 0.5^(1/3))
    assert float((uniform >= 500).float().mean()) == pytest.approx(0.5, abs=0.01)

    start = trained["cn"] / "pipeline" / "controlnet"
    values = {"manifest": str(trained["manifest"]), "base": str(trained["base"] / "pipeline"), "out": str(tmp_path)}
    values |= {"init_controlnet": str(start), "timestep_sampling": "cubic", "steps": 1}
    metrics = train_controlnet(load_config(ControlNetTrainConfig, "tiny", "train-controlnet", values))
    assert metrics["step"] == 1
    before, after = _weights(start), _weights(tmp_path / "pipeline" / "controlnet")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


def test_conditioning_scale_is_the_models_own_unless_given(trained, tmp_path):
    pipe = _load(trained["cn"] / "pipeline")
    assert pipe.config.conditioning_scale == 1.0
    labels = _labels(2, 16, seed=4)

    def render(p, **kwargs):
        return p(labels, num_inference_steps=2, guidance_scale=3.0, generator=_gens(1, 2), **kwargs).images

    default, one, three = (
        render(pipe),
        render(pipe, controlnet_conditioning_scale=1.0),
        render(pipe, controlnet_conditioning_scale=3.0),
    )
    assert default.tobytes() == one.tobytes() and default.tobytes() != three.tobytes()
    pipe.register_to_config(conditioning_scale=3.0)  # a model shipped with its own scale
    pipe.save_pretrained(tmp_path / "scaled")
    scaled = _load(tmp_path / "scaled")
    assert scaled.config.conditioning_scale == 3.0 and render(scaled).tobytes() == three.tobytes()
    with pytest.raises(ConfigError, match="controlnet_conditioning_scale -1.0 must be > 0"):
        render(pipe, controlnet_conditioning_scale=-1.0)
