"""The three rasters of a tile as GeoTIFF bytes: ``rgb`` uint8x3, ``label`` uint8 with colormap, ``height`` float32.

Every raster is a COG as GDAL's COG driver writes it: tiled, compressed (ZSTD by default, or DEFLATE/LZW, with a
predictor), with a CRS and a transform, and no overviews (a tile is at most a few blocks). ZSTD and uncompressed rasters
with a north-up transform are written by ``cog_writer`` (the same layout and tags without opening a GDAL dataset for
every raster: 2x the tiles per CPU second); the rest by GDAL's COG driver. ZSTD runs at level 1 (``ZSTD_LEVEL``), not
GDAL's default 9, and at -1 for float rasters (``ZSTD_LEVEL_FLOAT``): on a 512 px rgb + label + height tile it
encodes about 4x faster for files 4 % larger (``make bench``, ``bench/engine.json``).

Synthetic georeference: generated tiles have no place on Earth. Unless the user gives one, tile ``i`` of a run is
placed on a grid in EPSG:3857 whose origin is 10 km east and 10 km south of (0, 0) — Null Island, in open ocean —
running east then south at the tile's GSD: tile column ``i % 1000``, tile row ``i // 1000``. Its JSON carries
``"synthetic_georef": true``.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioIOError
from rasterio.io import MemoryFile

from synthgen.errors import ConfigError, RasterError, allowed
from synthgen.io import cog_writer
from synthgen.io.qgis import write_label_sidecars
from synthgen.schema import ClassScheme

RASTER_KINDS = ("rgb", "label", "height")
COMPRESSIONS = ("zstd", "deflate", "lzw", "none")
SYNTHETIC_CRS = "EPSG:3857"
SYNTHETIC_GRID_COLUMNS = 1000
SYNTHETIC_ORIGIN = (10_000.0, -10_000.0)
ZSTD_LEVEL = 1
# Float rasters (heights): past predictor 3 their low mantissa bytes are noise, which zstd's fast level -1 packs as
# small as level 1 does, in less time (``make bench``: the writer's ``inline`` and ``inline_float_zstd_level_1``
# runs). GDAL takes levels 1 to 22 only: where GDAL writes the raster (see ``encode_raster``), floats get level 1.
ZSTD_LEVEL_FLOAT = -1


def zstd_level(dtype: np.dtype) -> int:
    """The ZSTD level of a raster of ``dtype``: ``ZSTD_LEVEL_FLOAT`` for floats, else ``ZSTD_LEVEL`` (read at call
    time, so a benchmark can patch them)."""
    return ZSTD_LEVEL_FLOAT if dtype.kind == "f" else ZSTD_LEVEL


@dataclass(frozen=True)
class Georef:
    """Where a tile lies: CRS (as a string rasterio accepts) and affine transform of its top-left pixel."""

    crs: str
    transform: Affine
    synthetic: bool = False


def synthetic_georef(index: int, size: int, gsd: float) -> Georef:
    """The documented synthetic georeference of tile ``index`` (see module docstring)."""
    col, row = index % SYNTHETIC_GRID_COLUMNS, index // SYNTHETIC_GRID_COLUMNS
    extent = size * gsd
    x0, y0 = SYNTHETIC_ORIGIN
    return Georef(SYNTHETIC_CRS, Affine(gsd, 0.0, x0 + col * extent, 0.0, -gsd, y0 - row * extent), synthetic=True)


@functools.lru_cache(maxsize=64)
def _cached_crs(crs: str) -> CRS:
    return CRS.from_user_input(crs)


def _crs(crs) -> CRS:
    """``CRS.from_user_input(crs)``, parsed once per CRS string (0.05 ms a raster otherwise; an invalid one still
    raises every time: errors are not cached)."""
    return _cached_crs(crs) if isinstance(crs, str) else CRS.from_user_input(crs)


def _profile(kind: str, array: np.ndarray, georef: Georef, compress: str) -> dict:
    if compress not in COMPRESSIONS:
        raise ConfigError(f"compression '{compress}' is not supported (allowed: {allowed(COMPRESSIONS)})")
    count, height, width = array.shape
    profile = {
        "driver": "COG",
        "width": width,
        "height": height,
        "count": count,
        "dtype": array.dtype.name,
        "crs": _crs(georef.crs),
        "transform": georef.transform,
        "blocksize": min(256, -(-max(height, width) // 16) * 16),
        "overviews": "NONE",
        "compress": compress,
    }
    if compress != "none":
        profile["predictor"] = 3 if kind == "height" else 2
    if compress == "zstd":
        profile["level"] = max(1, zstd_level(array.dtype))
    if kind == "height":
        profile["nodata"] = float("nan")
    return profile


def _check_array(kind: str, array: np.ndarray) -> np.ndarray:
    if kind not in RASTER_KINDS:
        raise ConfigError(f"raster kind '{kind}' is unknown (allowed: {allowed(RASTER_KINDS)})")
    want = {"rgb": (np.uint8, 3), "label": (np.uint8, 2), "height": (np.float32, 2)}[kind]
    if array.dtype != want[0] or array.ndim != want[1]:
        raise RasterError(
            f"{kind} raster must be {np.dtype(want[0]).name} with {want[1]} dims, got {array.dtype} {array.shape}"
        )
    if kind == "rgb":
        if array.shape[2] != 3:
            raise RasterError(f"rgb raster must be HxWx3, got {array.shape}")
        return array.transpose(2, 0, 1)  # a view: copied (contiguous) only where GDAL writes the raster
    return array[None]


def encode_raster(
    kind: str,
    array: np.ndarray,
    georef: Georef,
    scheme: ClassScheme | None = None,
    compress: str = "zstd",
) -> bytes:
    """Encode one raster of a tile as GeoTIFF bytes.

    ``rgb`` is HxWx3 uint8, ``label`` HxW uint8 (needs ``scheme``: its colormap and class names are embedded),
    ``height`` HxW float32 metres above ground with NaN as nodata.
    """
    bands = _check_array(kind, array)
    profile = _profile(kind, bands, georef, compress)
    if kind == "label" and scheme is None:
        raise ConfigError("a label raster needs its class scheme to embed the colormap")
    data = _encode_direct(kind, array, georef, scheme, profile)
    if data is not None:
        return data
    with MemoryFile() as memfile:
        with memfile.open(**profile) as dst:
            dst.write(np.ascontiguousarray(bands))
            if kind == "label":
                if scheme is None:
                    raise ConfigError("a label raster needs its class scheme to embed the colormap")
                dst.write_colormap(1, scheme.colormap())
                dst.set_band_description(1, f"land cover ({scheme.name})")
                dst.update_tags(1, SCHEME=scheme.name, **{f"CLASS_{c.code}": c.name for c in scheme.classes})
                if scheme.nodata is not None:
                    dst.nodata = scheme.nodata
            elif kind == "height":
                dst.set_band_description(1, "height above ground (m)")
                dst.update_tags(1, UNITS="m")
            else:
                dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
                for i, name in enumerate(("red", "green", "blue"), start=1):
                    dst.set_band_description(i, name)
            if georef.synthetic:
                dst.update_tags(SYNTHETIC_GEOREF="yes: see synthgen.io.geotiff")
        return bytes(memfile.getbuffer())


def _encode_direct(kind: str, array: np.ndarray, georef: Georef, scheme: ClassScheme | None, profile: dict):
    """The same raster through ``cog_writer`` (no GDAL on the hot path), or None where it does not apply."""
    dataset_tags = {"SYNTHETIC_GEOREF": "yes: see synthgen.io.geotiff"} if georef.synthetic else {}
    common = {
        "crs": georef.crs,
        "transform": georef.transform,
        "block": profile["blocksize"],
        "compress": profile["compress"],
        "predictor": profile.get("predictor", 1),
        "level": zstd_level(array.dtype),
        "dataset_tags": dataset_tags,
    }
    if kind == "rgb":
        return cog_writer.encode(
            np.ascontiguousarray(array), photometric=2, descriptions=["red", "green", "blue"], **common
        )
    if kind == "label":
        tags = {"SCHEME": scheme.name, **{f"CLASS_{c.code}": c.name for c in scheme.classes}}
        return cog_writer.encode(
            array,
            photometric=3,
            colormap=scheme.colormap(),
            nodata=scheme.nodata,
            band_tags=[tags],
            descriptions=[f"land cover ({scheme.name})"],
            **common,
        )
    return cog_writer.encode(
        array,
        photometric=1,
        nodata=float("nan"),
        band_tags=[{"UNITS": "m"}],
        descriptions=["height above ground (m)"],
        **common,
    )


@dataclass
class DecodedRaster:
    """A raster read back: the array in synthgen's layout (HxWx3 or HxW), CRS string, transform and tags."""

    array: np.ndarray
    crs: str
    transform: Affine
    tags: dict


def decode_raster(data: bytes, kind: str, where: str) -> DecodedRaster:
    """Decode GeoTIFF bytes written by ``encode_raster``; ``where`` names the source in errors."""
    try:
        with MemoryFile(io.BytesIO(data)) as memfile, memfile.open() as src:
            bands = src.read()
            crs = src.crs.to_string() if src.crs else ""
            transform = src.transform
            tags = src.tags()
    except RasterioIOError as exc:
        raise RasterError(f"{where}: not a readable GeoTIFF ({str(exc).splitlines()[0]})") from None
    array = bands.transpose(1, 2, 0) if kind == "rgb" else bands[0]
    return DecodedRaster(np.ascontiguousarray(array), crs, transform, tags)


def decode_array(data: bytes, kind: str, where: str) -> np.ndarray:
    """The array of GeoTIFF bytes written by ``encode_raster`` (HxWx3 or HxW), without the georeference: read by
    ``tifffile`` (GDAL opens a dataset for every raster, which takes longer than decoding a small tile), or by
    GDAL where tifffile cannot; ``where`` names the source in errors."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            array = tif.pages[0].asarray()
    except Exception:  # noqa: BLE001 - any file tifffile cannot take goes to GDAL, which names the problem
        return decode_raster(data, kind, where).array
    want = 3 if kind == "rgb" else 2
    if array.ndim != want:
        return decode_raster(data, kind, where).array
    return np.ascontiguousarray(array)


def write_raster_file(path, kind: str, array: np.ndarray, georef: Georef, scheme: ClassScheme | None = None) -> None:
    """Write one raster to a GeoTIFF file (same encoding as in shards); a label raster gets its QGIS style and GDAL
    category names beside it (``synthgen.io.qgis``)."""
    data = encode_raster(kind, array, georef, scheme)
    with open(path, "wb") as f:
        f.write(data)
    if kind == "label":
        write_label_sidecars(path, scheme)


def open_raster(path, where: str | None = None) -> rasterio.DatasetReader:
    """Open a raster file with rasterio, turning a missing or unreadable file into a one-line RasterError."""
    where = where or str(path)
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        msg = str(exc).splitlines()[0]
        if "No such file" in msg or "does not exist" in msg:
            raise RasterError(f"{where}: file not found") from None
        raise RasterError(f"{where}: not a readable raster ({msg})") from None
