"""A static STAC catalog of a dataset folder (``synthgen stac``, and the last step of ``synthgen dataset``).

Layout, in the dataset folder (every link relative, so the catalog moves with the folder)::

    catalog.json                    the root: one child per stage, and the data card (README.md) as describedby
    <stage>/collection.json         one collection per stage that has a manifest: extent, licence, models, summaries
    <stage>/items/<key>.json        one item per tile (``synthgen.dataset.stac_items``)
    <stage>/tiles/<key>.<kind>.tif  with ``extract``: the tiles as loose COGs (label ones with QGIS/GDAL sidecars)

Asset hrefs. A tile inside a shard is ``/vsitar/<absolute shard path>/<member>``: GDAL's path into a tar, which
rasterio (and so stackstac, odc-stac, torchgeo) opens as it is; it names the folder where the catalog was written,
so rerun ``synthgen stac`` after moving the dataset. With ``extract`` the hrefs are the loose files, relative
(``../tiles/<key>.<kind>.tif``), and the catalog is fully self-contained.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pystac

from synthgen.dataset.folder import dataset_license, stage_manifests
from synthgen.dataset.stac_items import StageContext, model_href, tile_item
from synthgen.io.atomic import atomic_write, temporary_path
from synthgen.io.extract import extract_tiles, raster_members
from synthgen.io.manifest import read_manifest, shard_path
from synthgen.io.shards import ShardReader
from synthgen.schema import load_scheme

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def vsitar_href(shard: Path, member: str) -> str:
    """GDAL's path of ``member`` inside tar ``shard`` (absolute), which rasterio opens directly."""
    return f"/vsitar/{Path(shard).resolve()}/{member}"


def _context(stage: str, df: pd.DataFrame, manifest: Path) -> StageContext:
    schemes = sorted({s for s in df["scheme"] if s})
    written = _dt.datetime.fromtimestamp(int(manifest.stat().st_mtime), _dt.UTC)
    hrefs = {m: model_href(m, WEIGHTS_DIR) for m in sorted(set(df["model_id"]))}
    return StageContext(stage, load_scheme(schemes[0]) if schemes else None, written, hrefs)


def _rasters(df: pd.DataFrame, tiles: dict | None) -> dict[str, dict[str, tuple[str, int | None]]]:
    """Per tile key: raster kind -> (asset href, size in bytes), into the shards or the extracted files."""
    out: dict[str, dict] = {}
    if tiles is not None:
        for key, paths in tiles.items():
            out[key] = {kind: (f"../tiles/{p.name}", p.stat().st_size) for kind, p in paths.items()}
        return out
    for shard, group in df.groupby("shard", sort=False):
        path = shard_path(df, shard)
        with ShardReader(path) as reader:
            for key, members in zip(group["key"], group["members"], strict=True):
                out[key] = {
                    kind: (vsitar_href(path, name), reader.index[name][1])
                    for kind, name in raster_members(key, members).items()
                    if name in reader.index
                }
    return out


def _write_json(path: Path, doc: dict) -> None:
    atomic_write(path, json.dumps(doc, indent=1, default=str) + "\n")


def _collection(stage: str, items: list[dict], ctx: StageContext, license: str) -> pystac.Collection:
    """The collection of a stage from the facts of its items (``_facts``)."""
    bboxes = [i["bbox"] for i in items]
    spatial = [
        min(b[0] for b in bboxes),
        min(b[1] for b in bboxes),
        max(b[2] for b in bboxes),
        max(b[3] for b in bboxes),
    ]
    times = sorted(i["datetime"] for i in items)
    synthetic = sorted({i["synthgen:synthetic_georef"] for i in items})
    collection = pystac.Collection(
        id=stage,
        title=f"synthgen stage {stage}",
        description=f"{len(items)} tiles of stage {stage}, each an item with its rasters as assets."
        + (" Their georeference is synthetic: see each item's synthgen:georef." if True in synthetic else ""),
        extent=pystac.Extent(pystac.SpatialExtent([spatial]), pystac.TemporalExtent([[times[0], times[-1]]])),
        license=license,
        keywords=["synthetic", "remote sensing", "land cover", "synthgen"],
        providers=[pystac.Provider("synthgen", roles=[pystac.ProviderRole.PRODUCER, pystac.ProviderRole.PROCESSOR])],
        summaries=pystac.Summaries(
            {key: sorted({i[key] for i in items}) for key in ("synthgen:generator", "synthgen:synthetic_georef", "gsd")}
            | {"proj:code": sorted({str(i["proj:code"]) for i in items})}
        ),
    )
    collection.add_link(pystac.Link("root", "../catalog.json", pystac.MediaType.JSON))
    collection.add_link(pystac.Link("parent", "../catalog.json", pystac.MediaType.JSON))
    for model, href in ctx.model_hrefs.items():
        if href:
            collection.add_link(pystac.Link("via", href, title=f"model {model}"))
    for item in items:
        collection.add_link(pystac.Link("item", f"./items/{item['id']}.json", pystac.MediaType.GEOJSON))
    return collection


def _facts(item: pystac.Item) -> dict:
    """What the collection needs of an item (items are written as they are made, not kept)."""
    keys = ("synthgen:generator", "synthgen:synthetic_georef", "gsd", "proj:code")
    return {"id": item.id, "bbox": item.bbox, "datetime": item.datetime, **{k: item.properties[k] for k in keys}}


def _write_item(folder: Path, item: pystac.Item) -> None:
    for rel, href in (
        ("root", "../../catalog.json"),
        ("parent", "../collection.json"),
        ("collection", "../collection.json"),
    ):
        item.add_link(pystac.Link(rel, href, pystac.MediaType.JSON))
    _write_json(folder / f"{item.id}.json", item.to_dict(include_self_link=False, transform_hrefs=False))


def _swap_in(staged: Path, final: Path) -> None:
    """Put folder ``staged`` in the place of folder ``final`` (two renames; the old folder is then removed)."""
    old = final.with_name(f"{final.name}.{os.getpid()}.old")
    if final.exists():
        final.rename(old)
    staged.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def write_catalog(
    root: Path,
    extract: bool = False,
    license: str | None = None,
    progress: Callable[[], None] | None = None,
) -> dict:
    """Write the STAC catalog of dataset folder ``root`` (see the module docstring); with ``extract`` the tiles
    as loose COGs too. ``license``: the collections' licence (default: the data card's, else ``other``). Returns
    the catalog's path and the items per collection.

    Items (and loose tiles) are written into temporary folders first, which replace the old ones only once every
    stage is done: an error (a shard member that does not match the manifest) leaves the folder as it was."""
    root = Path(root)
    license = dataset_license(root, license)
    manifests = stage_manifests(root)
    frames = {stage: read_manifest(m) for stage, m in manifests.items()}
    where = {key: stage for stage, df in frames.items() for key in df["key"]}
    staged: list[tuple[Path, Path]] = []
    collections: dict[str, pystac.Collection] = {}
    try:
        for stage, df in frames.items():
            ctx = _context(stage, df, manifests[stage])
            tiles = None
            if extract:
                staged.append((temporary_path(root / stage / "tiles"), root / stage / "tiles"))
                tiles = extract_tiles(manifests[stage], staged[-1][0])
            staged.append((temporary_path(root / stage / "items"), root / stage / "items"))
            rasters, facts = _rasters(df, tiles), []
            for _, row in df.iterrows():
                parents = {p: f"../../{where[p]}/items/{p}.json" for p in row["parent_keys"] if p in where}
                item = tile_item(row, ctx, rasters.get(row["key"], {}), parents)
                _write_item(staged[-1][0], item)
                facts.append(_facts(item))
                if progress:
                    progress()
            collections[stage] = _collection(stage, facts, ctx, license)
    except BaseException:
        for tmp, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    for tmp, final in staged:
        _swap_in(tmp, final)
    for stage, collection in collections.items():
        _write_json(
            root / stage / "collection.json", collection.to_dict(include_self_link=False, transform_hrefs=False)
        )
    name = root.resolve().name
    catalog = pystac.Catalog(
        id=name, description=f"synthgen dataset {name}: one collection per stage, one item per tile", title=name
    )
    catalog.add_link(pystac.Link("root", "./catalog.json", pystac.MediaType.JSON))
    for stage in collections:
        catalog.add_link(pystac.Link("child", f"./{stage}/collection.json", pystac.MediaType.JSON, f"stage {stage}"))
    catalog.add_link(pystac.Link("describedby", "./README.md", "text/markdown", "data card"))
    path = root / "catalog.json"
    _write_json(path, catalog.to_dict(include_self_link=False, transform_hrefs=False))
    return {"catalog": str(path), "collections": {s: len(frames[s]) for s in collections}, "extracted": extract}
