"""Label (+ height) tiles of a manifest split, held in memory, served as seeded augmented batches.

Batch ``(step, micro)`` is a pure function of ``(seed, step, micro)``: tiles drawn with replacement, each with a
random 90° rotation, horizontal flip and crop. A resumed run therefore sees exactly the batches an uninterrupted
run would, without replaying a data loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from synthgen.errors import ConfigError, ManifestError
from synthgen.io.manifest import TileDataset
from synthgen.schema import ClassScheme


def split_in_scheme(manifest: Path, split: str, scheme: ClassScheme) -> TileDataset:
    """The tiles of one split of ``manifest``; labels in another scheme than ``scheme`` are a ManifestError."""
    dataset = TileDataset(manifest, split=split)
    schemes = sorted(set(dataset.df["scheme"]))
    if schemes != [scheme.name]:
        raise ManifestError(
            f"{manifest}: labels are in scheme(s) {', '.join(schemes)}, the model wants '{scheme.name}'"
        )
    return dataset


class LayoutTiles:
    """All label (and height) tiles of one split; tiles without a label raster are refused."""

    def __init__(self, manifest: Path, split: str, scheme: ClassScheme):
        dataset = split_in_scheme(manifest, split, scheme)
        labels, heights = [], []
        for i in range(len(dataset)):
            sample = dataset[i]
            if "label" not in sample:
                raise ManifestError(f"{manifest}: tile '{sample['key']}' has no label raster")
            labels.append(sample["label"].numpy().astype(np.uint8))
            h = sample.get("height")
            heights.append(np.full(labels[-1].shape, np.nan, np.float32) if h is None else h[0].numpy())
        sizes = sorted({lab.shape for lab in labels})
        if len(sizes) != 1 or sizes[0][0] != sizes[0][1]:
            raise ManifestError(f"{manifest}: tiles must be square and all the same size, found {sizes}")
        scheme.check_values(np.stack(labels), str(manifest))
        self.labels = np.stack(labels)
        self.heights = np.stack(heights)
        self.tile_size = sizes[0][0]

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, seed: int, step: int, micro: int, batch_size: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels int64 (B, size, size), heights float32 (B, size, size)) for this step and micro-batch."""
        if size > self.tile_size:
            raise ConfigError(f"config 'size': {size} px is larger than the {self.tile_size} px tiles")
        rng = np.random.default_rng([seed, step, micro])
        labels, heights = [], []
        for index in rng.integers(0, len(self), batch_size):
            k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
            y, x = rng.integers(0, self.tile_size - size + 1, 2)
            pair = []
            for array in (self.labels[index], self.heights[index]):
                a = np.rot90(array[y : y + size, x : x + size], k)
                pair.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
            labels.append(pair[0])
            heights.append(pair[1])
        return torch.from_numpy(np.stack(labels).astype(np.int64)), torch.from_numpy(np.stack(heights))

    def eval_batches(self, batch_size: int, size: int):
        """Yield the tiles in order (top-left crop of ``size``), ``batch_size`` at a time, unaugmented."""
        for start in range(0, len(self), batch_size):
            labels = self.labels[start : start + batch_size, :size, :size].astype(np.int64)
            heights = self.heights[start : start + batch_size, :size, :size]
            yield torch.from_numpy(labels), torch.from_numpy(np.ascontiguousarray(heights))


def confusion_metrics(confusion: np.ndarray) -> dict:
    """Pixel accuracy, mIoU (over classes present in truth or prediction) and IoU per class from a K x K matrix."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    total = confusion.sum()
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "iou_per_class": [None if np.isnan(v) else float(v) for v in iou],
    }
