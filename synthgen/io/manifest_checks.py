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

import pandas as pd

from synthgen.errors import ManifestError

PLAN_KEY = "synthgen.plan"
SUBSET_KEY = "synthgen.subset"
SHOWN_CHARS = 160  # a value quoted in a message is cut to this many characters
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def check_rows(df: pd.DataFrame, path: Path) -> None:
    """Refuse a manifest with a row that does not name its tile, shard and members in full, or with a key twice."""
    for i, row in enumerate(zip(df["key"], df["shard"], df["members"], df["sha256"], strict=True)):
        fault = _row_fault(*row)
        if fault:
            raise ManifestError(f"{path}: row {i} (tile {show(row[0])}): {fault}")
    duplicated = df["key"][df["key"].duplicated()]
    if len(duplicated):
        raise ManifestError(
            f"{path}: tile key {show(duplicated.iloc[0])} is in {int((df['key'] == duplicated.iloc[0]).sum())} rows "
            f"(a key names one tile; {duplicated.nunique()} key(s) repeated in all)"
        )


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
