"""What a manifest must hold before any of its rows is trusted, and the plan that says which rows it must hold.

Every reader of a manifest goes through ``check_rows`` (``read_manifest`` calls it): each row names one tile by a
unique key, one shard by a relative ``.tar`` path, and as many member names (``<key>.<kind>``) as sha256 digests.
A job's manifest also records its plan (``job_plan``: the job's name, tiles, shards and the tiles each finished shard
holds) in its parquet metadata, so ``check_plan`` can tell a manifest that lost or gained rows from the one the job
wrote; a subset (``synthgen filter``, the paper study) records the manifest it was taken from instead.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from synthgen.errors import ManifestError

PLAN_KEY = "synthgen.plan"
SUBSET_KEY = "synthgen.subset"
SHOWN_CHARS = 160  # a value quoted in a message is cut to this many characters
_SHA256 = re.compile(r"[0-9a-f]{64}")
MANIFEST_TYPES = {"key": "string", "shard": "string", "members": "list<string>", "sha256": "list<string>"}


def show(value) -> str:
    """``repr(value)`` cut to ``SHOWN_CHARS`` characters (``null`` for a missing value), for a message that quotes
    data read from disk."""
    text = "null" if value is None or (isinstance(value, float) and value != value) else repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _row_fault(key, shard, members, hashes) -> str | None:
    """What is wrong with one row's key, shard and members (None when nothing is)."""
    if not isinstance(key, str) or not key or "." in key or "/" in key:
        return f"key {show(key)} is not a tile key (non-empty text without '.' or '/')"
    if not isinstance(shard, str) or not shard.endswith(".tar") or "\0" in shard or PurePosixPath(shard).is_absolute():
        return f"shard {show(shard)} is not a shard path (a .tar path relative to the manifest's folder)"
    if members is None or hashes is None:
        return f"{'members' if members is None else 'sha256'} is null (a tile has a list of members and their sha256)"
    if len(members) == 0 or len(members) != len(hashes):
        return f"has {len(members)} members and {len(hashes)} sha256 digests (one digest per member, at least one)"
    names = set()
    for name, digest in zip(members, hashes, strict=True):
        if not isinstance(name, str) or not name.startswith(f"{key}.") or "/" in name or name in names:
            return f"member {show(name)} is not a member name of its own (allowed: '{key}.<kind>', each once)"
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            return f"sha256 {show(digest)} of member '{name}' is not a sha256 digest (64 hex digits)"
        names.add(name)
    return None


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_text_list(kind: pa.DataType) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and _is_text(kind.value_type)


def _bad_rows(table: pa.Table) -> np.ndarray:
    """A mask of the rows of ``table`` whose key, shard or members are faulty (``_row_fault``), computed by Arrow:
    a manifest of 100 000 tiles is checked in well under a second, where a Python loop takes seconds."""
    key, shard, members, hashes = (table.column(c) for c in ("key", "shard", "members", "sha256"))
    bad = pc.invert(pc.match_substring_regex(key, r"^[^./]+$")).fill_null(True)
    bad = pc.or_(bad, pc.invert(pc.match_substring_regex(shard, r"^[^/\x00][^\x00]*\.tar$")).fill_null(True))
    lengths = pc.list_value_length(members)
    bad = pc.or_(bad, pc.or_(pc.equal(lengths, 0), pc.not_equal(lengths, pc.list_value_length(hashes))).fill_null(True))
    rows = np.asarray(bad.to_numpy(zero_copy_only=False), bool).copy()
    if rows.any():  # the member checks below need one digest per member
        return rows
    names, digests = pc.list_flatten(members), pc.list_flatten(hashes)
    owner = pc.take(key, pc.list_parent_indices(members))
    first = pc.list_element(pc.split_pattern(names, ".", max_splits=1), 0)
    faulty = pc.or_(pc.not_equal(first, owner), pc.match_substring(names, "/")).fill_null(True)
    faulty = pc.or_(faulty, pc.invert(pc.match_substring_regex(digests, "^[0-9a-f]{64}$")).fill_null(True))
    faulty = pc.or_(faulty, pc.invert(pc.match_substring(names, ".")).fill_null(True))
    parents = pc.list_parent_indices(members).to_numpy(zero_copy_only=False)
    rows[parents[np.asarray(faulty.to_numpy(zero_copy_only=False), bool)]] = True
    return rows


def _named_twice(table: pa.Table) -> np.ndarray:
    """A mask of the rows that name a member twice (with unique keys and members named ``<key>.<kind>``, a member
    named twice in the manifest is named twice in its row)."""
    members = table.column("members")
    names = pc.list_flatten(members)
    rows = np.zeros(len(table), bool)
    if len(pc.unique(names)) != len(names):
        seen = pd.Series(names.to_numpy(zero_copy_only=False)).duplicated().to_numpy()
        rows[pc.list_parent_indices(members).to_numpy(zero_copy_only=False)[seen]] = True
    return rows


def check_rows(table: pa.Table, path: Path) -> None:
    """Refuse a manifest with a row that does not name its tile, shard and members in full (``_row_fault``), or
    with a key twice; the message names the first such row."""
    for name, test in (("key", _is_text), ("shard", _is_text), ("members", _is_text_list), ("sha256", _is_text_list)):
        kind = table.schema.field(name).type
        if not test(kind):
            raise ManifestError(f"{path}: column '{name}' is {kind} (a manifest's is {MANIFEST_TYPES[name]})")
    _refuse_first(table, _bad_rows(table), path)
    keys = table.column("key")
    if len(pc.unique(keys)) != len(keys):
        series = pd.Series(keys.to_numpy(zero_copy_only=False))
        repeated = series[series.duplicated()]
        raise ManifestError(
            f"{path}: tile key {show(repeated.iloc[0])} is in {int((series == repeated.iloc[0]).sum())} rows "
            f"(a key names one tile; {repeated.nunique()} key(s) repeated in all)"
        )
    _refuse_first(table, _named_twice(table), path)


def _refuse_first(table: pa.Table, bad: np.ndarray, path: Path) -> None:
    """Raise naming the first row of ``bad`` and what is wrong with it (``_row_fault``)."""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = table.slice(i, 1).select(["key", "shard", "members", "sha256"]).to_pylist()[0]
        raise ManifestError(f"{path}: row {i} (tile {show(row['key'])}): {_row_fault(*row.values())}")


def shard_index(shard_name: str, job_name: str) -> int | None:
    """The index of a shard file ``<job_name>-NNNNN.tar`` of a job (None for a file of another name)."""
    stem = shard_name.removesuffix(".tar")
    prefix, _, digits = stem.rpartition("-")
    if prefix != job_name or len(digits) < 5 or not (digits.isascii() and digits.isdigit()) or shard_name == stem:
        return None
    return int(digits)


def job_plan(job: dict, shard_tiles: dict[int, int]) -> dict:
    """The plan a job's manifest records: from the job's description (``ShardJob.describe``) its name, tiles, tiles
    per shard and number of shards, and the tiles merged from the record of each finished shard (index → tiles; a
    shard not merged is absent)."""
    return {
        "name": job["name"],
        "tiles": job["tiles"],
        "tiles_per_shard": job["tiles_per_shard"],
        "num_shards": job["num_shards"],
        "shard_tiles": {str(j): shard_tiles[j] for j in sorted(shard_tiles)},
    }


def _plan_counts(plan) -> dict[int, int] | str:
    """The plan's tiles per merged shard (index → tiles), or what is wrong with the plan."""
    if not isinstance(plan, dict):
        return "is not a JSON object"
    ints = [plan.get(k) for k in ("tiles", "tiles_per_shard", "num_shards")]
    if not isinstance(plan.get("name"), str) or any(type(v) is not int or v < 0 for v in ints):
        return "needs a name and whole numbers tiles, tiles_per_shard and num_shards"
    per, n, shards = ints[1], ints[0], ints[2]
    if not isinstance(plan.get("shard_tiles"), dict) or len(plan["shard_tiles"]) > shards:
        return f"shard_tiles must give the tiles of each merged shard of the {shards}"
    counts = {}
    for index, count in plan["shard_tiles"].items():
        j = int(index) if index.isascii() and index.isdigit() else -1
        if not 0 <= j < shards or type(count) is not int or not 0 <= count <= min(per, n - j * per):
            return f"says shard {show(index)} holds {show(count)} tiles (shards 0 .. {shards - 1}, at most {per} tiles)"
        counts[j] = count
    return counts


def check_plan(df: pd.DataFrame, plan, path: Path, subset: bool = False) -> set[str]:
    """Check the rows of a job's manifest against its plan: every row in a shard of the job, every merged shard
    holding the tiles its record held, no shard of the job missing (unless ``subset``: then only that no shard holds
    more rows than it had). Returns the shards whose every member must be named by a row (none for a subset)."""
    counts = _plan_counts(plan)
    if isinstance(counts, str):
        raise ManifestError(f"{path}: the job plan in its metadata ({PLAN_KEY}) {counts}")
    name, num_shards = plan["name"], plan["num_shards"]
    shards_of: dict[int, str] = {}
    rows_of: dict[int, int] = {}
    for key, shard in zip(df["key"], df["shard"], strict=True):
        j = shard_index(PurePosixPath(shard).name, name)
        if j is None or j >= num_shards:
            raise ManifestError(
                f"{path}: tile '{key}' is in shard {show(shard)}, not a shard of job '{name}' (allowed: "
                f"{name}-NNNNN.tar, NNNNN below {num_shards})"
            )
        if shards_of.setdefault(j, shard) != shard:
            raise ManifestError(
                f"{path}: shard {j} of job '{name}' is named two ways ({show(shards_of[j])}, {show(shard)})"
            )
        rows_of[j] = rows_of.get(j, 0) + 1
    if len(counts) < num_shards and not subset:
        first = next(j for j in range(num_shards) if j not in counts)
        raise ManifestError(
            f"{path}: {num_shards - len(counts)} of {num_shards} shards of job '{name}' are not in this manifest "
            f"(first: {name}-{first:05d}.tar; a `manifest rebuild --partial`); pass --subset to check only its rows"
        )
    for j in sorted(set(counts) | set(rows_of)):
        found, count = rows_of.get(j, 0), counts.get(j, 0)
        if found > count if subset else found != count:
            raise ManifestError(
                f"{path}: shard {name}-{j:05d}.tar has {found} rows in the manifest, the job wrote {count} tiles "
                "into it (rows were removed or added after the manifest was written)"
            )
    return set() if subset else set(shards_of.values())
