"""Parquet manifests: one row per tile, merged from shard records; readers that turn rows back into samples.

Shard paths in a manifest are relative to the manifest's folder, so a manifest and its shards move together.
pandas, pyarrow and duckdb read a manifest directly; ``MANIFEST_SCHEMA`` documents every column. Every reader goes
through ``read_manifest``, which refuses rows that do not name their tile, shard and members in full
(``synthgen.io.manifest_checks``), and reads members through ``read_member``, which checks each against its sha256.
A job's manifest records the job's plan in its metadata, so ``verify_manifest`` accounts for every tile of the job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from affine import Affine

from synthgen.errors import ManifestError, ShardError, allowed
from synthgen.io.atomic import atomic_path
from synthgen.io.geotiff import RASTER_KINDS, decode_array
from synthgen.io.manifest_checks import PLAN_KEY, SUBSET_KEY, check_plan, check_rows, job_plan, shard_index
from synthgen.io.shards import ShardReader, read_record

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False, metadata={"doc": "tile key, unique in the manifest"}),
        pa.field("shard", pa.string(), metadata={"doc": "shard tar, relative to the manifest's folder"}),
        pa.field("members", pa.list_(pa.string()), metadata={"doc": "member names in the shard"}),
        pa.field("sha256", pa.list_(pa.string()), metadata={"doc": "sha256 of each member, same order"}),
        pa.field("seed", pa.int64(), metadata={"doc": "per-tile seed (null for ingested tiles)"}),
        pa.field("generator", pa.string(), metadata={"doc": "ingest, landcover, rgb-controlnet, ..."}),
        pa.field("generator_version", pa.string()),
        pa.field("model_id", pa.string(), metadata={"doc": "model path or hub id ('' for ingest)"}),
        pa.field("weights_hash", pa.string()),
        pa.field("config_hash", pa.string(), metadata={"doc": "sha256 of the resolved config"}),
        pa.field("parent_keys", pa.list_(pa.string()), metadata={"doc": "lineage: keys this tile was made from"}),
        pa.field("scheme", pa.string(), metadata={"doc": "class scheme of the label raster"}),
        pa.field("split", pa.string(), metadata={"doc": "train / val ('' for generated tiles)"}),
        pa.field("source", pa.string(), metadata={"doc": "source file or area the tile came from"}),
        pa.field("width_px", pa.int32()),
        pa.field("height_px", pa.int32()),
        pa.field("crs", pa.string()),
        pa.field("transform", pa.list_(pa.float64()), metadata={"doc": "affine a, b, c, d, e, f"}),
        pa.field("synthetic_georef", pa.bool_()),
        pa.field("prompt", pa.string()),
        pa.field("meta", pa.string(), metadata={"doc": "JSON object of further metadata (date, window, ...)"}),
        pa.field("class_hist", pa.list_(pa.int64()), metadata={"doc": "pixel count per class code"}),
        pa.field("height_valid_frac", pa.float64()),
        pa.field("height_min", pa.float64()),
        pa.field("height_mean", pa.float64()),
        pa.field("height_max", pa.float64()),
        pa.field("quality_flags", pa.list_(pa.string())),
    ]
)
REQUIRED_COLUMNS = tuple(MANIFEST_SCHEMA.names)


def write_rebased(source: Path, records: list[dict], path: Path) -> Path:
    """Write ``records`` of the manifest ``source`` (rows as ``pyarrow`` reads them) as a manifest at ``path``, each
    shard path re-based on ``path``'s folder, so the new manifest points at the same shards. It is marked a subset
    (of ``source``, in its metadata): ``verify_manifest`` checks its rows, not that a job's tiles are all there."""
    df = read_manifest(Path(source))
    base = Path(path).resolve().parent
    rebased = [{**rec, "shard": os.path.relpath(shard_path(df, rec["shard"]).resolve(), base)} for rec in records]
    return write_manifest(rebased, path, subset_of=os.path.relpath(Path(source).resolve(), base))


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts from ShardWriter) as a table with the manifest schema, in the given order."""
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def write_manifest(
    rows: list[dict],
    path: Path,
    run_config: dict | None = None,
    plan: dict | None = None,
    subset_of: str | None = None,
) -> Path:
    """Write rows as a parquet manifest through a temporary file, so a reader never sees half of one. Its metadata
    holds ``run_config``, the job's ``plan`` (``manifest_checks.job_plan``) or the manifest it is a subset of."""
    path = Path(path)
    table = rows_to_table(rows)
    metadata = {"synthgen.config": run_config, PLAN_KEY: plan, SUBSET_KEY: subset_of}
    metadata = {k: json.dumps(v, sort_keys=True) for k, v in metadata.items() if v is not None}
    if metadata:
        table = table.replace_schema_metadata(metadata)
    try:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    except OSError as exc:  # a full disk or a read-only folder: no half manifest is left, and the error is one line
        raise ManifestError(f"{path}: cannot write the manifest ({exc.strerror or str(exc).splitlines()[0]})") from None
    return path


def write_job_manifest(shard_paths: list[Path], path: Path, job: dict) -> list[dict]:
    """Merge the records of a job's finished shards (``shard_paths``, files ``<name>-NNNNN.tar``) into its manifest
    at ``path``, with the job's run config and plan (``job``: ``ShardJob.describe``) in its metadata; returns the
    rows."""
    counts = {}
    for shard in shard_paths:
        j = shard_index(Path(shard).name, job["name"])
        if j is None:
            raise ManifestError(f"{shard}: not a shard of job '{job['name']}' (allowed: {job['name']}-NNNNN.tar)")
        counts[j] = len(read_record(shard)["rows"])
    rows = merge_records(shard_paths, path)
    write_manifest(rows, path, run_config=job["run_config"], plan=job_plan(job, counts))
    return rows


def merge_records(shard_paths: list[Path], manifest_path: Path) -> list[dict]:
    """Manifest rows from the records of the given shards, with shard paths made relative to the manifest."""
    rows = []
    base = Path(manifest_path).resolve().parent
    for shard in shard_paths:
        record = read_record(shard)
        rel = os.path.relpath(Path(shard).resolve(), base)
        for row in record["rows"]:
            rows.append({**row, "shard": rel})
    keys = [r["key"] for r in rows]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise ManifestError(f"{manifest_path}: duplicate tile keys across shards: {', '.join(dup)}")
    return rows


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest; a missing file, non-parquet file or missing columns is a one-line ManifestError."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{path}: not a readable parquet manifest ({str(exc).splitlines()[0]})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(
            f"{path}: missing columns {allowed(missing)} (a manifest needs: {allowed(REQUIRED_COLUMNS)})"
        )
    check_rows(table, path)
    df = table.to_pandas()
    df.attrs["manifest_path"] = str(path.resolve())
    return df


def manifest_config(path: Path) -> dict:
    """The resolved run config stored in a manifest's metadata ({} if none)."""
    return manifest_metadata(path, "synthgen.config") or {}


def manifest_metadata(path: Path, key: str):
    """The JSON value stored under ``key`` in a manifest's metadata (None if none; unreadable JSON is a
    ManifestError)."""
    raw = (pq.read_schema(path).metadata or {}).get(key.encode())
    try:
        return json.loads(raw) if raw else None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: its metadata '{key}' is not valid JSON ({exc.msg})") from None


def shard_path(df: pd.DataFrame, shard: str) -> Path:
    """The absolute path of a shard named in a manifest read by ``read_manifest``."""
    return Path(df.attrs["manifest_path"]).parent / shard


def read_member(reader: ShardReader, row, name: str) -> bytes:
    """The bytes of member ``name`` of a manifest row's tile, checked against the row's sha256 of it."""
    members = list(row["members"])
    if name not in members:
        raise ShardError(f"{reader.path}: tile '{row['key']}' has no member '{name}'")
    return reader.read(name, row["sha256"][members.index(name)])


def _sample_from_members(row, reader: ShardReader) -> dict:
    sample: dict = {"key": row["key"], "rgb": None, "label": None, "height": None}
    for name, digest in zip(row["members"], row["sha256"], strict=True):
        data = reader.read(name, digest)
        kind = name.removeprefix(row["key"] + ".").removesuffix(".tif")
        if kind in RASTER_KINDS:
            sample[kind] = decode_array(data, kind, f"{reader.path}:{name}")
        elif name.endswith(".json"):
            doc = json.loads(data)
            sample["meta"] = doc.get("meta", {})
    sample["crs"] = row["crs"]
    sample["transform"] = Affine(*row["transform"])
    sample["prompt"] = row["prompt"]
    sample.setdefault("meta", json.loads(row["meta"]))
    sample["meta"] = {**sample["meta"], "split": row["split"], "source": row["source"], "scheme": row["scheme"]}
    return sample


def iter_samples(manifest: Path | pd.DataFrame) -> Iterator[dict]:
    """Yield the manifest's tiles as sample dicts (``key rgb label height crs transform prompt meta``).

    Missing rasters are None. Shards are opened one at a time, in manifest order; every member is checked against
    its sha256.
    """
    df = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    for shard, group in df.groupby("shard", sort=False):
        with ShardReader(shard_path(df, shard)) as reader:
            for _, row in group.iterrows():
                yield _sample_from_members(row, reader)


def verify_manifest(manifest: Path, progress=None, subset: bool = False) -> dict:
    """Account for every tile of a manifest's job and re-hash every member; raise at the first fault.

    A job's manifest (with a plan in its metadata) must hold every tile of every shard the job finished, and every
    member of those shards must be named by a row; with ``subset`` (or for a manifest marked a subset) only its own
    rows are checked. A manifest with neither a plan nor a subset mark is refused unless ``subset``.
    """
    df = read_manifest(manifest)
    plan, subset_of = manifest_metadata(manifest, PLAN_KEY), manifest_metadata(manifest, SUBSET_KEY)
    if plan is None and subset_of is None and not subset:
        raise ManifestError(
            f"{manifest}: no job plan in its metadata (a manifest of synthgen ingest, landcover, rgb, climate or "
            "manifest rebuild has one; this one was written or re-saved by something else), so missing tiles cannot "
            "be told; pass --subset to check only the rows it holds"
        )
    whole = check_plan(df, plan, manifest, subset or subset_of is not None) if plan is not None else set()
    checked = 0
    for shard, group in df.groupby("shard", sort=False):
        with ShardReader(shard_path(df, shard)) as reader:
            named = {name for members in group["members"] for name in members}
            unnamed = sorted(set(reader.index) - named) if shard in whole else []
            if unnamed:
                raise ManifestError(
                    f"{reader.path}: holds {len(unnamed)} members no row of {manifest} names (first: '{unnamed[0]}'): "
                    "rows were removed after the manifest was written"
                )
            for _, row in group.iterrows():
                for name, digest in zip(row["members"], row["sha256"], strict=True):
                    reader.read(name, digest)
                    checked += 1
                if progress:
                    progress()
    rows_only = plan is None or subset or subset_of is not None
    return {"tiles": len(df), "members": checked, "shards": int(df["shard"].nunique()), "rows_only": rows_only}


def tensor_sample(sample: dict) -> dict:
    """A sample dict of arrays as TileDataset yields it: ``rgb`` float32 3xHxW in [0, 1], ``label`` int64 HxW,
    ``height`` float32 1xHxW (rasters the tile lacks are absent); ``key crs transform prompt meta`` as they are."""
    import torch

    out = {k: sample[k] for k in ("key", "crs", "transform", "prompt", "meta")}
    if sample["rgb"] is not None:
        out["rgb"] = torch.from_numpy(sample["rgb"]).permute(2, 0, 1).float() / 255.0
    if sample["label"] is not None:
        out["label"] = torch.from_numpy(sample["label"].astype(np.int64))
    if sample["height"] is not None:
        out["height"] = torch.from_numpy(sample["height"])[None]
    return out


class TileDataset:
    """A map-style torch Dataset over a manifest: item i is a dict of tensors (torchgeo-style sample dict).

    ``rgb`` float32 3xHxW in [0, 1], ``label`` int64 HxW, ``height`` float32 1xHxW (NaN = nodata); rasters a tile
    lacks are absent. ``split`` keeps only rows of that split.
    """

    def __init__(self, manifest: Path, split: str | None = None, transforms=None):
        df = read_manifest(manifest)
        if split is not None:
            splits = sorted(df["split"].unique())
            if split not in splits:
                raise ManifestError(f"{manifest}: no tiles in split '{split}' (splits present: {allowed(splits)})")
            df = df[df["split"] == split].reset_index(drop=True)
            df.attrs["manifest_path"] = str(Path(manifest).resolve())
        self.df = df
        self.transforms = transforms
        self._readers: dict[str, ShardReader] = {}

    def __len__(self) -> int:
        return len(self.df)

    def __getitem__(self, index: int) -> dict:
        row = self.df.iloc[index]
        reader = self._readers.get(row["shard"])
        if reader is None:
            reader = self._readers[row["shard"]] = ShardReader(shard_path(self.df, row["shard"]))
        out = tensor_sample(_sample_from_members(row, reader))
        return self.transforms(out) if self.transforms else out

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_readers"] = {}
        return state
