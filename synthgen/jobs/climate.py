"""The ``synthgen climate`` job: images of places under given conditions, from a sites table, into shards.

Every input is read and checked before anything is written: the sites table (ranges, dates, climate values from
the table / a climate cube / a normals table), the prompts of every site (no empty prompt, none longer than the
text encoder takes), the model, and with ``--control`` the control manifest (every site's ``control_key`` must be
an RGB tile there). Then the job runs on the shard engine of ``synthgen.engine.job``: tile ``i`` is replicate
``i % n_per_site`` of site ``i // n_per_site``, with seed ``tile_seed(seed, i)``.

Each tile is georeferenced at its site: with a control tile, on the control tile's footprint (same CRS, pixel size
scaled to the output size); otherwise in the UTM zone of the site, centred on its lat/lon, at the site's ``gsd``
(default ``--gsd``). The manifest row carries the joined prompt, and ``meta`` every site field, both prompts and
the sampling settings; ``parent_keys`` is the control tile (lineage). Ranks, writer processes, device placement
and ``--batch-size auto`` come from ``synthgen.engine.ranks`` and ``synthgen.jobs.acceleration``, as for every
generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from affine import Affine

from synthgen.climate.lookup import LOOKUP_METHODS, ClimateCube, ClimateNormals
from synthgen.climate.sites import (
    SiteSources,
    read_sites,
)
from synthgen.climate.variables import CLIMATE_VARIABLES
from synthgen.config import (
    GSD_MAX_M,
    GSD_MIN_M,
    OutputPaths,
    config_hash,
    config_to_dict,
    require_between,
    require_choice,
    require_name,
    require_positive,
)
from synthgen.engine.job import ShardJob, ShardTask, run_job, tile_seed
from synthgen.engine.options import RUNTIME_KEYS, JobOptions
from synthgen.engine.plan import check_plan_size, check_tile_side
from synthgen.engine.ranks import resolve_rank
from synthgen.engine.weights import weights_hash
from synthgen.errors import ConfigError, ManifestError, allowed, shown
from synthgen.io.geotiff import COMPRESSIONS, Georef
from synthgen.io.shards import RunInfo
from synthgen.jobs.acceleration import (
    compile_denoisers,
    default_writers,
    parse_batch_size,
    rank_device,
    resolve_batch_size,
    tune_pipeline,
)
from synthgen.pipelines.loading import recorded_model_id
from synthgen.pipelines.registry import PIPELINES, default_model
from synthgen.schema import load_scheme

DEFAULT_MODEL = PIPELINES["climate"].default_weights
DEFAULT_CONTROLNET = PIPELINES["climate-controlnet"].default_weights
NOT_IN_HASH = ("out", "manifest", "model", "controlnet", "batch_size", *RUNTIME_KEYS)
CPU_BATCH_SIZE = 4


@dataclass
class ClimateGenerateConfig(OutputPaths, JobOptions):
    """What a ``synthgen climate`` run depends on; ``model`` None means the embedded default. ``batch_size`` is a
    number or ``auto``; the ``JobOptions`` say how the job runs (ranks, writers, compile)."""

    sites: str
    model: str | None = None
    controlnet: str | None = None
    control: str | None = None
    labels: str | None = None
    climate: str | None = None
    climate_method: str = "nearest"
    normals: str | None = None
    normals_max_km: float = 200.0
    prompts: str | None = None
    n_per_site: int = 1
    size: int | None = None
    steps: int = 28
    guidance: float = 4.5
    gsd: float = 10.0
    seed: int = 0
    batch_size: int | str = CPU_BATCH_SIZE
    name: str = "climate"
    tiles_per_shard: int = 256
    compress: str = "zstd"
    out: str = "data/{name}"
    manifest: str = "manifests/{name}.parquet"

    def __post_init__(self):
        require_positive(self, ("n_per_site", "steps", "tiles_per_shard"), flags=True)
        self.batch_size = parse_batch_size(self.batch_size)
        self.check_job_options()
        require_positive(self, ("size",), optional=True, flags=True)
        if self.size is not None:
            check_tile_side(self.size)
        check_plan_size(self.n_per_site, self.tiles_per_shard, f"--n-per-site {self.n_per_site}")
        if not (math.isfinite(self.guidance) and 0 <= self.guidance <= 30):
            raise ConfigError(f"--guidance {self.guidance} is out of range (allowed: 0..30)")
        require_between(self, ("gsd",), GSD_MIN_M, GSD_MAX_M, unit="metres", flags=True)
        require_choice(self, "climate_method", LOOKUP_METHODS, label="--climate-method")
        require_name(self)
        self.check_output_paths()
        require_choice(self, "compress", COMPRESSIONS, label="compress")


def utm_georef(lat: float, lon: float, size: int, gsd: float) -> Georef:
    """A north-up tile of ``size`` px at ``gsd`` m centred on (lat, lon), in the site's UTM zone (WGS84)."""
    from rasterio.warp import transform as warp

    zone = min(int((lon + 180) // 6) + 1, 60)
    crs = f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"
    xs, ys = warp("EPSG:4326", crs, [lon], [lat])
    half = size * gsd / 2
    return Georef(crs, Affine(gsd, 0.0, xs[0] - half, 0.0, -gsd, ys[0] + half), synthetic=False)


def control_georef(row, size: int) -> Georef:
    """The control tile's footprint at ``size`` px."""
    a, b, c, d, e, f = list(row["transform"])[:6]
    factor = row["width_px"] / size
    return Georef(row["crs"], Affine(a * factor, b, c, d, e * factor, f), synthetic=bool(row["synthetic_georef"]))


def load_controls(manifest: str, sites: list[dict]) -> tuple[dict, dict]:
    """The control images (key → HxWx3 uint8) and manifest rows of every site's ``control_key``."""
    from synthgen.io.manifest import iter_samples, read_manifest

    df = read_manifest(Path(manifest))
    missing_col = [s["site_id"] for s in sites if "control_key" not in s]
    if missing_col:
        raise ManifestError(
            f"{manifest}: site(s) {allowed(missing_col)} have no control_key (the sites table needs a control_key "
            "column naming each site's earlier tile)"
        )
    has_rgb = df["members"].map(lambda ms: any(m.endswith(".rgb.tif") for m in ms))
    keys = set(df.loc[has_rgb, "key"])
    unknown = sorted({s["control_key"] for s in sites} - keys)
    if unknown:
        raise ManifestError(
            f"{manifest}: control tile(s) {allowed(unknown)} of the sites table are not rgb tiles of this manifest "
            f"({len(keys)} rgb tiles, e.g. {allowed(sorted(keys)[:3])})"
        )
    wanted = df[df["key"].isin({s["control_key"] for s in sites})].reset_index(drop=True)
    wanted.attrs["manifest_path"] = df.attrs["manifest_path"]
    images = {s["key"]: s["rgb"] for s in iter_samples(wanted)}
    rows = {r["key"]: r for r in wanted.to_dict("records")}
    return images, rows


def _weights_id(model: str) -> str:
    """The weights hash of a local folder, or the hub id itself."""
    return weights_hash(Path(model)) if Path(model).exists() else model


def _meta(site: dict, prompts, replicate: int, config: ClimateGenerateConfig, size: int) -> dict:
    meta = {k: v for k, v in site.items() if k not in ("date", "landcover_fractions")}
    meta["date"] = site["date"].isoformat()
    if "landcover_fractions" in site:
        meta["landcover_fractions"] = {k: round(v, 4) for k, v in site["landcover_fractions"].items()}
    meta.update(
        split="",
        source=site["site_id"],
        spatial_prompt=prompts.spatial,
        climate_prompt=prompts.climate,
        replicate=replicate,
        size=size,
        steps=config.steps,
        guidance=config.guidance,
    )
    return meta


def _render(
    pipe, sites, prompts, controls, control_rows, config, size, batch_size: int, job: ShardJob, task: ShardTask
) -> Iterator:
    for start in range(task.indices.start, task.indices.stop, batch_size):
        batch = range(start, min(start + batch_size, task.indices.stop))
        chosen = [sites[i // config.n_per_site] for i in batch]
        seeds = [tile_seed(config.seed, i) for i in batch]
        out = pipe(
            chosen,
            size=size,
            num_inference_steps=config.steps,
            guidance_scale=config.guidance,
            generator=[torch.Generator().manual_seed(s) for s in seeds],
            control_images=[controls[s["control_key"]] for s in chosen] if controls is not None else None,
        )
        samples = []
        for j, index in enumerate(batch):
            site = chosen[j]
            if controls is not None:
                georef = control_georef(control_rows[site["control_key"]], size)
            else:
                georef = utm_georef(site["lat"], site["lon"], size, site.get("gsd", config.gsd))
            samples.append(
                {
                    "key": job.key(index),
                    "rgb": out.images[j],
                    "crs": georef.crs,
                    "transform": georef.transform,
                    "synthetic_georef": georef.synthetic,
                    "seed": seeds[j],
                    "prompt": out.prompts[j].joined(pipe.spec.join),
                    "parent_keys": [site["control_key"]] if controls is not None else [],
                    "meta": _meta(site, out.prompts[j], index % config.n_per_site, config, size),
                }
            )
        yield samples


def run_climate(config: ClimateGenerateConfig, progress: Callable[[int], None] | None = None) -> dict:
    """Check every input, then run (or resume) the job and write its manifest; returns a summary."""
    from synthgen.pipelines.climate import ClimatePipeline

    model = config.model or str(default_model("climate", "--model DIR|HUB-ID"))
    controlnet = None
    if config.control is not None:
        controlnet = config.controlnet or str(default_model("climate-controlnet", "--controlnet DIR|HUB-ID"))
    elif config.controlnet is not None:
        raise ConfigError("--controlnet needs --control MANIFEST (the earlier images of the sites)")
    rank = resolve_rank(config.shard_index, config.num_shards)
    device = rank_device(rank)
    pipe = ClimatePipeline.from_pretrained(model, controlnet=controlnet, prompts=config.prompts, device=device)
    tune_pipeline(pipe.sd3, device)
    size = config.size or pipe.info.size
    sources = SiteSources(
        label_manifest=Path(config.labels) if config.labels else None,
        cube=ClimateCube(config.climate, config.climate_method) if config.climate else None,
        normals=ClimateNormals.load(config.normals) if config.normals else None,
        normals_max_km=config.normals_max_km,
    )
    required = pipe.spec.climate_fields & set(CLIMATE_VARIABLES)
    sites = read_sites(config.sites, sources, required)
    prompts = pipe.prompts_for(sites)
    controls = control_rows = None
    if config.control is not None:
        controls, control_rows = load_controls(config.control, sites)
    control_images = [controls[s["control_key"]] for s in sites] if controls is not None else None
    pipe.check_inputs(sites, size, config.steps, config.guidance, None, control_images)
    pipe.check_prompt_lengths(sites, prompts)

    whash = _weights_id(model) if controlnet is None else f"{_weights_id(model)}+{_weights_id(controlnet)}"
    run = RunInfo(
        generator="climate-controlnet" if controlnet else "climate",
        scheme="oem8",
        model_id=recorded_model_id(config.model, DEFAULT_MODEL)
        + (f"+{recorded_model_id(config.controlnet, DEFAULT_CONTROLNET)}" if controlnet else ""),
        weights_hash=whash,
        config_hash=config_hash(config, exclude=NOT_IN_HASH),
    )
    job = ShardJob(
        name=config.name,
        n=len(sites) * config.n_per_site,
        tiles_per_shard=config.tiles_per_shard,
        out_dir=config.out_dir,
        manifest_path=config.manifest_path,
        run=run,
        scheme=load_scheme("oem8"),
        compress=config.compress,
        generated=("rgb",),
    )
    resolved = {**config_to_dict(config), "model": model, "controlnet": controlnet, "size": size}

    def probe(b: int) -> None:
        chosen = [sites[0]] * b
        pipe(chosen, size, 1, config.guidance, None, [control_images[0]] * b if control_images else None)

    batch_size = resolve_batch_size(config.batch_size, device, probe, CPU_BATCH_SIZE, config.tiles_per_shard, size)
    if config.compile:
        compile_denoisers(pipe.sd3)
    summary = run_job(
        job,
        lambda task: _render(pipe, sites, prompts, controls, control_rows, config, size, batch_size, job, task),
        run_config={**resolved, "config_hash": run.config_hash, "weights_hash": run.weights_hash},
        config=config,
        progress=progress,
        rank=rank,
        writers=default_writers(device) if config.writers is None else config.writers,
    )
    summary = {**summary, "model": model, "controlnet": controlnet, "sites": len(sites), "size": size}
    return {**summary, "batch_size": batch_size}


def show_prompts(sites_path: str, prompts: str | None = None, model: str | None = None, **sources) -> list[dict]:
    """What a model would be given for each site of a table: both prompts and the joined text (no model run)."""
    from synthgen.climate.prompts import PromptSpec, build_prompts, check_prompts, load_prompt_spec
    from synthgen.pipelines.climate import INFO_FILE, ClimateModelInfo

    info = ClimateModelInfo.load(model) if model else None
    if prompts:
        spec = load_prompt_spec(prompts)
    elif info is not None and info.prompts:
        spec = PromptSpec.from_dict(info.prompts, f"{model}/{INFO_FILE}")
    else:
        spec = load_prompt_spec()
    site_sources = SiteSources(
        label_manifest=Path(sources["labels"]) if sources.get("labels") else None,
        cube=ClimateCube(sources["climate"], sources.get("climate_method", "nearest"))
        if sources.get("climate")
        else None,
        normals=ClimateNormals.load(sources["normals"]) if sources.get("normals") else None,
    )
    sites = read_sites(sites_path, site_sources, spec.climate_fields & set(CLIMATE_VARIABLES))
    out = []
    for site in sites:
        p = build_prompts(site, spec)
        check_prompts(p, spec, f"site {shown(site['site_id'])}")
        out.append({"site_id": site["site_id"], "spatial": p.spatial, "climate": p.climate,
                    "joined": p.joined(spec.join)})  # fmt: skip
    return out
