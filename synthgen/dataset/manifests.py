"""Manifests that ``synthgen dataset`` derives from a stage's manifest without copying any shard: the first k tiles
(what an RGB stage renders when its section sets ``tiles``), and a train / val split by parent tile (the held-out
part validation tests on when there is no real test set).

A derived manifest keeps every column and the run config and job plan of its source; only ``shard`` is rewritten to
stay relative to the new manifest's folder, and ``split`` when splitting. The first k tiles of a larger manifest are
marked a subset of it, so ``synthgen verify`` checks their rows, not the whole plan. It is written through a
temporary file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synthgen.io.atomic import atomic_path
from synthgen.io.manifest import read_manifest
from synthgen.io.manifest_checks import SUBSET_KEY


def _write(table: pa.Table, src: Path, dst: Path, subset: bool = False) -> Path:
    """``table`` (rows of ``src``) as a manifest at ``dst``, shard paths made relative to ``dst``'s folder; with
    ``subset``, marked a subset of ``src`` in its metadata."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    src_dir, dst_dir = src.resolve().parent, dst.resolve().parent
    shards = [os.path.relpath(src_dir / s, dst_dir) for s in table.column("shard").to_pylist()]
    table = table.set_column(table.schema.get_field_index("shard"), "shard", pa.array(shards, pa.string()))
    if subset:
        source = json.dumps(os.path.relpath(src.resolve(), dst_dir)).encode()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), SUBSET_KEY.encode(): source})
    with atomic_path(dst) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return dst


def first_tiles(src: Path, dst: Path, k: int) -> Path:
    """Write the first ``k`` rows of manifest ``src`` (all of them when it has fewer) to ``dst``."""
    read_manifest(src)  # a missing or malformed manifest is one line
    table = pq.read_table(src)
    return _write(table.slice(0, min(k, table.num_rows)), Path(src), Path(dst), subset=k < table.num_rows)


def parent_key(keys: list[str] | None, key: str) -> str:
    """The tile a row was made from (its first parent), or the row's own key when it has no parent."""
    return keys[0] if keys else key


def heldout_parents(manifests: Iterable[Path], fraction: float) -> set[str]:
    """The parent tiles held out for testing: of all parents of ``manifests``, the ``ceil(fraction * N)`` first by
    sha256 of their key. The same parent is held out in every manifest, so no label map is seen in training and
    testing of a cross-test."""
    parents: set[str] = set()
    for path in manifests:
        df = read_manifest(path)
        parents.update(parent_key(list(p), k) for p, k in zip(df["parent_keys"], df["key"], strict=True))
    ranked = sorted(parents, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    return set(ranked[: math.ceil(fraction * len(ranked))])


def split_by_parent(src: Path, dst: Path, heldout: set[str]) -> dict[str, int]:
    """Write ``src`` to ``dst`` with ``split`` = ``val`` for rows whose parent is in ``heldout``, else ``train``;
    returns the tile count of each split."""
    table = pq.read_table(src)
    rows = zip(table.column("parent_keys").to_pylist(), table.column("key").to_pylist(), strict=True)
    split = ["val" if parent_key(p, k) in heldout else "train" for p, k in rows]
    table = table.set_column(table.schema.get_field_index("split"), "split", pa.array(split, pa.string()))
    _write(table, Path(src), Path(dst))
    return {"train": split.count("train"), "val": split.count("val")}
