"""Benchmark `synthgen landcover` against a plain diffusers loop over the same components; writes JSON.

In one run, at the same model, tile size and step count:
- synthgen: ``run_landcover`` (batched sampling, per-tile generators, tiles written into shards + a manifest);
- plain: the loop a diffusers user would write: for each tile, draw its noise, run the scheduler loop at batch 1,
  decode, draw its height, write the label and height GeoTIFFs.
Each run happens in a child process, so its peak RSS is its own. Model forwards (UNet and autoencoder decode) are
timed by wrapping the classes' methods; the rest of the wall time is "outside forwards".

    python scripts/bench_landcover.py --out bench/landcover.json [--model DIR] [--n 100 2000] [--plain-n 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_common import command_line, machine_info, peak_rss_mb, rates, run_json_child, timed_forwards, write_report

LANDCOVER_FORWARDS = ("diffusers:UNet2DModel.forward", "synthgen.models.layout_autoencoder:LayoutAutoencoder.decode")


def run_synthgen(model: str | None, n: int, size: int, steps: int, batch_size: int, out: Path) -> dict:
    """One `synthgen landcover` job in this process."""
    from synthgen.jobs.landcover import LandCoverGenerateConfig, run_landcover

    spent = timed_forwards(*LANDCOVER_FORWARDS)
    config = LandCoverGenerateConfig(
        n=n,
        model=model,
        size=size,
        steps=steps,
        batch_size=batch_size,
        name="bench",
        out=str(out / "shards"),
        manifest=str(out / "bench.parquet"),
    )
    start = time.perf_counter()
    run_landcover(config)
    return {"wall_s": time.perf_counter() - start, "forward_s": spent["seconds"]}


def run_plain(model: str | None, n: int, size: int, steps: int, out: Path) -> dict:
    """The plain diffusers loop: batch 1, one scheduler loop per tile, two GeoTIFFs written after each tile."""
    import numpy as np
    import rasterio
    from diffusers.utils.torch_utils import randn_tensor

    from synthgen.io.geotiff import synthetic_georef
    from synthgen.jobs.landcover import load_landcover_pipeline, model_dir, tile_seed

    spent = timed_forwards(*LANDCOVER_FORWARDS)
    pipe = load_landcover_pipeline(model_dir(model))
    unet, autoencoder, scheduler, prior = pipe.unet, pipe.autoencoder, pipe.scheduler, pipe.height_prior
    side = size // autoencoder.downsample_factor
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for index in range(n):
        seed = tile_seed(0, index)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            latents = randn_tensor((1, unet.config.in_channels, side, side), generator=generator)
            latents = latents * scheduler.init_noise_sigma
            scheduler.set_timesteps(steps)
            for t in scheduler.timesteps:
                noise = unet(scheduler.scale_model_input(latents, t), t).sample
                latents = scheduler.step(noise, t, latents).prev_sample
            logits, _ = autoencoder.decode(latents)
        label = (logits.argmax(1)[0] + 1).to(torch.uint8).numpy()
        height = prior(label, 1.0, np.random.default_rng(seed)).astype(np.float32)
        georef = synthetic_georef(index, size, 1.0)
        for name, array in (("label", label), ("height", height)):
            profile = {
                "driver": "GTiff",
                "width": size,
                "height": size,
                "count": 1,
                "dtype": array.dtype.name,
                "crs": georef.crs,
                "transform": georef.transform,
                "compress": "deflate",
            }
            with rasterio.open(out / f"{index:07d}.{name}.tif", "w", **profile) as dst:
                dst.write(array, 1)
    return {"wall_s": time.perf_counter() - start, "forward_s": spent["seconds"]}


def _child(args) -> None:
    torch.manual_seed(0)
    out = Path(args.workdir)
    if args.child == "synthgen":
        result = run_synthgen(args.model, args.child_n, args.size, args.steps, args.batch_size, out)
    else:
        result = run_plain(args.model, args.child_n, args.size, args.steps, out)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def _measure(kind: str, n: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        command = [sys.executable, __file__, "--child", kind, "--child-n", str(n), "--workdir", tmp]
        command += ["--size", str(args.size), "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
        if args.model:
            command += ["--model", args.model]
        result = run_json_child(command, f"the {kind} run (n={n})")
    result.update(n=n, **rates(n, result["wall_s"], result["forward_s"]))
    print(
        f"{kind:8s} n={n:5d}  {result['tiles_per_s']:.2f} tiles/s  outside forwards "
        f"{result['share_outside_forwards']:.1%}  peak RSS {result['peak_rss_mb']:.0f} MB",
        file=sys.stderr,
    )
    return result


def main() -> None:
    """Parse the flags, run the children, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/landcover.json")
    parser.add_argument("--model", default=None, help="model folder (default: the embedded default)")
    parser.add_argument("--n", type=int, nargs="+", default=[100, 2000], help="synthgen run sizes (RSS vs n)")
    parser.add_argument("--plain-n", type=int, default=100, help="tiles in the plain loop")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", choices=["synthgen", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    plain = _measure("plain", args.plain_n, args)
    runs = [_measure("synthgen", n, args) for n in sorted(args.n)]
    same_n = next((r for r in runs if r["n"] == args.plain_n), runs[0])
    report = {
        "command": command_line(),
        "machine": machine_info(),
        "model": args.model or "embedded default (synthgen/weights/landcover)",
        "size": args.size,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "plain": plain,
        "synthgen": runs,
        "speedup_vs_plain": same_n["tiles_per_s"] / plain["tiles_per_s"],
        "rss_ratio_largest_vs_smallest_n": runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"],
        "targets": {"speedup_vs_plain": ">= 3", "share_outside_forwards": "<= 0.15", "rss_ratio": "<= 1.1"},
    }
    write_report(args.out, report)
    print(json.dumps({k: report[k] for k in ("speedup_vs_plain", "rss_ratio_largest_vs_smallest_n")}))


if __name__ == "__main__":
    main()
