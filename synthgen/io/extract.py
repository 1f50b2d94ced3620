"""Loose tiles out of shards, for clients that need files (QGIS, torchgeo, a STAC browser without GDAL's /vsitar/).

Every raster of every tile of a manifest is written to ``<out>/<key>.<kind>.tif``: the member's bytes exactly as
they are in the shard (so they keep the sha256 the manifest records, which is checked on the way), each through a
temporary file. Beside each label raster go its QGIS style and GDAL category names (``synthgen.io.qgis``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from synthgen.io.atomic import atomic_write
from synthgen.io.geotiff import RASTER_KINDS
from synthgen.io.manifest import read_manifest, read_member, shard_path
from synthgen.io.qgis import write_label_sidecars
from synthgen.io.shards import ShardReader
from synthgen.schema import ClassScheme, load_scheme


@lru_cache(maxsize=16)
def _scheme(name: str) -> ClassScheme:
    return load_scheme(name)


def raster_members(key: str, members) -> dict[str, str]:
    """The raster members of tile ``key`` by kind (``rgb``, ``label``, ``height``: those the tile has)."""
    found = {}
    for name in members:
        kind = name.removeprefix(f"{key}.").removesuffix(".tif")
        if kind in RASTER_KINDS and name == f"{key}.{kind}.tif":
            found[kind] = name
    return found


def extract_tiles(manifest: Path, out: Path, progress: Callable[[], None] | None = None) -> dict[str, dict[str, Path]]:
    """Write the rasters of every tile of ``manifest`` into folder ``out`` (label rasters with their sidecars);
    returns ``{key: {kind: path}}``. A member whose bytes differ from the manifest's sha256 is a ShardError."""
    df = read_manifest(manifest)
    out = Path(out)
    written: dict[str, dict[str, Path]] = {}
    for shard, group in df.groupby("shard", sort=False):
        with ShardReader(shard_path(df, shard)) as reader:
            for _, row in group.iterrows():
                paths = written[row["key"]] = {}
                for kind, name in raster_members(row["key"], row["members"]).items():
                    data = read_member(reader, row, name)  # checked against the manifest's sha256
                    path = paths[kind] = atomic_write(out / name, data)
                    if kind == "label":
                        write_label_sidecars(path, _scheme(row["scheme"]))
                if progress:
                    progress()
    return written
