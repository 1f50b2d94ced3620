"""How much layout structure survives the land-cover generator's autoencoder (`make bench-layout-ae` ->
bench/layout_roundtrip.json)?

Every real val label map (and height) is encoded and decoded by the ``autoencoder`` of a land-cover pipeline folder
(by default the embedded one); the decoded maps (argmax of the class logits, nodata kept where the real map has
it) are compared with the real ones by the same layout metrics as ``synthgen evaluate layout``: class JS,
component-size KS, adjacency distance, shape measures (building rectangularity, road width, elongation,
continuity), plus the pixel accuracy. A diffusion model sampling in this latent space cannot make shapes the
decoder cannot draw, so these numbers are the ceiling of the generator's layout fidelity.

    python scripts/layout_roundtrip.py --out bench/layout_roundtrip.json [--pipeline DIR]
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
from synthgen.models.layout_autoencoder import LayoutAutoencoder  # noqa: E402
from synthgen.pipelines.registry import PIPELINES  # noqa: E402
from synthgen.schema import load_scheme  # noqa: E402


def roundtrip(ae: LayoutAutoencoder, label: np.ndarray, height: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W) label map (scheme codes) and its height through the autoencoder: (decoded codes, decoded height
    or None); nodata pixels of the input stay nodata."""
    codes = torch.from_numpy(label.astype(np.int64))[None]
    h = torch.from_numpy(height)[None] if ae.config.with_height and height is not None else None
    with torch.no_grad():
        logits, decoded_height = ae.decode(ae.encode(ae.one_hot(codes), h))
    out = (logits.argmax(1) + 1)[0].numpy().astype(label.dtype)
    out[label == 0] = 0
    return out, None if decoded_height is None else decoded_height[0].numpy()


def main() -> None:
    """Round-trip the real val label maps, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_real_split_arguments(parser, PIPELINES["landcover"].default_weights)
    args = parser.parse_args()
    start = time.perf_counter()
    ae = LayoutAutoencoder.from_pretrained(args.pipeline / "autoencoder").eval()
    df = label_rows(args.real, args.split)
    scheme = load_scheme(df["scheme"].iloc[0])
    real, decoded = LayoutAccumulator(scheme), LayoutAccumulator(scheme)
    agree = []
    for sample in iter_samples(df):
        out, height = roundtrip(ae, sample["label"], sample["height"])
        labelled = sample["label"] > 0
        agree.append(float((out == sample["label"])[labelled].mean()) if labelled.any() else np.nan)
        real.update(sample["label"], sample["height"], where=sample["key"])
        decoded.update(out, height, where=sample["key"])
    report = compare_layouts(real, decoded)
    result = {
        "command": command_line(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "autoencoder": str(args.pipeline / "autoencoder"),
        "real": f"{args.real}:{args.split}",
        "tiles": len(agree),
        "pixel_accuracy": round(float(np.nanmean(agree)), 4),
        "class_js": report["class_frequency"]["js_divergence"],
        "component_ks": report["components"]["mean_ks"],
        "adjacency_distance": report["adjacency"]["distance"],
        "shape": report["shape"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_report(args.out, result)
    shown = ("tiles", "pixel_accuracy", "class_js", "component_ks", "adjacency_distance")
    print(json.dumps({k: result[k] for k in shown}, default=float))


if __name__ == "__main__":
    main()
