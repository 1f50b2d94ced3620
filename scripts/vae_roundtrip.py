"""How much of a real tile survives the latent autoencoder a ControlNet renders through (`make bench-vae` ->
bench/vae_roundtrip.json)?

Every real val tile is encoded and decoded by the ``vae`` of an SD pipeline folder (by default the embedded ControlNet
default's). Reported: PSNR and SSIM of the round trip against the real tile, its colour saturation (mean over
pixels of the standard deviation across R, G, B) against the real tile's, and the label recovery of the round trip
(the embedded label-filter UNet, trained on real tiles, segments the decoded images; mIoU on them over mIoU on the
real images). No renderer that decodes through this autoencoder can recover labels better than its round trip
does, so this is the ceiling of issue 14's label-recovery bar (0.9) for ControlNet on this base.

    python scripts/vae_roundtrip.py --out bench/vae_roundtrip.json [--pipeline DIR] [--max-tiles N]
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

from synthgen.evaluation.rgb import iter_real_batches  # noqa: E402
from synthgen.pipelines.registry import PIPELINES  # noqa: E402
from synthgen.validation.label_filter import DEFAULT_FILTER_MODEL  # noqa: E402
from synthgen.validation.label_recovery import LabelRecovery  # noqa: E402


def roundtrip(vae, rgb: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W, 3) -> the same images encoded (posterior mean) and decoded by ``vae``, uint8."""
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    return ((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def saturation(rgb: np.ndarray) -> float:
    """Mean over pixels of the standard deviation across the three channels (grey images: 0)."""
    return float(rgb.astype(np.float32).std(-1).mean())


def main() -> None:
    """Round-trip the real val tiles, write the JSON."""
    from diffusers import AutoencoderKL
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_real_split_arguments(parser, PIPELINES["rgb-controlnet"].default_weights)
    parser.add_argument("--max-tiles", type=int, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.perf_counter()
    vae = AutoencoderKL.from_pretrained(args.pipeline / "vae").eval()
    recovery = LabelRecovery(DEFAULT_FILTER_MODEL)
    psnr, ssim = PeakSignalNoiseRatio(data_range=1.0), StructuralSimilarityIndexMeasure(data_range=1.0)
    real_sat, trip_sat, tiles = [], [], 0
    for batch in iter_real_batches(args.real, args.split, 16, args.max_tiles):
        real = batch["rgb"]
        decoded = roundtrip(vae, real)
        as_float = [torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255 for a in (decoded, real)]
        psnr.update(*as_float)
        ssim.update(*as_float)
        recovery.update(decoded, real, batch["labels"])
        real_sat.append(saturation(real) * len(real))
        trip_sat.append(saturation(decoded) * len(real))
        tiles += len(real)
    labels = recovery.report()
    result = {
        "command": command_line(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "vae": str(args.pipeline / "vae"),
        "real": f"{args.real}:{args.split}",
        "tiles": tiles,
        "psnr_db": round(float(psnr.compute()), 3),
        "ssim": round(float(ssim.compute()), 4),
        "saturation": {"real": round(sum(real_sat) / tiles, 3), "roundtrip": round(sum(trip_sat) / tiles, 3)},
        "label_recovery": {
            "seg_model": labels["seg_model"],
            "real_miou": labels["real"]["miou"],
            "roundtrip_miou": labels["rendered"]["miou"],
            "ratio": labels["miou_ratio"],
            "iou_per_class": {
                "real": labels["real"]["iou_per_class"],
                "roundtrip": labels["rendered"]["iou_per_class"],
            },
        },
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_report(args.out, result)
    shown = {k: result[k] for k in ("tiles", "psnr_db", "ssim", "saturation")}
    print(json.dumps({**shown, "label_recovery_ratio": result["label_recovery"]["ratio"]}))


if __name__ == "__main__":
    main()
