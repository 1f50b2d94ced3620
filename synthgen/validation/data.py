"""Tile sets over manifests and a streaming torch IterableDataset over their shards.

A *set* is ``NAME=<manifest>[:split][,<manifest>[:split]...]``: the rows of one or more manifests, each cut to a
split. Tiles are read shard by shard (``ShardReader``), never loaded whole into memory. Labels are mapped from each
row's scheme into one common scheme (``common_scheme``); a set that cannot be mapped is refused.

``TileStream`` serves training samples as a pure function of ``(seed, position)``: epoch ``e`` visits the shards in
a seeded order and the rows of each group of shards in a seeded order; sample ``position`` gets its own seeded
crop, 90° rotation, flip and colour jitter. Batch ``b`` is positions ``b*B .. b*B+B-1`` and goes to process
``b % world`` (and within it to DataLoader worker ``b // world % workers``), so a resumed run skips the rows it has
seen without decoding them and sees exactly the batches an uninterrupted run would, whatever the worker count.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import IterableDataset, get_worker_info

from synthgen.errors import ConfigError, ManifestError, SchemeError, allowed
from synthgen.io.geotiff import decode_array
from synthgen.io.manifest import read_manifest, read_member, shard_path
from synthgen.io.shards import ShardReader
from synthgen.schema import DEFAULT_SCHEME, ClassScheme, load_scheme, map_labels

ALL_SPLITS = "all"
IGNORE_INDEX = -1
SHUFFLE_SHARDS = 4


@dataclass(frozen=True)
class SetSpec:
    """A named set: (manifest path, split or None for the role's default) pairs."""

    name: str
    parts: tuple[tuple[str, str | None], ...]

    def __str__(self) -> str:
        return f"{self.name}=" + ",".join(m if s is None else f"{m}:{s}" for m, s in self.parts)


def parse_set(text: str, option: str = "--train") -> SetSpec:
    """Parse ``NAME=<manifest>[:split][,<manifest>[:split]...]``; a malformed spec is a one-line ConfigError."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name or not rest.strip():
        raise ConfigError(f"{option} '{text}': expected NAME=<manifest>[:split][,<manifest>...]")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{option} '{text}': set name '{name}' may hold only letters, digits, '-' and '_'")
    parts = []
    for item in rest.split(","):
        item = item.strip()
        if not item:
            raise ConfigError(f"{option} '{text}': empty manifest in the list")
        path, colon, split = item.rpartition(":")
        if colon and split and "/" not in split and "." not in split:
            parts.append((path, split))
        else:
            parts.append((item, None))
    return SetSpec(name, tuple(parts))


def _member(row, kind: str) -> str | None:
    name = f"{row['key']}.{kind}.tif"
    return name if name in set(row["members"]) else None


class TileSet:
    """The rows of a set (manifests cut to splits), with absolute shard paths; nothing is decoded here.

    ``role`` picks the default split: ``train`` for train sets, ``val`` for test sets, when the manifest has one.
    """

    def __init__(self, name: str, df: pd.DataFrame, parts: list[dict]):
        self.name = name
        self.df = df.reset_index(drop=True)
        self.parts = parts

    @classmethod
    def load(cls, spec: SetSpec, role: str) -> TileSet:
        """Read the manifests of ``spec``; a missing or empty manifest or split is a ManifestError."""
        frames, parts = [], []
        for manifest, split in spec.parts:
            df = read_manifest(Path(manifest))
            if df.empty:
                raise ManifestError(f"{manifest}: manifest holds no tiles (set '{spec.name}')")
            splits = sorted(set(df["split"]))
            shown = allowed(s or "''" for s in splits)
            if split is None:
                default = "train" if role == "train" else "val"
                split = default if default in splits else ALL_SPLITS
            if split != ALL_SPLITS:
                if split not in splits:
                    raise ManifestError(
                        f"{manifest}: no tiles in split '{split}' (set '{spec.name}'; splits present: "
                        f"{shown}, or 'all')"
                    )
                df = df[df["split"] == split]
            df = df.copy()
            df["shard_path"] = [str(shard_path(df, s)) for s in df["shard"]]
            df["manifest"] = str(manifest)
            frames.append(df)
            parts.append({"manifest": str(manifest), "split": split, "tiles": len(df)})
        df = pd.concat(frames, ignore_index=True)
        if df["key"].duplicated().any():
            dup = df.loc[df["key"].duplicated(), "key"].iloc[0]
            raise ManifestError(f"set '{spec.name}': tile key '{dup}' appears twice (the same manifest given twice?)")
        return cls(spec.name, df, parts)

    def __len__(self) -> int:
        return len(self.df)

    @property
    def schemes(self) -> list[str]:
        """Class schemes of the set's labelled rows."""
        return sorted(set(self.df.loc[self.has("label"), "scheme"]))

    def has(self, kind: str) -> np.ndarray:
        """Boolean per row: the tile has a raster of this kind (height: and some valid pixels)."""
        present = np.array([_member(row, kind) is not None for _, row in self.df.iterrows()], bool)
        if kind == "height":
            present &= self.df["height_valid_frac"].fillna(0).to_numpy() > 0
        return present

    def min_size(self) -> int:
        """Smallest tile side in the set."""
        return int(min(self.df["width_px"].min(), self.df["height_px"].min()))

    def subset(self, fraction: float, seed: int) -> TileSet:
        """The first ``ceil(fraction * n)`` tiles in a seeded order of keys (nested: a smaller share is inside)."""
        order = sorted(range(len(self)), key=lambda i: hashlib.sha256(f"{seed}:{self.df['key'][i]}".encode()).digest())
        keep = sorted(order[: max(1, int(np.ceil(fraction * len(self))))])
        return TileSet(f"{self.name}@{fraction:g}", self.df.iloc[keep], self.parts)

    def take(self, n: int | None) -> TileSet:
        """At most ``n`` tiles, evenly spaced (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        keep = np.linspace(0, len(self) - 1, n).round().astype(int)
        return TileSet(self.name, self.df.iloc[keep], self.parts)

    @staticmethod
    def concat(sets: list[TileSet], name: str) -> TileSet:
        """One set holding the rows of several."""
        df = pd.concat([s.df for s in sets], ignore_index=True)
        return TileSet(name, df, [p for s in sets for p in s.parts])

    def describe(self) -> dict:
        """What the report says about the set."""
        return {
            "name": self.name,
            "parts": self.parts,
            "tiles": len(self),
            "schemes": sorted(set(self.df["scheme"])),
            "tile_sizes": sorted({f"{w}x{h}" for w, h in zip(self.df["width_px"], self.df["height_px"], strict=True)}),
            "with_label": int(self.has("label").sum()),
            "with_height": int(self.has("height").sum()),
        }


def check_set(tiles: TileSet, role: str, need_label: bool, need_height: bool) -> None:
    """Refuse a set that cannot serve its role: no rgb, a test set without labels, a height task without height."""
    where = f"{role} set '{tiles.name}' ({', '.join(p['manifest'] for p in tiles.parts)})"
    rgb = tiles.has("rgb")
    if not rgb.all():
        key = tiles.df["key"][int(np.argmin(rgb))]
        raise ManifestError(f"{where}: tile '{key}' has no rgb raster (models here learn from rgb tiles)")
    if need_label:
        label = tiles.has("label")
        if not label.any():
            raise ManifestError(f"{where}: no tile has a label raster (a {role} set for task 'seg' needs labels)")
        if role == "test" and not label.all():
            key = tiles.df["key"][int(np.argmin(label))]
            raise ManifestError(f"{where}: tile '{key}' has no label raster (every test tile needs one)")
    if need_height and not tiles.has("height").any():
        raise ManifestError(f"{where}: no tile has height (task 'height' needs height rasters; use --task seg)")


def common_scheme(sets: list[TileSet], requested: str | None) -> ClassScheme:
    """The scheme every set's labels map into: ``requested``, else a scheme of the sets, else ``oem8``."""
    present: dict[str, list[str]] = {}
    for tiles in sets:
        for name in tiles.schemes:
            present.setdefault(name, []).append(tiles.name)
    loaded = {name: load_scheme(name) for name in present}
    candidates = [requested] if requested else [*present, DEFAULT_SCHEME]
    failure = ""
    for candidate in dict.fromkeys(candidates):
        target = load_scheme(candidate)
        bad = [s for n, s in loaded.items() if n != target.name and target.name not in s.mappings]
        if not bad:
            return target
        if not failure:
            s = bad[0]
            failure = (
                f"set(s) {', '.join(present[s.name])} in scheme '{s.name}' cannot be mapped to '{target.name}' "
                f"('{s.name}' maps to: {allowed(s.mappings) or 'none'})"
            )
    raise SchemeError(f"class schemes cannot be reconciled: {failure}; give --scheme one that every set maps to")


class ClassIndex:
    """Scheme codes <-> model class indices: the scheme's valid classes in code order; nodata is IGNORE_INDEX."""

    def __init__(self, scheme: ClassScheme):
        self.scheme = scheme
        self.codes = [c.code for c in scheme.valid_classes]
        self.names = [c.name for c in scheme.valid_classes]
        lut = np.full(256, IGNORE_INDEX, np.int64)
        lut[self.codes] = np.arange(len(self.codes))
        self.code_to_index = torch.from_numpy(lut)
        self.index_to_code = torch.tensor(self.codes, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.codes)

    def to_index(self, codes: torch.Tensor) -> torch.Tensor:
        """Class indices (IGNORE_INDEX for nodata) of a code tensor."""
        return self.code_to_index.to(codes.device)[codes.long()]

    def to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Scheme codes of a class-index tensor."""
        return self.index_to_code.to(indices.device)[indices.long()]


def colour_jitter(rgb: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random brightness, contrast and saturation (factors in 1 ± strength) of an HxWx3 float image in [0, 1]."""
    if strength <= 0:
        return rgb
    b, c, s = rng.uniform(1 - strength, 1 + strength, 3)
    out = rgb * b
    out = (out - out.mean()) * c + out.mean()
    gray = out.mean(axis=2, keepdims=True)
    out = gray + (out - gray) * s
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class TileStream(IterableDataset):
    """Samples ``{key, rgb 3xHxW float [0,1], label HxW int64 codes (0 = nodata), height 1xHxW float (NaN)}``.

    ``train=True``: endless, seeded order and augmentation, ``crop`` px crops, starting at position ``start``;
    ``train=False``: one pass in manifest order, whole tiles, no augmentation. ``with_labels=False`` leaves
    labels out (all nodata), for unlabelled target tiles.
    """

    def __init__(
        self,
        tiles: TileSet,
        scheme: ClassScheme,
        *,
        train: bool,
        crop: int | None = None,
        batch_size: int = 1,
        seed: int = 0,
        start: int = 0,
        jitter: float = 0.0,
        rank: int = 0,
        world: int = 1,
        with_labels: bool = True,
    ):
        super().__init__()
        if train and crop is not None and crop > tiles.min_size():
            raise ConfigError(
                f"config 'crop': {crop} px is larger than the smallest tile of set '{tiles.name}' "
                f"({tiles.min_size()} px; allowed: crop <= {tiles.min_size()})"
            )
        self.tiles, self.scheme, self.train, self.crop = tiles, scheme, train, crop
        self.batch_size, self.seed, self.start, self.jitter = batch_size, seed, start, jitter
        self.rank, self.world, self.with_labels = rank, world, with_labels
        labelled = tiles.df["scheme"][tiles.has("label")] if with_labels else []
        self._schemes = {name: load_scheme(name) for name in set(labelled)}
        self._readers: OrderedDict[str, ShardReader] = OrderedDict()

    def order(self, epoch: int) -> np.ndarray:
        """Row indices of one epoch: shards in a seeded order, rows shuffled within groups of shards."""
        df = self.tiles.df
        if not self.train:
            return np.arange(len(df))
        rng = np.random.default_rng([self.seed, epoch])
        shards = list(dict.fromkeys(df["shard_path"]))
        rows_by_shard = {s: np.flatnonzero(df["shard_path"].to_numpy() == s) for s in shards}
        shards = [shards[i] for i in rng.permutation(len(shards))]
        out = []
        for g in range(0, len(shards), SHUFFLE_SHARDS):
            group = np.concatenate([rows_by_shard[s] for s in shards[g : g + SHUFFLE_SHARDS]])
            out.append(group[rng.permutation(len(group))])
        return np.concatenate(out)

    def __iter__(self):
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        position = 0
        try:
            for epoch in count() if self.train else [0]:
                for row in self.order(epoch):
                    if position >= self.start:
                        batch = (position - self.start) // self.batch_size
                        if batch % self.world == self.rank and (batch // self.world) % workers == worker:
                            yield self.load(int(row), position)
                    position += 1
        finally:
            self.close()

    def _reader(self, path: str) -> ShardReader:
        reader = self._readers.pop(path, None) or ShardReader(Path(path))
        self._readers[path] = reader
        while len(self._readers) > SHUFFLE_SHARDS + 1:
            self._readers.popitem(last=False)[1].close()
        return reader

    def close(self) -> None:
        """Close the open shard readers."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def read(self, index: int) -> dict:
        """Row ``index`` decoded: rgb uint8 HxWx3, label in the common scheme (zeros when absent), height (NaN)."""
        row = self.tiles.df.iloc[index]
        reader = self._reader(row["shard_path"])
        where = f"{reader.path}:{row['key']}"
        rgb = decode_array(read_member(reader, row, f"{row['key']}.rgb.tif"), "rgb", where)
        h, w = rgb.shape[:2]
        label = np.zeros((h, w), np.uint8)
        if self.with_labels and (name := _member(row, "label")) is not None:
            raw = decode_array(read_member(reader, row, name), "label", where)
            label = map_labels(raw, self._schemes[row["scheme"]], self.scheme, where)
        height = np.full((h, w), np.nan, np.float32)
        if (name := _member(row, "height")) is not None:
            height = decode_array(read_member(reader, row, name), "height", where).astype(np.float32)
        return {"key": row["key"], "rgb": rgb, "label": label, "height": height}

    def load(self, index: int, position: int) -> dict:
        """Row ``index`` as a sample of tensors, augmented (seeded by ``position``) when training."""
        sample = self.read(index)
        rgb = sample["rgb"].astype(np.float32) / 255.0
        label, height = sample["label"], sample["height"]
        if self.train:
            rng = np.random.default_rng([self.seed, 7919, position])
            size = self.crop or min(label.shape)
            y = int(rng.integers(0, label.shape[0] - size + 1))
            x = int(rng.integers(0, label.shape[1] - size + 1))
            k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
            arrays = []
            for a in (rgb, label, height):
                a = np.rot90(a[y : y + size, x : x + size], k)
                arrays.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
            rgb, label, height = arrays
            rgb = colour_jitter(rgb, rng, self.jitter)
        return {
            "key": sample["key"],
            "rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))),
            "label": torch.from_numpy(label.astype(np.int64)),
            "height": torch.from_numpy(height)[None],
        }


def make_loader(stream: TileStream, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader over a stream (workers only where the machine has cores to spare)."""
    num_workers = min(num_workers, os.cpu_count() or 1)
    return torch.utils.data.DataLoader(
        stream, batch_size=batch_size, num_workers=num_workers, persistent_workers=False, pin_memory=False
    )
