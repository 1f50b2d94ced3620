"""The generators by name: the pipeline class, where its embedded default weights live, and the make target that
trains them. One table, so every command, the dataset stages and the paper study find the defaults the same way
(a plain dict: an unknown name is a one-line error listing the valid ones)."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

from synthgen.errors import ConfigError, allowed

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
WEIGHT_FILES = ("model_index.json", "config.json")  # a pipeline folder, or a single model (the climate ControlNet)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class PipelineSpec:
    """One generator: its class (``module:name``, imported on use), its default folder under ``synthgen/weights``,
    the make target that trains it, and what messages call it."""

    pipeline: str
    weights: str
    make_target: str
    what: str

    @property
    def default_weights(self) -> Path:
        """The embedded default's folder (it may not be trained yet: see ``is_trained``)."""
        return WEIGHTS_DIR / self.weights

    def load_class(self) -> type:
        """The pipeline (or model) class."""
        module, name = self.pipeline.split(":")
        return getattr(importlib.import_module(module), name)


PIPELINES: dict[str, PipelineSpec] = {
    "landcover": PipelineSpec(
        "synthgen.pipelines.landcover:LandCoverPipeline", "landcover", "weights-landcover", "landcover model"
    ),
    "rgb-spade": PipelineSpec(
        "synthgen.pipelines.rgb_spade:RGBSpadePipeline", "rgb_spade", "weights-rgb-spade", "spade model"
    ),
    "rgb-controlnet": PipelineSpec(
        "synthgen.pipelines.rgb_controlnet:RGBControlNetPipeline",
        "rgb_controlnet",
        "weights-rgb-controlnet",
        "controlnet model",
    ),
    "climate": PipelineSpec(
        "synthgen.pipelines.climate:ClimatePipeline", "climate", "weights-climate", "climate model"
    ),
    "climate-controlnet": PipelineSpec(
        "diffusers:SD3ControlNetModel", "climate_controlnet", "weights-climate", "climate ControlNet"
    ),
}


def get_pipeline(name: str) -> PipelineSpec:
    """The registry entry of a generator; an unknown name is a one-line error listing the valid ones."""
    try:
        return PIPELINES[name]
    except KeyError:
        raise ConfigError(f"unknown generator '{name}' (allowed: {allowed(PIPELINES)})") from None


def is_trained(folder: Path) -> bool:
    """Whether a folder holds a saved pipeline or model."""
    return any((Path(folder) / name).is_file() for name in WEIGHT_FILES)


def default_model(name: str, option: str) -> Path:
    """The embedded default of generator ``name``; where it is not trained yet, a one-line error naming the make
    target that trains it and ``option``, the way to pass another model."""
    spec = get_pipeline(name)
    if not is_trained(spec.default_weights):
        raise ConfigError(
            f"the embedded default {spec.what} ({spec.default_weights}) is not trained yet: run "
            f"`make {spec.make_target}` or pass {option}"
        )
    return spec.default_weights
