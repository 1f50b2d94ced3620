"""RGB (+ label + height) tiles of a manifest split, held in memory, served as seeded augmented batches.

The RGB counterpart of ``layout_data.LayoutTiles`` for the SD base and ControlNet trainings: batch ``(step,
micro)`` is a pure function of ``(seed, step, micro)`` (tiles drawn with replacement, a random 90° rotation,
horizontal flip and crop, the same for the image, its label and its height), so a resumed run sees exactly the
batches an uninterrupted one would. Each batch carries the composition prompt of every crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthgen.errors import ConfigError, ManifestError
from synthgen.io.manifest import TileDataset
from synthgen.prompts import composition_prompt
from synthgen.schema import ClassScheme


@dataclass
class RGBBatch:
    """``rgb`` float32 (B, 3, S, S) in [-1, 1], ``labels`` int64 (B, S, S), ``heights`` float32 (B, S, S) (NaN =
    unknown), ``prompts`` the composition prompt of each crop."""

    rgb: torch.Tensor
    labels: torch.Tensor
    heights: torch.Tensor
    prompts: list[str]


class RGBTiles:
    """All tiles of one split that have an RGB raster; ``need_labels`` refuses tiles without a label raster."""

    def __init__(self, manifest: Path, split: str, scheme: ClassScheme, need_labels: bool = True):
        dataset = TileDataset(manifest, split=split)
        schemes = sorted(set(dataset.df["scheme"]) - {""})
        if need_labels and schemes != [scheme.name]:
            raise ManifestError(
                f"{manifest}: labels are in scheme(s) {', '.join(schemes) or 'none'}, the model wants '{scheme.name}'"
            )
        rgbs, labels, heights = [], [], []
        for i in range(len(dataset)):
            sample = dataset[i]
            if "rgb" not in sample:
                raise ManifestError(f"{manifest}: tile '{sample['key']}' has no rgb raster")
            rgb = (sample["rgb"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            if "label" not in sample and need_labels:
                raise ManifestError(f"{manifest}: tile '{sample['key']}' has no label raster")
            label = sample["label"].numpy().astype(np.uint8) if "label" in sample else np.zeros(rgb.shape[:2], np.uint8)
            h = sample.get("height")
            rgbs.append(rgb)
            labels.append(label)
            heights.append(np.full(label.shape, np.nan, np.float32) if h is None else h[0].numpy())
        if not rgbs:
            raise ManifestError(f"{manifest}: split '{split}' has no tiles")
        sizes = sorted({r.shape[:2] for r in rgbs})
        if len(sizes) != 1 or sizes[0][0] != sizes[0][1]:
            raise ManifestError(f"{manifest}: tiles must be square and all the same size, found {sizes}")
        self.labels = np.stack(labels)
        scheme.check_values(self.labels, str(manifest))
        self.rgb = np.stack(rgbs)
        self.heights = np.stack(heights)
        self.tile_size = sizes[0][0]
        self.scheme = scheme

    def __len__(self) -> int:
        return len(self.rgb)

    def prompts(self) -> list[str]:
        """The composition prompt of every whole tile (the tokenizer's training text)."""
        return [composition_prompt(label, self.scheme) for label in self.labels]

    def _pack(self, rgb: list, labels: list, heights: list) -> RGBBatch:
        prompts = [composition_prompt(label, self.scheme) for label in labels]
        images = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return RGBBatch(
            images.contiguous(),
            torch.from_numpy(np.stack(labels).astype(np.int64)),
            torch.from_numpy(np.stack(heights)),
            prompts,
        )

    def batch(self, seed: int, step: int, micro: int, batch_size: int, size: int) -> RGBBatch:
        """The augmented batch of this step and micro-batch, crops of ``size`` px."""
        if size > self.tile_size:
            raise ConfigError(f"config 'size': {size} px is larger than the {self.tile_size} px tiles")
        rng = np.random.default_rng([seed, step, micro])
        out: tuple[list, list, list] = ([], [], [])
        for index in rng.integers(0, len(self), batch_size):
            k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
            y, x = rng.integers(0, self.tile_size - size + 1, 2)
            for array, dest in zip((self.rgb[index], self.labels[index], self.heights[index]), out, strict=True):
                a = np.rot90(array[y : y + size, x : x + size], k)
                dest.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
        return self._pack(*out)

    def spread(self, n: int, size: int) -> RGBBatch:
        """``n`` tiles evenly spaced over the split, top-left crops of ``size`` px, unaugmented (validation)."""
        index = np.unique(np.linspace(0, len(self) - 1, min(n, len(self))).round().astype(int))
        crop = (index, slice(0, size), slice(0, size))
        return self._pack(list(self.rgb[crop]), list(self.labels[crop]), list(self.heights[crop]))
