"""The ``synthgen rgb`` job: an RGB image for every label map of a cond manifest, by ControlNet or SPADE.

Tile ``i`` of the job is a ``size`` px window of a parent tile of the cond manifest (``size`` defaults to the
parent's size, then tile ``i`` is parent ``i``; a smaller ``size`` cuts each parent into ``(P/size)²`` windows,
row by row). Each tile holds the rendered ``rgb``, the parent's ``label`` and ``height`` (when it has one) cut to
the window, the parent's georeference shifted to the window, the parent key as lineage (``parent_keys``), the
parent's split and source, and, for ControlNet, the composition prompt. Parents are read shard by shard while the
job runs, never all at once (``synthgen.jobs.rgb_parents``). The shard engine (``synthgen.engine.job``) gives the
seeds, resume, ranks, writer processes and the per-tile check; ``synthgen.jobs.acceleration`` the device placement
and ``--batch-size auto``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from affine import Affine

from synthgen.config import (
    OutputPaths,
    config_hash,
    config_to_dict,
    require_choice,
    require_name,
    require_positive,
)
from synthgen.engine.job import ShardJob, ShardTask, run_job, tile_seed
from synthgen.engine.options import RUNTIME_KEYS, JobOptions
from synthgen.engine.plan import check_tile_side
from synthgen.engine.ranks import Rank, resolve_rank
from synthgen.engine.weights import weights_hash
from synthgen.errors import ConfigError, allowed
from synthgen.io.geotiff import COMPRESSIONS
from synthgen.io.manifest import read_manifest
from synthgen.io.shards import RunInfo
from synthgen.jobs.acceleration import (
    compile_denoisers,
    default_writers,
    parse_batch_size,
    place_pipeline,
    rank_device,
    resolve_batch_size,
)
from synthgen.jobs.rgb_parents import ParentReader, cond_fingerprint, cond_rows, plan_size
from synthgen.pipelines.loading import recorded_model_id
from synthgen.pipelines.registry import HUB_ID, PIPELINES, default_model
from synthgen.schema import load_scheme

NOT_IN_HASH = ("out", "manifest", "model", "batch_size", "cond", *RUNTIME_KEYS)
CPU_BATCH_SIZE = 8
MAX_STEPS = 1000
MAX_GUIDANCE = 50.0
DEFAULT_GUIDANCE = 7.5  # a model that does not say its own
MAX_CONDITIONING_SCALE = 20.0
SIZE_MULTIPLE = 8


@dataclass(frozen=True)
class RGBMethod:
    """A method: its generator in ``synthgen.pipelines.registry`` (class, embedded default) and whether it takes
    prompts."""

    pipeline: str
    uses_prompt: bool

    @property
    def default_weights(self) -> Path:
        """The embedded default's folder."""
        return PIPELINES[self.pipeline].default_weights

    def load(self, source: str):
        """The method's pipeline from a folder or hub id."""
        return PIPELINES[self.pipeline].load_class().from_pretrained(source)


METHODS: dict[str, RGBMethod] = {
    "spade": RGBMethod("rgb-spade", uses_prompt=False),
    "controlnet": RGBMethod("rgb-controlnet", uses_prompt=True),
}


def get_method(name: str) -> RGBMethod:
    """The registry entry of a method; an unknown name is a one-line error listing the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"--method '{name}' is unknown (allowed: {allowed(METHODS)})") from None


@dataclass
class RGBGenerateConfig(OutputPaths, JobOptions):
    """What an RGB run depends on; ``model`` None means the method's embedded default in ``synthgen/weights/``.

    ``size`` None renders at the cond tiles' size. ``steps``, ``guidance`` and ``conditioning_scale`` (None: the
    model's own, see ``resolve_sampling``) drive ControlNet's sampler; SPADE
    (one forward pass) checks them but does not use them. ``batch_size`` is a number or ``auto``; the
    ``JobOptions`` say how the job runs (ranks, writers, compile).
    """

    cond: str
    method: str = "spade"
    model: str | None = None
    steps: int = 20
    guidance: float | None = None
    conditioning_scale: float | None = None
    batch_size: int | str = CPU_BATCH_SIZE
    seed: int = 0
    size: int | None = None
    name: str = "rgb"
    tiles_per_shard: int = 256
    compress: str = "zstd"
    out: str = "data/{name}"
    manifest: str = "manifests/{name}.parquet"

    def __post_init__(self):
        get_method(self.method)
        require_positive(self, ("tiles_per_shard",), flags=True)
        self.batch_size = parse_batch_size(self.batch_size)
        self.check_job_options()
        if not 1 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"--steps {self.steps} is out of range (allowed: 1..{MAX_STEPS})")
        if self.guidance is not None and not (math.isfinite(self.guidance) and 0 <= self.guidance <= MAX_GUIDANCE):
            raise ConfigError(f"--guidance {self.guidance} is out of range (allowed: 0..{MAX_GUIDANCE:g})")
        scale = self.conditioning_scale
        if scale is not None and not (math.isfinite(scale) and 0 < scale <= MAX_CONDITIONING_SCALE):
            raise ConfigError(
                f"--conditioning-scale {scale} is out of range (allowed: > 0 and <= {MAX_CONDITIONING_SCALE:g})"
            )
        if self.size is not None and (self.size < SIZE_MULTIPLE or self.size % SIZE_MULTIPLE):
            raise ConfigError(f"--size {self.size} is not a positive multiple of {SIZE_MULTIPLE} px")
        if self.size is not None:
            check_tile_side(self.size)
        require_name(self)
        self.check_output_paths()
        require_choice(self, "compress", COMPRESSIONS, label="compress")


def resolve_sampling(pipe, guidance: float | None, conditioning_scale: float | None) -> tuple[float, float]:
    """The guidance and conditioning scale a run uses: the ones given, else the model's own (saved with a
    ControlNet pipeline by its training), else 7.5 and 1.0."""
    model = getattr(pipe, "config", {})
    return (
        guidance if guidance is not None else float(model.get("guidance_scale", DEFAULT_GUIDANCE)),
        conditioning_scale if conditioning_scale is not None else float(model.get("conditioning_scale", 1.0)),
    )


def model_source(method: str, model: str | None) -> str:
    """The folder (or hub id) to load: the given one, else the method's embedded default; one line if missing."""
    spec = get_method(method)
    if model is None:
        return str(default_model(spec.pipeline, "--model DIR"))
    if not Path(model).exists() and not HUB_ID.fullmatch(model):
        raise ConfigError(f"--model {model}: model folder not found (give a pipeline folder or a hub id)")
    return model


def load_rgb_pipeline(method: str, model: str | None, device: str | None = None):
    """Load the method's pipeline on ``device`` (default: the first GPU in bf16, else CPU), progress bar off;
    returns (pipeline, model source)."""
    source = model_source(method, model)
    pipe = get_method(method).load(source)
    pipe.set_progress_bar_config(disable=True)
    return place_pipeline(pipe, device or rank_device(Rank())), source


def render(
    pipe,
    method: str,
    labels: np.ndarray,
    heights: np.ndarray | None,
    seeds: list[int],
    steps: int,
    guidance: float,
    conditioning_scale: float | None = None,
) -> tuple[np.ndarray, list[str]]:
    """RGB for a batch of label maps (B, H, W) uint8 and heights (B, H, W) float32 or None.

    Returns (images, prompts): images float32 (B, H, W, 3) in [0, 1] when the pipeline offers
    ``output_type="np"`` (so NaN can be refused before rounding), else uint8; prompts are '' without ControlNet.
    """
    scheme = load_scheme(pipe.config.scheme)
    prompts = None
    if get_method(method).uses_prompt:
        from synthgen.prompts import composition_prompts

        prompts = composition_prompts(labels, scheme)
    kwargs = {}
    if "output_type" in inspect.signature(pipe.__call__).parameters:
        kwargs["output_type"] = "np"
    if get_method(method).uses_prompt:
        kwargs["controlnet_conditioning_scale"] = conditioning_scale
    out = pipe(
        labels=torch.from_numpy(labels.astype(np.int64)),
        heights=None if heights is None else torch.from_numpy(heights),
        prompt=prompts,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        **kwargs,
    )
    return np.asarray(out.images), prompts or [""] * len(labels)


def _render_shard(
    pipe,
    config: RGBGenerateConfig,
    batch_size: int,
    job: ShardJob,
    parents: ParentReader,
    size: int,
    per_side: int,
    task: ShardTask,
) -> Iterator[list]:
    """The tiles of one shard, a batch at a time, as sample dicts for ``run_job``."""
    sub = per_side * per_side
    for start in range(task.indices.start, task.indices.stop, batch_size):
        batch = range(start, min(start + batch_size, task.indices.stop))
        windows = []
        for index in batch:
            parent = parents.read(index // sub)
            y0, x0 = (size * v for v in divmod(index % sub, per_side))
            label = parent["label"][y0 : y0 + size, x0 : x0 + size]
            height = None if parent["height"] is None else parent["height"][y0 : y0 + size, x0 : x0 + size]
            windows.append((index, parent, x0, y0, label, height))
        seeds = [tile_seed(config.seed, index) for index in batch]
        heights = None
        if any(w[5] is not None for w in windows):
            nan = np.full((size, size), np.nan, np.float32)
            heights = np.stack([nan if w[5] is None else w[5] for w in windows]).astype(np.float32)
        labels = np.stack([w[4] for w in windows])
        images, prompts = render(
            pipe, config.method, labels, heights, seeds, config.steps, config.guidance, config.conditioning_scale
        )
        samples = []
        for j, (index, parent, x0, y0, label, height) in enumerate(windows):
            row = parent["row"]
            meta = {
                "split": row["split"],
                "source": row["source"],
                "tile_index": index,
                "method": config.method,
                "cond_manifest": str(config.cond),
            }
            if sub > 1:
                meta["parent_window"] = [x0, y0, size, size]
            if get_method(config.method).uses_prompt:
                meta.update(
                    steps=config.steps,
                    guidance=config.guidance,
                    conditioning_scale=config.conditioning_scale,
                )
            samples.append(
                {
                    "key": job.key(index),
                    "rgb": images[j],
                    "label": np.ascontiguousarray(label),
                    "height": None if height is None else np.ascontiguousarray(height),
                    "crs": row["crs"],
                    "transform": Affine(*row["transform"]) @ Affine.translation(x0, y0),
                    "synthetic_georef": bool(row["synthetic_georef"]),
                    "seed": seeds[j],
                    "parent_keys": [parent["key"]],
                    "prompt": prompts[j],
                    "meta": meta,
                }
            )
        yield samples


def check_pipeline_inputs(pipe, size: int, steps: int, guidance: float) -> None:
    """Run the pipeline's own ``check_inputs`` on a probe label map of ``size`` px before anything is written."""
    probe = {
        "labels": torch.zeros((1, size, size), dtype=torch.int64),
        "heights": None,
        "prompt": None,
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "generator": None,
    }
    params = inspect.signature(pipe.check_inputs).parameters
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty and p.kind != p.VAR_KEYWORD]
    if set(required) <= set(probe):
        pipe.check_inputs(**{k: v for k, v in probe.items() if k in params})


def tile_count(config: RGBGenerateConfig) -> int:
    """How many tiles a run makes (for a progress bar): cond tiles x windows per tile."""
    df = read_manifest(Path(config.cond))
    if df.empty:
        return 0
    parent = int(df["width_px"].iloc[0])
    size = config.size or parent
    return len(df) * (parent // size) ** 2 if size <= parent and parent % size == 0 else len(df)


def run_rgb(config: RGBGenerateConfig, progress: Callable[[int], None] | None = None) -> dict:
    """Run (or resume) an RGB job and write its manifest; returns a summary of what was done."""
    cond = Path(config.cond)
    rank = resolve_rank(config.shard_index, config.num_shards)
    device = rank_device(rank)
    pipe, source = load_rgb_pipeline(config.method, config.model, device)
    guidance, scale = resolve_sampling(pipe, config.guidance, config.conditioning_scale)
    config = dataclasses.replace(config, guidance=guidance, conditioning_scale=scale)
    df = cond_rows(cond, pipe.config.scheme, bool(pipe.config.get("with_height", False)))
    size, per_side = plan_size(df, config.size, cond)
    check_pipeline_inputs(pipe, size, config.steps, config.guidance)
    fingerprint = cond_fingerprint(df)
    run = RunInfo(
        generator=f"rgb-{config.method}",
        scheme=pipe.config.scheme,
        model_id=recorded_model_id(config.model, get_method(config.method).default_weights),
        weights_hash=weights_hash(Path(source)) if Path(source).is_dir() else "",
        config_hash=hashlib.sha256(f"{config_hash(config, exclude=NOT_IN_HASH)}:{fingerprint}".encode()).hexdigest(),
    )
    job = ShardJob(
        name=config.name,
        n=len(df) * per_side * per_side,
        tiles_per_shard=config.tiles_per_shard,
        out_dir=config.out_dir,
        manifest_path=config.manifest_path,
        run=run,
        scheme=load_scheme(pipe.config.scheme),
        compress=config.compress,
        generated=("rgb",),
    )
    parents = ParentReader(df)
    resolved = {**config_to_dict(config), "model": source, "size": size}
    probe = lambda b: _probe(pipe, config, size, b)  # noqa: E731
    batch_size = resolve_batch_size(config.batch_size, device, probe, CPU_BATCH_SIZE, config.tiles_per_shard, size)
    if config.compile:
        compile_denoisers(pipe)
    try:
        summary = run_job(
            job,
            lambda task: _render_shard(pipe, config, batch_size, job, parents, size, per_side, task),
            run_config={
                **resolved,
                "config_hash": run.config_hash,
                "weights_hash": run.weights_hash,
                "cond_fingerprint": fingerprint,
            },
            config=config,
            progress=progress,
            rank=rank,
            writers=default_writers(device) if config.writers is None else config.writers,
        )
    finally:
        parents.close()
    return {
        **summary,
        "method": config.method,
        "model": source,
        "weights_hash": run.weights_hash,
        "cond": str(cond),
        "batch_size": batch_size,
    }


def _probe(pipe, config: RGBGenerateConfig, size: int, batch_size: int) -> None:
    """One sampling step on ``batch_size`` label maps of the first class (``--batch-size auto``)."""
    labels = np.full((batch_size, size, size), load_scheme(pipe.config.scheme).valid_classes[0].code, np.uint8)
    heights = np.zeros(labels.shape, np.float32) if pipe.config.get("with_height", False) else None
    render(pipe, config.method, labels, heights, [0] * batch_size, 1, config.guidance)
