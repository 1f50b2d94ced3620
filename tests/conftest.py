"""Shared fixtures: the seeded fixture rasters (written once per session), ingest configs over them, and tiny
SD / ControlNet pipelines built from configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.make_fixtures import make_fixtures

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    """Folder of seeded fixture rasters (see tests/data/make_fixtures.py)."""
    return make_fixtures(tmp_path_factory.mktemp("fixtures"))


def scene_config_values(fixtures_dir: Path, out: Path) -> dict:
    """Ingest config values for the georeferenced 'scene' fixture, writing under ``out``."""
    return {
        "name": "scene",
        "root": str(fixtures_dir / "scene"),
        "sources": "*/images/*.tif",
        "image": "{path}",
        "label": "{parent}/labels/{stem}.tif",
        "scheme": "isprs",
        "tile_size": 32,
        "area": "{parent}",
        "val_fraction": 0.3,
        "tiles_per_shard": 4,
        "out": str(out / "out" / "{name}"),
        "manifest": str(out / "manifests" / "{name}.parquet"),
    }


def plain_config_values(root: Path, out: Path) -> dict:
    """Ingest config values for a copy of the 'plain' fixture (PNG images and labels, no georeference) at ``root``,
    writing under ``out``."""
    return {
        "name": "plain",
        "root": str(root),
        "sources": "images/*.png",
        "image": "{path}",
        "label": "labels/{stem}.png",
        "scheme": "dubai",
        "tile_size": 32,
        "out": str(out / "out" / "{name}"),
        "manifest": str(out / "manifests" / "{name}.parquet"),
    }


@pytest.fixture
def scene_config(fixtures_dir, tmp_path) -> dict:
    """Ingest config values for the georeferenced 'scene' fixture, writing into tmp_path."""
    return scene_config_values(fixtures_dir, tmp_path)


def tiny_sd_components(factor: int = 4) -> dict:
    """The parts of a tiny SD base (VAE of latent factor ``factor``, text encoder with a locally trained tokenizer,
    UNet, noise scheduler), built from configs after ``torch.manual_seed(0)``."""
    import torch

    from synthgen.models.schedulers import sd_noise_scheduler
    from synthgen.models.sd_components import SDArchitecture, build_text_encoder, build_unet, build_vae
    from synthgen.models.text_tokenizer import train_tokenizer
    from synthgen.prompts import prompt_vocabulary
    from synthgen.schema import load_scheme

    torch.manual_seed(0)
    arch = SDArchitecture(
        vae_block_out_channels=[8, 16, 16] if factor == 4 else [8, 16, 16, 16],
        vae_norm_num_groups=4,
        unet_block_out_channels=[16, 32],
        unet_cross_attention_levels=1,
        unet_attention_heads=2,
        text_hidden_size=16,
        text_layers=1,
        text_intermediate_size=32,
    )
    tokenizer = train_tokenizer(prompt_vocabulary(load_scheme("oem8")), vocab_size=400)
    return {
        "vae": build_vae(arch),
        "text_encoder": build_text_encoder(arch, tokenizer),
        "tokenizer": tokenizer,
        "unet": build_unet(arch, 4),
        "scheduler": sd_noise_scheduler(),
    }


def save_tiny_seg_model(folder: Path) -> Path:
    """A tiny oem8 UNet of synthgen validate (the ``tiny`` profile, random init after torch.manual_seed(0)) saved to
    ``folder``; returns ``folder``."""
    import torch

    from synthgen.config import load_config
    from synthgen.schema import load_scheme
    from synthgen.validation.config import ValidateConfig
    from synthgen.validation.data import ClassIndex
    from synthgen.validation.models import build_model

    torch.manual_seed(0)
    classes = ClassIndex(load_scheme("oem8"))
    config = load_config(ValidateConfig, "tiny", "validate", {})
    build_model(config, "unet", classes.codes, classes.names, "oem8").save_pretrained(folder)
    return folder


def save_tiny_controlnet_pipeline(folder: Path) -> Path:
    """A tiny RGBControlNetPipeline (random weights, the parts of `tiny_sd_components` plus a ControlNet for
    8-class one-hot control, DDIM sampling) saved to ``folder``; returns ``folder``."""
    from diffusers import ControlNetModel, DDIMScheduler

    from synthgen.pipelines.rgb_controlnet import RGBControlNetPipeline

    parts = tiny_sd_components()
    parts["scheduler"] = DDIMScheduler.from_config(parts["scheduler"].config)
    controlnet = ControlNetModel.from_unet(
        parts["unet"], conditioning_channels=8, conditioning_embedding_out_channels=(8, 16, 16)
    )
    RGBControlNetPipeline(**parts, controlnet=controlnet).save_pretrained(folder)
    return folder
