"""The parents of an RGB job: the label (+ height) tiles of its cond manifest, checked, fingerprinted, planned into
output windows, and read shard by shard while the job runs (never all at once)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from synthgen.engine.plan import check_tile_side
from synthgen.errors import ConfigError, ManifestError, SchemeError
from synthgen.io.geotiff import decode_array
from synthgen.io.manifest import read_manifest, read_member, shard_path
from synthgen.io.shards import ShardReader


def cond_rows(cond: Path, scheme: str, with_height: bool) -> pd.DataFrame:
    """The cond manifest's rows, checked: every tile has a label, one scheme (the model's), one square size."""
    df = read_manifest(cond)
    if df.empty:
        raise ManifestError(f"{cond}: the cond manifest holds no tiles")
    has_label = [f"{k}.label.tif" in list(m) for k, m in zip(df["key"], df["members"], strict=True)]
    if not all(has_label):
        first = df["key"][has_label.index(False)]
        raise ManifestError(
            f"{cond}: tile '{first}' has no label raster ({sum(has_label)} of {len(df)} tiles have one); "
            "give a manifest from `synthgen landcover` or an ingest with labels"
        )
    schemes = sorted(set(df["scheme"]))
    if schemes != [scheme]:
        raise SchemeError(
            f"{cond}: labels are in scheme(s) {', '.join(schemes)}, the model was trained on '{scheme}' "
            f"(allowed: {scheme})"
        )
    sizes = sorted(set(zip(df["height_px"], df["width_px"], strict=True)))
    if len(sizes) != 1 or sizes[0][0] != sizes[0][1]:
        raise ManifestError(f"{cond}: tiles must be square and all the same size, found {sizes}")
    if with_height and not any(f"{k}.height.tif" in list(m) for k, m in zip(df["key"], df["members"], strict=True)):
        raise ManifestError(f"{cond}: the model takes heights but the cond manifest has no height rasters")
    return df


def cond_fingerprint(df: pd.DataFrame) -> str:
    """sha256 over the cond tiles' keys and member hashes: the cond content, wherever it lies."""
    h = hashlib.sha256()
    for key, hashes in zip(df["key"], df["sha256"], strict=True):
        h.update(f"{key}:{','.join(hashes)}\n".encode())
    return h.hexdigest()


class ParentReader:
    """Reads label and height of cond rows on demand, one open shard at a time (the job streams in order); each
    member is checked against the cond manifest's sha256 of it, so a shard replaced since is refused, not rendered
    from."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self._reader: ShardReader | None = None
        self._cached: tuple[int, dict] | None = None

    def read(self, row_index: int) -> dict:
        """Cond row ``row_index``: ``key``, ``label`` (H, W) uint8, ``height`` (H, W) float32 or None, ``row``."""
        if self._cached and self._cached[0] == row_index:
            return self._cached[1]
        row = self.df.iloc[row_index]
        path = shard_path(self.df, row["shard"])
        if self._reader is None or self._reader.path != path:
            self.close()
            self._reader = ShardReader(path)
        members = list(row["members"])
        out = {"key": row["key"], "row": row, "height": None}
        for kind in ("label", "height"):
            name = f"{row['key']}.{kind}.tif"
            if name in members:
                out[kind] = decode_array(read_member(self._reader, row, name), kind, f"{path}:{name}")
        self._cached = (row_index, out)
        return out

    def close(self) -> None:
        """Close the open shard."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def plan_size(df: pd.DataFrame, size: int | None, cond: Path) -> tuple[int, int]:
    """(tile size, windows per parent side): ``size`` must divide the parents' size."""
    parent = int(df["width_px"].iloc[0])
    if size is None:
        check_tile_side(parent, f"{cond}: the cond tiles' size")
        size = parent
    if size > parent or parent % size:
        raise ConfigError(f"--size {size} does not divide the cond tiles' {parent} px (allowed: divisors of {parent})")
    return size, parent // size
