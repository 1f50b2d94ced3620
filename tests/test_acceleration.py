"""The speed helpers without a GPU: batch-size parsing and the halving search on out-of-memory, CPU defaults
(placement, writers, auto batch size) that leave CPU tiles unchanged, and which modules --compile takes."""

from __future__ import annotations

import re

import pytest
import torch

from synthgen.config import build_config
from synthgen.engine.plan import BYTES_PER_PIXEL
from synthgen.engine.ranks import Rank
from synthgen.errors import ConfigError
from synthgen.jobs.acceleration import (
    available_memory,
    compile_denoisers,
    default_writers,
    find_batch_size,
    largest_power_of_two,
    parse_batch_size,
    place_pipeline,
    rank_device,
    resolve_batch_size,
)
from synthgen.jobs.climate import ClimateGenerateConfig
from synthgen.jobs.landcover import LandCoverGenerateConfig
from synthgen.jobs.rgb import RGBGenerateConfig
from tests.test_landcover import _tiny_pipeline


@pytest.mark.parametrize("value,expected", [("auto", "auto"), (1, 1), (64, 64)])
def test_parse_batch_size(value, expected):
    assert parse_batch_size(value) == expected


@pytest.mark.parametrize("value", [0, -4, "lots", "", True, 2.5])
def test_parse_batch_size_refuses(value):
    with pytest.raises(ConfigError, match=re.escape(f"--batch-size {value} must be >= 1 (an integer) or auto")):
        parse_batch_size(value)


@pytest.mark.parametrize("cls,extra", [(LandCoverGenerateConfig, {"n": 2}), (RGBGenerateConfig, {"cond": "c"}),
                                       (ClimateGenerateConfig, {"sites": "s"})])  # fmt: skip
def test_configs_take_auto_or_a_number_from_the_command_line(cls, extra):
    assert build_config(cls, {**extra, "batch_size": "auto"}).batch_size == "auto"
    assert build_config(cls, {**extra, "batch_size": "16"}).batch_size == 16
    with pytest.raises(ConfigError, match="--batch-size 1.5 must be"):
        build_config(cls, {**extra, "batch_size": "1.5"})


def test_largest_power_of_two():
    assert [largest_power_of_two(n) for n in (0, 1, 2, 3, 255, 256, 300)] == [1, 1, 2, 2, 128, 256, 256]


def test_find_batch_size_halves_on_out_of_memory():
    tried = []

    def probe(size: int) -> None:
        tried.append(size)
        if size > 24:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert find_batch_size(probe, 256) == 16 and tried == [256, 128, 64, 32, 16]
    with pytest.raises(ConfigError, match="out of GPU memory even at batch size 1"):
        find_batch_size(lambda size: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("oom")), 4)


def test_resolve_batch_size_on_cpu_never_probes():
    def probe(size: int) -> None:
        raise AssertionError("probed on CPU")

    assert resolve_batch_size("auto", "cpu", probe, cpu_default=32, limit=256, side=64) == 32
    assert resolve_batch_size(5, "cpu", probe, cpu_default=32, limit=256, side=64) == 5
    if not torch.cuda.is_available():  # a GPU's free memory would bound the batch below 64
        tried = []
        assert resolve_batch_size("auto", "cuda:1", tried.append, 32, limit=100, side=64) == 64 and tried == [64]


def test_a_batch_must_fit_in_free_memory():
    free = available_memory("cpu")
    assert free is not None and free > 0
    too_many = 2 * free // (BYTES_PER_PIXEL * 64 * 64)  # twice what fits: free memory moves a little
    with pytest.raises(ConfigError, match=rf"--size 64 with --batch-size {too_many} needs at least .* available on "):
        resolve_batch_size(too_many, "cpu", print, cpu_default=32, limit=256, side=64)
    with pytest.raises(ConfigError, match="not even one tile fits: use a smaller --size"):
        resolve_batch_size(1, "cpu", print, cpu_default=32, limit=256, side=int((2 * free / BYTES_PER_PIXEL) ** 0.5))
    side = int((free / BYTES_PER_PIXEL / 2.5) ** 0.5)  # 2 tiles fit, 3 do not: auto stays below what fits
    assert resolve_batch_size("auto", "cpu", print, cpu_default=32, limit=256, side=side) == 2


def test_cpu_defaults_leave_the_pipeline_as_it_is():
    pipe = _tiny_pipeline()
    weight = next(pipe.unet.parameters())
    assert rank_device(Rank(1, 2, 1)) == ("cuda:1" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        assert place_pipeline(pipe, "cpu") is pipe and default_writers("cpu") == 0
        assert next(pipe.unet.parameters()) is weight and weight.dtype == torch.float32
        assert weight.is_contiguous()


def test_compile_takes_the_denoising_models():
    pipe = _tiny_pipeline()
    assert compile_denoisers(pipe) == ["unet"]
    assert pipe.unet._compiled_call_impl is not None
