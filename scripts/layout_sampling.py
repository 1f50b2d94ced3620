"""Where does a land-cover pipeline's sampling leave its latents (`make bench-layout-sampling` ->
bench/layout_sampling.json)?

Two measurements of a ``LandCoverPipeline`` folder (by default the embedded one) on the real val label maps:

1. **Denoising quality by noise level.** The real maps are encoded, noised at timestep ``t`` with seeded noise and
   denoised in one step; the table gives the error of the UNet's own estimate of the clean latents (mean squared,
   per latent value) and the error of predicting the data mean instead (the latents' variance). Where the first is
   larger than the second, every sampler step from that noise level adds error instead of structure.
2. **Samplers.** ``--n`` tiles generated per sampler setting (``name:steps[:key=value...]``, extra keys go to the
   diffusers scheduler, e.g. ``ddim:20:timestep_spacing=trailing``), each compared with the real val maps by the
   layout metrics of ``synthgen evaluate layout`` (class JS, adjacency distance, component-size KS, shapes), plus
   the per-channel mean and std of the final latents beside those of the real maps' latents: a sampler that ends
   away from the data's latent statistics decodes into maps that are not the data's.

    python scripts/layout_sampling.py --out bench/layout_sampling.json [--pipeline DIR] [--n 128] [SETTING ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_common import add_real_split_arguments, command_line, write_report  # noqa: E402

from synthgen.evaluation.layout import LayoutAccumulator, compare_layouts, label_rows  # noqa: E402
from synthgen.io.manifest import iter_samples  # noqa: E402
from synthgen.models.schedulers import INFERENCE_SCHEDULERS, layout_noise_scheduler  # noqa: E402
from synthgen.pipelines.landcover import LandCoverPipeline  # noqa: E402
from synthgen.pipelines.registry import PIPELINES  # noqa: E402
from synthgen.schema import load_scheme  # noqa: E402

TIMESTEPS = (10, 100, 300, 500, 700, 900, 999)
DEFAULT_SETTINGS = ("ddim:20", "ddim:100", "dpm:20", "ddim:20:timestep_spacing=trailing")
SEED = 10_000


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def parse_setting(spec: str) -> tuple[str, int, dict]:
    """``name:steps[:key=value...]`` -> (scheduler name, steps, scheduler keys)."""
    name, steps, *pairs = spec.split(":")
    if name not in INFERENCE_SCHEDULERS:
        raise SystemExit(f"sampler '{name}' is unknown (allowed: {', '.join(INFERENCE_SCHEDULERS)})")
    return name, int(steps), {k: _value(v) for k, v in (p.split("=", 1) for p in pairs)}


def channel_stats(latents: torch.Tensor) -> dict:
    """Per-channel mean and std of (N, C, h, w) latents, rounded."""
    return {
        "mean": [round(v, 3) for v in latents.mean((0, 2, 3)).tolist()],
        "std": [round(v, 3) for v in latents.std((0, 2, 3)).tolist()],
    }


@torch.no_grad()
def denoising_by_noise_level(pipe: LandCoverPipeline, latents: torch.Tensor) -> list[dict]:
    """Per timestep: the MSE of the UNet's clean-latent estimate from one noisy step, against the data variance."""
    config = pipe.scheduler.config
    scheduler = layout_noise_scheduler(config.num_train_timesteps, config.prediction_type)
    generator = torch.Generator().manual_seed(SEED)
    variance = float(((latents - latents.mean((0, 2, 3), keepdim=True)) ** 2).mean())
    rows = []
    for t in TIMESTEPS:
        noise = torch.randn(latents.shape, generator=generator)
        steps = torch.full((len(latents),), t)
        noisy = scheduler.add_noise(latents, noise, steps)
        out = torch.cat([pipe.unet(noisy[i : i + 64], steps[i : i + 64]).sample for i in range(0, len(noisy), 64)])
        ab = scheduler.alphas_cumprod[t]
        if config.prediction_type == "v_prediction":
            x0 = ab.sqrt() * noisy - (1 - ab).sqrt() * out
        else:
            x0 = (noisy - (1 - ab).sqrt() * out) / ab.sqrt()
        rows.append(
            {"t": t, "x0_mse": round(float(((x0 - latents) ** 2).mean()), 4), "mean_predictor_mse": round(variance, 4)}
        )
    return rows


@torch.no_grad()
def sample(pipe: LandCoverPipeline, n: int, size: int, steps: int, batch: int = 32) -> tuple[np.ndarray, torch.Tensor]:
    """``n`` seeded tiles (one generator per tile): their label maps and the latents the autoencoder decoded."""
    captured = []
    decode = pipe.autoencoder.decode

    def capture(latents):
        captured.append(latents.float().clone())
        return decode(latents)

    pipe.autoencoder.decode = capture
    try:
        labels = []
        for start in range(0, n, batch):
            generators = [torch.Generator().manual_seed(SEED + i) for i in range(start, min(n, start + batch))]
            out = pipe(batch_size=len(generators), size=size, num_inference_steps=steps, generator=generators, gsd=1.0)
            labels.append(out.labels)
    finally:
        pipe.autoencoder.decode = decode
    return np.concatenate(labels), torch.cat(captured)


def main() -> None:
    """Measure denoising by noise level and every sampler setting; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="*", default=list(DEFAULT_SETTINGS))
    add_real_split_arguments(parser, PIPELINES["landcover"].default_weights)
    parser.add_argument("--n", type=int, default=128)
    args = parser.parse_args()
    settings = [parse_setting(s) for s in args.settings]
    start = time.perf_counter()
    torch.manual_seed(0)
    pipe = LandCoverPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    df = label_rows(args.real, args.split)
    scheme = load_scheme(df["scheme"].iloc[0])
    real = LayoutAccumulator(scheme)
    maps = []
    for s in iter_samples(df):
        real.update(s["label"], s["height"], where=s["key"])
        maps.append(s["label"])
    codes = torch.from_numpy(np.stack(maps).astype(np.int64))
    ae = pipe.autoencoder
    with torch.no_grad():
        real_latents = torch.cat([ae.encode(ae.one_hot(codes[i : i + 64]), None) for i in range(0, len(codes), 64)])
    size = codes.shape[-1]
    result = {
        "command": command_line(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "pipeline": str(args.pipeline),
        "prediction_type": pipe.scheduler.config.prediction_type,
        "real": f"{args.real}:{args.split}",
        "real_tiles": len(codes),
        "real_latents": channel_stats(real_latents),
        "denoising": denoising_by_noise_level(pipe, real_latents),
        "samplers": {},
    }
    for spec, (name, steps, extra) in zip(args.settings, settings, strict=True):
        pipe.scheduler = INFERENCE_SCHEDULERS[name].from_config(pipe.scheduler.config, **extra)
        began = time.perf_counter()
        labels, latents = sample(pipe, args.n, size, steps)
        generated = LayoutAccumulator(scheme)
        for label in labels:
            generated.update(label)
        report = compare_layouts(real, generated)
        result["samplers"][spec] = {
            "tiles": len(labels),
            "class_js": report["class_frequency"]["js_divergence"],
            "adjacency_distance": report["adjacency"]["distance"],
            "component_ks": report["components"]["mean_ks"],
            "class_shares": report["class_frequency"]["synthetic"],
            "shape": {k: v["synthetic"] for k, v in report["shape"].items()},
            "latents": channel_stats(latents),
            "seconds": round(time.perf_counter() - began, 1),
        }
        shown = {k: result["samplers"][spec][k] for k in ("class_js", "adjacency_distance", "component_ks", "latents")}
        print(spec, json.dumps(shown, default=float), flush=True)
    result["real_class_shares"] = report["class_frequency"]["real"] if settings else None
    result["real_shape"] = {k: v["real"] for k, v in report["shape"].items()} if settings else None
    result["seconds"] = round(time.perf_counter() - start, 1)
    write_report(args.out, result)
    print(json.dumps({"denoising": result["denoising"]}))


if __name__ == "__main__":
    main()
