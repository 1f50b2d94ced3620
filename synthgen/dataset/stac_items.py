"""One STAC item per tile: geometry and projection from the manifest row, an asset per raster, the tile's lineage.

An item has the tile's footprint in WGS 84 (``geometry``, ``bbox``) and its grid in its own CRS (projection extension:
``proj:code``, ``proj:shape``, ``proj:transform``, ``proj:bbox``). Tiles placed on synthgen's synthetic grid say so:
``synthgen:synthetic_georef`` is true and ``synthgen:georef`` names the grid; their footprint is no place on Earth.

Assets ``rgb``, ``label``, ``height`` (those the tile has) are cloud-optimized GeoTIFFs with the raster extension's
band description, the file extension's ``file:checksum`` (the manifest's sha256 as a multihash) and ``file:size``;
``rgb`` has the eo extension's bands, ``label`` the classification extension's classes (code, name, colour of the
scheme). The label extension describes the label raster for the item: a segmentation raster, its class codes and
the pixel count per class (``label:overviews``, from the manifest's class histogram).

Links: ``derived_from`` to the item of each parent tile in the catalog (lineage: the manifest's ``parent_keys``) and
``via`` to the model that made the tile (its folder's ``model_index.json`` or ``config.json``, or its hub page).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pystac
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from synthgen.io.geotiff import SYNTHETIC_CRS, SYNTHETIC_ORIGIN
from synthgen.schema import ClassScheme

EXTENSIONS = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "label": "https://stac-extensions.github.io/label/v1.0.1/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "projection": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
}
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
SYNTHETIC_GRID = (
    f"synthetic: synthgen's documented grid in {SYNTHETIC_CRS} from {SYNTHETIC_ORIGIN} (near Null Island, open "
    "ocean); the footprint is no place on Earth"
)
RASTER_BANDS = {
    "rgb": [{"data_type": "uint8", "name": name} for name in ("red", "green", "blue")],
    "height": [{"data_type": "float32", "nodata": "nan", "unit": "m"}],
}


@dataclass
class StageContext:
    """What the items of one stage share: the stage (collection id), its scheme, when its manifest was written,
    and where each model that made its tiles lives (model id -> link href, '' where unknown)."""

    stage: str
    scheme: ClassScheme | None
    written: _dt.datetime
    model_hrefs: dict[str, str]


def multihash_sha256(hex_digest: str) -> str:
    """A sha256 hex digest as the multihash the file extension's ``file:checksum`` takes (``1220`` + digest)."""
    return "1220" + hex_digest


def model_href(model_id: str, weights_dir: Path) -> str:
    """Where a model is: its local folder's ``model_index.json`` (or ``config.json``, or the folder), an embedded
    default's folder (``synthgen/weights/<name>`` resolved in ``weights_dir``), or a hub id's page."""
    if not model_id:
        return ""
    first = model_id.split("+")[0]  # climate with a ControlNet records "<model>+<controlnet>"
    folder = Path(first)
    if first.startswith("synthgen/weights/"):
        folder = weights_dir / first.removeprefix("synthgen/weights/")
    if folder.is_dir():
        for name in ("model_index.json", "config.json"):
            if (folder / name).is_file():
                return str((folder / name).resolve())
        return str(folder.resolve())
    return f"https://huggingface.co/{first}"


def footprint(crs: str, transform: Affine, width: int, height: int) -> tuple[dict, list[float], list[float]]:
    """The tile's polygon and bbox in WGS 84, and its bbox in its own CRS."""
    cols, rows = [0, width, width, 0, 0], [0, 0, height, height, 0]
    xs, ys = zip(*(transform * (c, r) for c, r in zip(cols, rows, strict=True)), strict=True)
    lons, lats = warp_transform(crs, "EPSG:4326", list(xs), list(ys))
    ring = [[round(x, 9), round(y, 9)] for x, y in zip(lons, lats, strict=True)]
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    return {"type": "Polygon", "coordinates": [ring]}, [round(v, 9) for v in bbox], [min(xs), min(ys), max(xs), max(ys)]


def projection_code(crs: str) -> dict:
    """``proj:code`` of an EPSG CRS; else ``proj:code`` null and the CRS as ``proj:wkt2``."""
    if crs.upper().startswith("EPSG:"):
        return {"proj:code": crs.upper()}
    return {"proj:code": None, "proj:wkt2": CRS.from_user_input(crs).to_wkt()}


def tile_datetime(meta: dict, written: _dt.datetime) -> _dt.datetime:
    """The tile's acquisition date where its metadata has one (``date``), else when its stage wrote it."""
    value = meta.get("date")
    if isinstance(value, str):
        try:
            parsed = _dt.datetime.fromisoformat(value)
        except ValueError:
            return written
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.UTC)
    return written


def _class_slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "class"


def label_fields(scheme: ClassScheme, class_hist) -> tuple[dict, list[dict]]:
    """The label extension's item properties and the classification extension's classes of a label raster."""
    counts = [
        {"name": c.name, "count": int(class_hist[c.code])}
        for c in scheme.valid_classes
        if c.code < len(class_hist) and class_hist[c.code]
    ]
    properties = {
        "label:description": f"land cover in scheme {scheme.name}, one class code per pixel",
        "label:type": "raster",
        "label:properties": None,
        "label:classes": [{"name": None, "classes": [c.code for c in scheme.valid_classes]}],
        "label:tasks": ["segmentation"],
        "label:methods": ["automated"],
        "label:overviews": [{"counts": counts}],  # no property_key: a raster label has no property
    }
    classes = [
        {
            "value": c.code,
            "name": _class_slug(c.name),
            "description": c.name,
            "color_hint": "{:02X}{:02X}{:02X}".format(*c.color),
            **({"nodata": True} if c.code == scheme.nodata else {}),
        }
        for c in scheme.classes
    ]
    return properties, classes


def _asset(kind: str, href: str, digest: str, size: int | None, gsd: float, classes: list[dict]) -> pystac.Asset:
    bands = [dict(b) for b in RASTER_BANDS.get(kind, [{"data_type": "uint8", "nodata": 0}])]
    for band in bands:
        band["spatial_resolution"] = gsd
    extra = {"raster:bands": bands, "file:checksum": multihash_sha256(digest)}
    if size is not None:
        extra["file:size"] = size
    if kind == "rgb":
        extra["eo:bands"] = [{"name": name, "common_name": name} for name in ("red", "green", "blue")]
        return pystac.Asset(href, "RGB image", media_type=COG, roles=["data"], extra_fields=extra)
    if kind == "label":
        extra["classification:classes"] = classes
        return pystac.Asset(
            href, "Land-cover label", media_type=COG, roles=["labels", "labels-raster"], extra_fields=extra
        )
    return pystac.Asset(href, "Height above ground (m)", media_type=COG, roles=["data"], extra_fields=extra)


def tile_item(
    row, ctx: StageContext, rasters: dict[str, tuple[str, int | None]], parents: dict[str, str]
) -> pystac.Item:
    """The STAC item of manifest row ``row``: ``rasters`` maps each raster kind to (asset href, size in bytes),
    ``parents`` each parent key present in the catalog to its item's href (relative to this item)."""
    transform = Affine(*row["transform"][:6])
    width, height = int(row["width_px"]), int(row["height_px"])
    geometry, bbox, proj_bbox = footprint(row["crs"], transform, width, height)
    meta = json.loads(row["meta"]) if row["meta"] else {}
    synthetic = bool(row["synthetic_georef"])
    properties = {
        "gsd": abs(transform.a),
        **projection_code(row["crs"]),
        "proj:shape": [height, width],
        "proj:transform": list(row["transform"][:6]),
        "proj:bbox": proj_bbox,
        "synthgen:stage": ctx.stage,
        "synthgen:synthetic_georef": synthetic,
        "synthgen:georef": SYNTHETIC_GRID if synthetic else f"real: {row['crs']}",
        **{
            f"synthgen:{k}": _plain(row[k])
            for k in ("generator", "generator_version", "seed", "model_id", "weights_hash", "config_hash")
        },
        "synthgen:parent_keys": list(row["parent_keys"]),
        **{f"synthgen:{k}": row[k] for k in ("scheme", "split", "source", "prompt")},
        "synthgen:quality_flags": list(row["quality_flags"]),
        "synthgen:meta": meta,
    }
    extensions = [EXTENSIONS[name] for name in ("projection", "file", "raster")]
    digests = dict(zip(row["members"], row["sha256"], strict=True))
    classes: list[dict] = []
    if "label" in rasters and ctx.scheme is not None:
        label_props, classes = label_fields(ctx.scheme, row["class_hist"])
        properties.update(label_props)
        extensions += [EXTENSIONS["label"], EXTENSIONS["classification"]]
    if "rgb" in rasters:
        extensions.append(EXTENSIONS["eo"])
    item = pystac.Item(
        id=row["key"],
        geometry=geometry,
        bbox=bbox,
        datetime=tile_datetime(meta, ctx.written),
        properties=properties,
        stac_extensions=sorted(extensions),
        collection=ctx.stage,
    )
    for kind, (href, size) in rasters.items():
        digest = digests[f"{row['key']}.{kind}.tif"]
        item.add_asset(kind, _asset(kind, href, digest, size, abs(transform.a), classes))
    for key, href in parents.items():
        item.add_link(pystac.Link("derived_from", href, pystac.MediaType.JSON, f"parent tile {key}"))
    href = ctx.model_hrefs.get(row["model_id"], "")
    if href:
        title = f"model {row['model_id']} (weights sha256 {row['weights_hash']})"
        item.add_link(pystac.Link("via", href, pystac.MediaType.JSON if href.endswith(".json") else None, title))
    return item


def _plain(value):
    """A manifest cell as a JSON value: numpy scalars as Python ones, missing values (None, NaN, pd.NA) as None."""
    if value is None or pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value
