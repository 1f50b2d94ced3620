"""What one job may ask of a machine (``synthgen.engine.plan``): a lazy shard plan, the most tiles and shards a job,
the largest tile side, and every generator's size check against its model's full downsampling."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from synthgen.config import build_config
from synthgen.engine.job import ShardJob
from synthgen.engine.plan import MAX_SHARDS, MAX_TILE_SIDE, MAX_TILES, ShardPlan, check_plan_size, shard_file
from synthgen.engine.ranks import Rank
from synthgen.errors import ConfigError
from synthgen.io.shards import RunInfo
from synthgen.models.layout_autoencoder import LayoutAutoencoder
from synthgen.pipelines.landcover import LandCoverPipeline, make_scheduler
from synthgen.schema import load_scheme
from synthgen.training.landcover import build_models
from synthgen.training.landcover_config import LandCoverTrainConfig
from tests.test_landcover import _tiny_pipeline


def test_a_plan_of_a_trillion_tiles_holds_no_row_per_tile(tmp_path):
    tracemalloc.start()
    plan = ShardPlan(tmp_path, "big", 10**12, 7)
    part = Rank(3, 1000).take(plan)
    last, middle = part[-1], plan[len(plan) // 2]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, peak
    assert (
        len(plan) == -(-(10**12) // 7) and isinstance(part, ShardPlan) and len(part) == len(range(3, len(plan), 1000))
    )
    assert last.path == tmp_path / shard_file("big", part.shards[-1]) and last.indices.stop <= 10**12
    assert middle.indices == range(len(plan) // 2 * 7, len(plan) // 2 * 7 + 7)


def test_a_lazy_plan_is_the_eager_one(tmp_path):
    plan = ShardPlan(tmp_path, "j", 10, 3)
    eager = [(tmp_path / f"j-{j:05d}.tar", range(j * 3, min(j * 3 + 3, 10))) for j in range(4)]
    assert [(t.path, t.indices) for t in plan] == eager
    assert [(t.path, t.indices) for t in Rank(1, 2).take(plan)] == eager[1::2]
    assert plan[-1].indices == range(9, 10) and list(plan[4:]) == []


def _job(tmp_path: Path, n: int, per: int) -> ShardJob:
    run = RunInfo(generator="t", scheme="oem8", config_hash="c")
    return ShardJob("t", n, per, tmp_path / "out", tmp_path / "m.parquet", run, load_scheme("oem8"))


@pytest.mark.parametrize(
    "n, per, message",
    [
        (10**12, 256, f"a job of {10**12} tiles is over the maximum of {MAX_TILES} tiles"),
        (MAX_TILES + 1, 10**6, f"over the maximum of {MAX_TILES} tiles"),
        (MAX_SHARDS + 1, 1, f"makes {MAX_SHARDS + 1} shards, over the maximum of {MAX_SHARDS}"),
        (MAX_SHARDS * 3, 2, r"allowed: --tiles-per-shard >= 3\)"),
    ],
)
def test_every_job_is_bounded_before_it_plans(tmp_path, n, per, message):
    with pytest.raises(ConfigError, match=message):
        _job(tmp_path, n, per)
    assert not (tmp_path / "out").exists()


def test_the_largest_job_allowed_plans(tmp_path):
    check_plan_size(MAX_TILES, MAX_TILES // MAX_SHARDS)
    assert len(_job(tmp_path, MAX_TILES, MAX_TILES // MAX_SHARDS).plan()) == MAX_SHARDS


def test_landcover_size_is_a_multiple_of_the_full_downsampling():
    pipe = _tiny_pipeline()  # autoencoder 4 x UNet 2 (two down blocks, the last without a downsampler)
    assert (pipe.latent_factor, pipe.unet_factor, pipe.size_factor) == (4, 2, 8)
    for size in (4, 12, 20, 36):
        with pytest.raises(ConfigError, match=f"size {size} px is not a positive multiple of 8"):
            pipe(batch_size=1, size=size, num_inference_steps=1)
    for size in (8, 24):
        assert pipe(batch_size=1, size=size, num_inference_steps=1).labels.shape == (1, size, size)


def test_a_loaded_three_level_model_needs_multiples_of_16(tmp_path):
    """The embedded default's shape (3 autoencoder and 3 UNet levels) at tiny widths, saved and loaded."""
    torch.manual_seed(0)
    ae = LayoutAutoencoder(num_classes=8, block_out_channels=[8, 8, 8], norm_num_groups=4)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 8, 8),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
        norm_num_groups=4,
    )
    LandCoverPipeline(ae, unet, make_scheduler("dpm", DDPMScheduler().config), "oem8").save_pretrained(tmp_path)
    pipe = LandCoverPipeline.from_pretrained(tmp_path)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.size_factor == 16
    for size in (8, 72, 100):  # the sizes: they passed the autoencoder's factor 4 and broke in the UNet
        with pytest.raises(ConfigError, match=f"size {size} px is not a positive multiple of 16"):
            pipe(batch_size=1, size=size, num_inference_steps=1)
    assert pipe(batch_size=1, size=48, num_inference_steps=1).labels.shape == (1, 48, 48)


def test_training_refuses_a_size_its_unet_cannot_take():
    config = build_config(LandCoverTrainConfig, {"manifest": "m.parquet", "ae_block_out_channels": [8, 16, 16],
                                                 "ae_norm_num_groups": 4, "unet_block_out_channels": [16, 32],
                                                 "unet_norm_num_groups": 8})  # fmt: skip
    with pytest.raises(ConfigError, match="config 'size': 36 px is not a multiple of 8"):
        build_models(config, 8, 36)
    assert build_models(config, 8, 40)[1].config.sample_size == 10


def test_the_maximum_side_is_said_in_every_generators_help():
    from typer.testing import CliRunner

    from synthgen.cli.main import app

    for command in ("landcover", "rgb", "climate"):
        text = " ".join(CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"}).output.split())
        assert f"at most {MAX_TILE_SIDE} px" in text, command
        assert f"{MAX_SHARDS:,} shards a job" in text, command
