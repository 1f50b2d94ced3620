"""The one tile reader of the training loops: the tiles of one split of a manifest, read once into arrays and served
as seeded augmented batches.

Batch ``(step, micro)`` is a pure function of ``(seed, step, micro)``: tiles drawn with replacement, each with a
random 90° rotation, horizontal flip and crop, the same for every raster of the tile. A resumed run therefore sees
exactly the batches an uninterrupted run would, without replaying a data loader. ``Tiles`` reads and augments; its
three views pack a batch the way their loops take it: ``LayoutTiles`` (label + height: the land-cover trainer),
``PairedTiles`` (rgb + label + height as a dict: SPADE) and ``RGBTiles`` (rgb + label + height with the composition
prompt of every crop: the SD base and ControlNet trainers). ``mirrored_draw`` is the seeded draw of the SD3 data
(``sd3_data.py``), whose tiles are resampled images mirrored at most.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthgen.errors import ConfigError, ManifestError
from synthgen.io.manifest import TileDataset
from synthgen.prompts import composition_prompt
from synthgen.schema import ClassScheme


def split_in_scheme(manifest: Path, split: str, scheme: ClassScheme, unlabelled: bool = False) -> TileDataset:
    """The tiles of one split of ``manifest``; labels in another scheme than ``scheme`` are a ManifestError (with
    ``unlabelled``, rows of no scheme are left out of that check: their tiles are refused one by one)."""
    dataset = TileDataset(manifest, split=split)
    schemes = sorted(set(dataset.df["scheme"]) - ({""} if unlabelled else set()))
    if schemes != [scheme.name]:
        raise ManifestError(
            f"{manifest}: labels are in scheme(s) {', '.join(schemes) or 'none'}, the model wants '{scheme.name}'"
        )
    return dataset


def mirrored_draw(seed: int, step: int, micro: int, n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` indices below ``n`` drawn with replacement and a mirror flag (0 or 1) each, for this step and
    micro-batch."""
    rng = np.random.default_rng([seed, step, micro])
    return rng.integers(0, n, batch_size), rng.integers(0, 2, batch_size)


class Tiles:
    """All tiles of one split: ``labels`` uint8 (N, S, S) scheme codes, ``heights`` float32 (N, S, S) metres (NaN =
    unknown; ``has_height``: whether any tile has a height raster), ``rgb`` uint8 (N, S, S, 3) when read, ``keys``.

    ``required`` lists groups of rasters every tile must have, checked in order; a tile that lacks rasters of a group
    is refused naming them all (``has no rgb and no label raster``). The rgb rasters are read when a group names them.
    """

    required: tuple[tuple[str, ...], ...] = (("label",),)
    unlabelled = False  # see split_in_scheme

    def __init__(self, manifest: Path, split: str, scheme: ClassScheme):
        dataset = split_in_scheme(manifest, split, scheme, self.unlabelled)
        with_rgb = any("rgb" in group for group in self.required)
        rgbs, labels, heights = [], [], []
        for i in range(len(dataset)):
            sample = dataset[i]
            for group in self.required:
                missing = [kind for kind in group if kind not in sample]
                if missing:
                    raise ManifestError(f"{manifest}: tile '{sample['key']}' has no {' and no '.join(missing)} raster")
            if with_rgb:
                rgbs.append((sample["rgb"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            labels.append(sample["label"].numpy().astype(np.uint8))
            heights.append(sample["height"][0].numpy() if "height" in sample else None)
        sizes = sorted({lab.shape for lab in labels})
        if len(sizes) != 1 or sizes[0][0] != sizes[0][1]:
            raise ManifestError(f"{manifest}: tiles must be square and all the same size, found {sizes}")
        self.labels = np.stack(labels)
        scheme.check_values(self.labels, str(manifest))
        self.rgb = np.stack(rgbs) if with_rgb else None
        self.has_height = any(h is not None for h in heights)
        self.heights = np.stack([np.full(sizes[0], np.nan, np.float32) if h is None else h for h in heights])
        self.keys = list(dataset.df["key"])
        self.tile_size = sizes[0][0]
        self.scheme = scheme

    def __len__(self) -> int:
        return len(self.labels)

    def augmented(self, seed: int, step: int, micro: int, batch_size: int, size: int, rasters: tuple[str, ...]):
        """(tile indices, one list of crops per name in ``rasters``: ``rgb``, ``labels``, ``heights``) of this step
        and micro-batch: each tile rotated, flipped and cropped to ``size`` px alike in every raster."""
        if size > self.tile_size:
            raise ConfigError(f"config 'size': {size} px is larger than the {self.tile_size} px tiles")
        rng = np.random.default_rng([seed, step, micro])
        indices: list[int] = []
        crops: tuple[list, ...] = tuple([] for _ in rasters)
        for index in rng.integers(0, len(self), batch_size):
            k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
            y, x = rng.integers(0, self.tile_size - size + 1, 2)
            for name, dest in zip(rasters, crops, strict=True):
                a = np.rot90(getattr(self, name)[index][y : y + size, x : x + size], k)
                dest.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
            indices.append(int(index))
        return indices, crops


class LayoutTiles(Tiles):
    """Label (and height) tiles; tiles without a label raster are refused."""

    def batch(self, seed: int, step: int, micro: int, batch_size: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels int64 (B, size, size), heights float32 (B, size, size)) for this step and micro-batch."""
        _, (labels, heights) = self.augmented(seed, step, micro, batch_size, size, ("labels", "heights"))
        return torch.from_numpy(np.stack(labels).astype(np.int64)), torch.from_numpy(np.stack(heights))

    def eval_batches(self, batch_size: int, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the tiles in order (top-left crop of ``size``), ``batch_size`` at a time, unaugmented."""
        for start in range(0, len(self), batch_size):
            labels = self.labels[start : start + batch_size, :size, :size].astype(np.int64)
            heights = self.heights[start : start + batch_size, :size, :size]
            yield torch.from_numpy(labels), torch.from_numpy(np.ascontiguousarray(heights))


class PairedTiles(Tiles):
    """Tiles with both an ``rgb`` and a ``label`` raster, for the label→RGB GAN.

    Batches are dicts: ``rgb`` float32 (B, 3, S, S) in [-1, 1], ``labels`` int64 (B, S, S) scheme codes,
    ``heights`` float32 (B, S, S) metres with NaN = unknown (all NaN when the manifest has no heights),
    ``index`` int64 (B,) tile indices into the split.
    """

    required = (("rgb", "label"),)

    @staticmethod
    def _pack(rgb: list, labels: list, heights: list, index: list) -> dict:
        return {
            "rgb": torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float() / 127.5 - 1.0,
            "labels": torch.from_numpy(np.stack(labels).astype(np.int64)),
            "heights": torch.from_numpy(np.stack(heights).astype(np.float32)),
            "index": torch.tensor(index, dtype=torch.int64),
        }

    def batch(self, seed: int, step: int, micro: int, batch_size: int, size: int) -> dict:
        """The augmented batch of this step and micro-batch (see the class docstring for the keys)."""
        index, crops = self.augmented(seed, step, micro, batch_size, size, ("rgb", "labels", "heights"))
        return self._pack(*crops, index)

    def eval_batches(self, batch_size: int, size: int, limit: int | None = None) -> Iterator[dict]:
        """The first ``limit`` tiles (all by default) in order, top-left crop of ``size``, unaugmented."""
        stop = len(self) if limit is None else min(limit, len(self))
        for start in range(0, stop, batch_size):
            index = list(range(start, min(start + batch_size, stop)))
            crop = (index, slice(0, size), slice(0, size))
            yield self._pack(list(self.rgb[crop]), list(self.labels[crop]), list(self.heights[crop]), index)


@dataclass
class RGBBatch:
    """``rgb`` float32 (B, 3, S, S) in [-1, 1], ``labels`` int64 (B, S, S), ``heights`` float32 (B, S, S) (NaN =
    unknown), ``prompts`` the composition prompt of each crop."""

    rgb: torch.Tensor
    labels: torch.Tensor
    heights: torch.Tensor
    prompts: list[str]


class RGBTiles(Tiles):
    """Tiles with an RGB and a label raster (checked in that order), each crop with its composition prompt, for
    the SD base and ControlNet trainings."""

    required = (("rgb",), ("label",))
    unlabelled = True

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
        _, crops = self.augmented(seed, step, micro, batch_size, size, ("rgb", "labels", "heights"))
        return self._pack(*crops)

    def spread(self, n: int, size: int) -> RGBBatch:
        """``n`` tiles evenly spaced over the split, top-left crops of ``size`` px, unaugmented (validation)."""
        index = np.unique(np.linspace(0, len(self) - 1, min(n, len(self))).round().astype(int))
        crop = (index, slice(0, size), slice(0, size))
        return self._pack(list(self.rgb[crop]), list(self.labels[crop]), list(self.heights[crop]))


def train_and_val(reader: type[Tiles], manifest: Path, scheme: ClassScheme, val_missing_only: bool = False):
    """(train tiles, val tiles or None) of ``manifest`` read by ``reader``. The val split is None when it cannot be
    read (with ``val_missing_only``: only when the manifest has no val split; any other fault of it is raised)."""
    train = reader(manifest, "train", scheme)
    try:
        return train, reader(manifest, "val", scheme)
    except ManifestError as exc:
        if val_missing_only and "no tiles in split" not in str(exc):
            raise
        return train, None
