"""RGB + label (+ height) tiles of a manifest split, held in memory, served as seeded augmented batches.

For the label→RGB trainers (SPADE, ControlNet). As in ``layout_data.LayoutTiles``, batch ``(step, micro)`` is a pure
function of ``(seed, step, micro)``: tiles drawn with replacement, each with a random 90° rotation, horizontal flip
and crop, the same on all three rasters. A resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from synthgen.errors import ConfigError, ManifestError
from synthgen.schema import ClassScheme
from synthgen.training.layout_data import split_in_scheme


class PairedTiles:
    """All tiles of one split with both an ``rgb`` and a ``label`` raster; heights kept when the manifest has any.

    Batches are dicts: ``rgb`` float32 (B, 3, S, S) in [-1, 1], ``labels`` int64 (B, S, S) scheme codes,
    ``heights`` float32 (B, S, S) metres with NaN = unknown (all NaN when the manifest has no heights),
    ``index`` int64 (B,) tile indices into the split.
    """

    def __init__(self, manifest: Path, split: str, scheme: ClassScheme):
        dataset = split_in_scheme(manifest, split, scheme)
        rgbs, labels, heights = [], [], []
        for i in range(len(dataset)):
            sample = dataset[i]
            missing = [kind for kind in ("rgb", "label") if kind not in sample]
            if missing:
                raise ManifestError(f"{manifest}: tile '{sample['key']}' has no {' and no '.join(missing)} raster")
            rgbs.append((sample["rgb"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            labels.append(sample["label"].numpy().astype(np.uint8))
            heights.append(None if "height" not in sample else sample["height"][0].numpy())
        sizes = sorted({lab.shape for lab in labels})
        if len(sizes) != 1 or sizes[0][0] != sizes[0][1]:
            raise ManifestError(f"{manifest}: tiles must be square and all the same size, found {sizes}")
        scheme.check_values(np.stack(labels), str(manifest))
        self.keys = list(dataset.df["key"])
        self.rgb = np.stack(rgbs)
        self.labels = np.stack(labels)
        self.has_height = any(h is not None for h in heights)
        nan = np.full(sizes[0], np.nan, np.float32)
        self.heights = np.stack([nan if h is None else h for h in heights]) if self.has_height else None
        self.tile_size = sizes[0][0]

    def __len__(self) -> int:
        return len(self.labels)

    def _pack(self, rgb: list, labels: list, heights: list, index: list) -> dict:
        return {
            "rgb": torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float() / 127.5 - 1.0,
            "labels": torch.from_numpy(np.stack(labels).astype(np.int64)),
            "heights": torch.from_numpy(np.stack(heights).astype(np.float32)),
            "index": torch.tensor(index, dtype=torch.int64),
        }

    def _height(self, index: int) -> np.ndarray:
        if self.heights is None:
            return np.full((self.tile_size, self.tile_size), np.nan, np.float32)
        return self.heights[index]

    def batch(self, seed: int, step: int, micro: int, batch_size: int, size: int) -> dict:
        """The augmented batch of this step and micro-batch (see the class docstring for the keys)."""
        if size > self.tile_size:
            raise ConfigError(f"config 'size': {size} px is larger than the {self.tile_size} px tiles")
        rng = np.random.default_rng([seed, step, micro])
        out: tuple[list, list, list, list] = ([], [], [], [])
        for index in rng.integers(0, len(self), batch_size):
            k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
            y, x = rng.integers(0, self.tile_size - size + 1, 2)
            for dest, array in zip(out, (self.rgb[index], self.labels[index], self._height(index)), strict=False):
                a = np.rot90(array[y : y + size, x : x + size], k, axes=(0, 1))
                dest.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
            out[3].append(int(index))
        return self._pack(*out)

    def eval_batches(self, batch_size: int, size: int, limit: int | None = None) -> Iterator[dict]:
        """The first ``limit`` tiles (all by default) in order, top-left crop of ``size``, unaugmented."""
        stop = len(self) if limit is None else min(limit, len(self))
        for start in range(0, stop, batch_size):
            index = list(range(start, min(start + batch_size, stop)))
            yield self._pack(
                [self.rgb[i, :size, :size] for i in index],
                [self.labels[i, :size, :size] for i in index],
                [self._height(i)[:size, :size] for i in index],
                index,
            )
