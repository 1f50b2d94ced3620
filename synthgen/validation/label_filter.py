"""The label-consistency filter (``synthgen filter``): keep the generated tiles whose image shows their label.

A segmentation model trained on real tiles (a ``SegHeightModel`` folder of ``synthgen validate``) segments every
tile's RGB; the tile's score is the mIoU between that prediction and the tile's own label, over the classes present
in either (pixels whose label is nodata left out). EarthSynth and AeroGen filter their generated samples this way.
Two manifests come out, both written atomically, with their shard paths re-based on their own folder: the scored
one (every row, the score in ``meta`` as ``label_agreement`` with the model's path as ``label_filter_model``) and
the filtered one (the rows scoring at least ``threshold``). The shards themselves are not touched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from synthgen.errors import ConfigError, ManifestError
from synthgen.io.manifest import write_rebased
from synthgen.pipelines.registry import WEIGHTS_DIR
from synthgen.validation.data import IGNORE_INDEX, SetSpec, TileSet, TileStream
from synthgen.validation.evaluate import predict, same_size_batches
from synthgen.validation.label_recovery import load_segmentation_model

SCORE_KEY = "label_agreement"
DEFAULT_FILTER_MODEL = WEIGHTS_DIR / "label_filter"
MAKE_TARGET = "weights-label-filter"


def filter_model(model: str | Path | None, option: str) -> Path:
    """The scoring model folder: ``model``, or the embedded default when None (a UNet trained on the real Dubai
    train split); a default that is not trained yet, or a folder that is not there, is a one-line error."""
    if model is None:
        if not (DEFAULT_FILTER_MODEL / "config.json").is_file():
            raise ConfigError(
                f"the embedded label-filter model synthgen/weights/{DEFAULT_FILTER_MODEL.name} is not trained yet: "
                f"run `make {MAKE_TARGET}`, or give {option} (a model folder of synthgen validate: <run>/model)"
            )
        return DEFAULT_FILTER_MODEL
    if not Path(model).is_dir():
        raise ConfigError(f"{option} {model}: model folder not found (a model folder of synthgen validate)")
    return Path(model)


def tile_agreement(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> np.ndarray:
    """Per tile of (B, H, W) class-index maps (truth IGNORE_INDEX where nodata): the mIoU of ``pred`` against
    ``truth`` over the classes present in either; NaN for a tile with no labelled pixel."""
    scores = []
    for p, t in zip(pred, truth, strict=True):
        keep = t != IGNORE_INDEX
        if not keep.any():
            scores.append(float("nan"))
            continue
        confusion = torch.bincount(t[keep] * num_classes + p[keep], minlength=num_classes**2)
        confusion = confusion.reshape(num_classes, num_classes).double()
        tp = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - tp
        present = union > 0
        scores.append(float((tp[present] / union[present]).mean()))
    return np.asarray(scores)


def score_tiles(
    manifest: Path,
    model_dir: Path,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
    split: str = "all",
):
    """The label agreement of every tile of ``manifest`` (of ``split``; manifest order) under the model in
    ``model_dir``, and the tiles' keys."""
    model, classes = load_segmentation_model(model_dir)
    tiles = TileSet.load(SetSpec("filtered", ((str(manifest), split),)), "test")
    missing = [k for k, m in zip(tiles.df["key"], tiles.df["members"], strict=True) if f"{k}.rgb.tif" not in m]
    if missing:
        raise ManifestError(f"{manifest}: tile '{missing[0]}' has no rgb raster to check its label against")
    scores = []
    for group in same_size_batches(TileStream(tiles, classes.scheme, train=False), batch_size):
        probs = predict(model, torch.stack([s["rgb"] for s in group]))["probs"]
        truth = classes.to_index(torch.stack([s["label"] for s in group]))
        scores.extend(tile_agreement(probs.argmax(1), truth, len(classes)).tolist())
        if progress:
            progress(len(group))
    return np.asarray(scores), tiles.df["key"].tolist()


def filter_manifest(
    manifest: Path,
    model_dir: Path,
    threshold: float,
    out: Path,
    scored: Path,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
    split: str = "all",
) -> dict:
    """Score every tile of ``manifest`` (of ``split``), write the ``scored`` and the filtered (``out``) manifests;
    returns a summary (tiles, kept, threshold, score quantiles, paths)."""
    manifest, out, scored = Path(manifest), Path(out), Path(scored)
    if not 0 <= threshold <= 1:
        raise ConfigError(f"--threshold {threshold} must be in [0, 1] (a per-tile mIoU)")
    if manifest.resolve() in (out.resolve(), scored.resolve()):
        raise ConfigError(f"--out / --scored {manifest}: would overwrite the input manifest (give other paths)")
    scores, keys = score_tiles(manifest, model_dir, batch_size, progress, split)
    by_key = dict(zip(keys, scores, strict=True))
    records = [rec for rec in pq.read_table(manifest).to_pylist() if rec["key"] in by_key]
    for rec in records:
        meta = json.loads(rec["meta"] or "{}")
        score = by_key[rec["key"]]
        meta[SCORE_KEY] = None if np.isnan(score) else round(float(score), 5)
        meta["label_filter_model"] = str(model_dir)
        rec["meta"] = json.dumps(meta, sort_keys=True)
    kept = [rec for rec in records if not np.isnan(by_key[rec["key"]]) and by_key[rec["key"]] >= threshold]
    for path in (out, scored):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_rebased(manifest, records, scored)
    write_rebased(manifest, kept, out)
    finite = scores[np.isfinite(scores)]
    quantiles = np.quantile(finite, [0.1, 0.5, 0.9]).round(4).tolist() if len(finite) else [None] * 3
    return {
        "manifest": str(manifest),
        "model": str(model_dir),
        "threshold": threshold,
        "tiles": len(records),
        "kept": len(kept),
        "score_p10_p50_p90": quantiles,
        "scored": str(scored),
        "filtered": str(out),
    }
