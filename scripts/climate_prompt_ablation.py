"""Does each field of the climate prompt change the image? (`make climate-ablation` -> bench/climate_ablation.json)

Fixed sites (a sites table, by default the 12 NAIP sites of examples/sites_naip.csv) and fixed seeds; one field at
a time takes a few values (month, cloud cover, temperature, precipitation), everything else as in the table. For
each value, per image: greenness (excess green, (2G - R - B) / (R + G + B), mean over pixels), brightness (mean
grey level, 0-1) and the distance to the image of the same site and seed under the unchanged prompt (mean absolute
difference per pixel and channel, 0-1). The noise floor is the distance between two seeds under the same prompt;
the report gives, per field, the spread of greenness and brightness across its values and its mean distance as a
share of that floor. A field whose images do not move (distance under 5 % of the floor) is reported as changing
nothing: users of DiffusionSat report exactly that failure.

    python scripts/climate_prompt_ablation.py --out bench/climate_ablation.json [--model DIR] [--sites CSV]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthgen.climate.sites import read_sites  # noqa: E402
from synthgen.io.atomic import atomic_write  # noqa: E402
from synthgen.pipelines.climate import ClimatePipeline  # noqa: E402
from synthgen.pipelines.loading import recorded_model_id  # noqa: E402
from synthgen.pipelines.registry import PIPELINES, default_model  # noqa: E402

VARIANTS = {
    "month": [1, 4, 7, 10],
    "cloud_cover": [0.0, 50.0, 100.0],
    "temperature": [-15.0, 5.0, 25.0],
    "precipitation": [0.0, 50.0, 150.0],
}
NOTHING_SHARE = 0.05


def with_value(site: dict, field: str, value) -> dict:
    """A copy of ``site`` with one field set (``month`` moves the date to the 15th of that month, same year)."""
    site = dict(site)
    if field == "month":
        site["date"] = dt.date(site["date"].year, int(value), 15)
    else:
        site[field] = value
    return site


def image_stats(images: np.ndarray) -> dict:
    """Per image greenness and brightness of float (B, H, W, 3) images in [0, 1]."""
    r, g, b = images[..., 0], images[..., 1], images[..., 2]
    total = np.maximum(r + g + b, 1e-6)
    return {"greenness": ((2 * g - r - b) / total).mean((1, 2)), "brightness": images.mean((1, 2, 3))}


def render(pipe, sites: list[dict], seed: int, size: int, steps: int, guidance: float) -> np.ndarray:
    """One image per site, site ``i`` seeded with ``seed * 1000 + i``, as floats in [0, 1]."""
    generators = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(len(sites))]
    images = np.asarray(pipe(sites, size, steps, guidance, generators).images)
    return images.astype(np.float64) / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)


def main() -> None:
    """Render every variant, measure, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default=None, help="climate pipeline folder (default: the embedded one)")
    parser.add_argument("--sites", default=str(REPO / "examples" / "sites_naip.csv"))
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--guidance", type=float, default=4.5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    model = args.model or str(default_model("climate", "--model DIR"))
    pipe = ClimatePipeline.from_pretrained(model)
    size = pipe.info.size
    sites = read_sites(args.sites)
    base = render(pipe, sites, 0, size, args.steps, args.guidance)
    other_seed = render(pipe, sites, 1, size, args.steps, args.guidance)
    floor = float(np.abs(base - other_seed).mean())
    base_stats = image_stats(base)
    fields = {}
    for field, values in VARIANTS.items():
        rows = []
        for value in values:
            images = render(pipe, [with_value(s, field, value) for s in sites], 0, size, args.steps, args.guidance)
            stats = image_stats(images)
            rows.append(
                {
                    "value": value,
                    "greenness": round(float(stats["greenness"].mean()), 5),
                    "brightness": round(float(stats["brightness"].mean()), 5),
                    "distance_to_unchanged": round(float(np.abs(images - base).mean()), 5),
                }
            )
        distance = float(np.mean([r["distance_to_unchanged"] for r in rows]))
        fields[field] = {
            "values": rows,
            "greenness_range": round(max(r["greenness"] for r in rows) - min(r["greenness"] for r in rows), 5),
            "brightness_range": round(max(r["brightness"] for r in rows) - min(r["brightness"] for r in rows), 5),
            "distance_share_of_seed_noise": round(distance / floor, 4) if floor else None,
            "changes_the_image": bool(floor and distance / floor >= NOTHING_SHARE),
        }
    report = {
        "model": recorded_model_id(args.model, PIPELINES["climate"].default_weights),
        "sites": os.path.relpath(args.sites, REPO),
        "n_sites": len(sites),
        "size": size,
        "steps": args.steps,
        "guidance": args.guidance,
        "seed_noise_distance": round(floor, 5),
        "unchanged": {k: round(float(v.mean()), 5) for k, v in base_stats.items()},
        "fields": fields,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, json.dumps(report, indent=1))
    for field, result in fields.items():
        verdict = "changes the image" if result["changes_the_image"] else "CHANGES NOTHING"
        print(
            f"{field:14s} {verdict:18s} distance {result['distance_share_of_seed_noise']:.3f} of seed noise, "
            f"greenness range {result['greenness_range']:.4f}, brightness range {result['brightness_range']:.4f}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
