"""A direct writer of the tile GeoTIFFs, in the layout GDAL's COG driver gives them, without GDAL on the hot path.

GDAL's COG driver costs about 5 ms per raster before any compression (it builds a temporary GTiff, exports the CRS
to WKT and back, clones PAM metadata and copies); a tile has three rasters. This module writes the same file
directly: a little-endian classic TIFF with GDAL's structural-metadata ghost header (``LAYOUT=IFDS_BEFORE_DATA``,
row-major blocks, each block led by its size as uint32 and trailed by its last 4 bytes repeated), then the one IFD
and its tag values, then the tiles. Tiles get TIFF predictor 2 or 3 (in numpy), then ZSTD (``zstandard``), or are
stored raw. The tags are those GDAL writes: ModelPixelScale + ModelTiepoint, the GeoKey directory (taken once
per CRS from a 1x1 GTiff written by GDAL itself, so every CRS is encoded exactly as GDAL encodes it), GDAL_NODATA,
GDAL_METADATA (dataset and band tags, band descriptions) and the colour map. The output reads back through
rasterio with the same CRS, transform, nodata, colour table, tags and descriptions, passes
``rio_cogeo.cog_validate``, and is byte-identical across runs.

``encode`` returns None where it does not apply (another compression, a rotated or south-up transform, a CRS GDAL
does not write as GeoKeys); the caller then uses GDAL.
"""

from __future__ import annotations

import functools
import io
import math
import struct
from xml.sax.saxutils import escape

import numpy as np
from affine import Affine

_GHOST_BODY = (
    "LAYOUT=IFDS_BEFORE_DATA\n"
    "BLOCK_ORDER=ROW_MAJOR\n"
    "BLOCK_LEADER=SIZE_AS_UINT4\n"
    "BLOCK_TRAILER=LAST_4_BYTES_REPEATED\n"
    "KNOWN_INCOMPATIBLE_EDITION=NO\n "
)
_GHOST = f"GDAL_STRUCTURAL_METADATA_SIZE={len(_GHOST_BODY):06d} bytes\n{_GHOST_BODY}".encode()
_IFD_START = 8 + len(_GHOST) + (len(_GHOST) % 2)

# TIFF field types: (code, struct format char, size)
_SHORT, _LONG, _ASCII, _DOUBLE = (3, "H", 2), (4, "I", 4), (2, "s", 1), (12, "d", 8)
_COMPRESSION = {"zstd": 50000, "none": 1}


def available(compress: str) -> bool:
    """True when this writer can encode with ``compress`` (``zstandard`` is needed for ZSTD)."""
    if compress == "none":
        return True
    if compress != "zstd":
        return False
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=64)
def geokeys(crs: str) -> tuple[tuple[int, str, tuple | bytes], ...] | None:
    """The GeoKey tags (34735 directory, 34736 doubles, 34737 ASCII) GDAL writes for ``crs``, or None."""
    import rasterio
    import tifffile
    from rasterio.io import MemoryFile

    profile = {"driver": "GTiff", "width": 1, "height": 1, "count": 1, "dtype": "uint8"}
    with MemoryFile() as memfile:
        with memfile.open(**profile, crs=crs, transform=Affine(2.0, 0.0, 1.0, 0.0, -2.0, 1.0)) as dst:
            dst.write(np.zeros((1, 1, 1), np.uint8))
        data = bytes(memfile.getbuffer())
        with rasterio.Env(GDAL_PAM_ENABLED="NO"), MemoryFile(data) as check, check.open() as src:
            if src.crs is None or src.crs != rasterio.crs.CRS.from_user_input(crs):
                return None  # GDAL could not write this CRS as GeoKeys: let GDAL handle the whole raster
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        tags = tif.pages[0].tags
        out = []
        for code, kind in ((34735, _SHORT), (34736, _DOUBLE), (34737, _ASCII)):
            if code in tags:
                value = tags[code].value
                out.append((code, kind, value.encode() + b"\0" if kind is _ASCII else tuple(value)))
    return tuple(out) if out and out[0][0] == 34735 else None


def _metadata_xml(dataset_tags: dict, band_tags: list[dict], descriptions: list[str | None]) -> str | None:
    """GDAL_METADATA as GDAL writes it: dataset items, then per band its tags (sorted) and description."""

    def item(name: str, value: str, extra: str = "") -> str:
        return f'  <Item name="{escape(name, {chr(34): "&quot;"})}"{extra}>{escape(str(value))}</Item>\n'

    lines = [item(k, v) for k, v in sorted(dataset_tags.items())]
    for band, (tags, desc) in enumerate(zip(band_tags, descriptions, strict=True)):
        lines += [item(k, v, f' sample="{band}"') for k, v in sorted(tags.items())]
        if desc:
            lines.append(item("DESCRIPTION", desc, f' sample="{band}" role="description"'))
    return "<GDALMetadata>\n" + "".join(lines) + "</GDALMetadata>" if lines else None


def _nodata_text(nodata: float) -> str:
    if math.isnan(nodata):
        return "nan"
    return str(int(nodata)) if float(nodata).is_integer() else repr(float(nodata))


def _tiles(
    array: np.ndarray, block: int, predictor: int, compress: str, nodata: float | None, level: int = 1
) -> list[bytes]:
    """The row-major tiles of an HxW or HxWxS array, padded to full blocks, predicted and compressed (ZSTD at
    ``level``)."""
    height, width = array.shape[:2]
    rows, cols = -(-height // block), -(-width // block)
    if (rows * block, cols * block) != (height, width):
        pad = ((0, rows * block - height), (0, cols * block - width)) + ((0, 0),) * (array.ndim - 2)
        fill = 0 if nodata is None or (math.isnan(nodata) and array.dtype.kind != "f") else nodata
        array = np.pad(array, pad, constant_values=fill)
    if compress == "none":
        return [
            np.ascontiguousarray(array[r : r + block, c : c + block]).tobytes()
            for r in range(0, rows * block, block)
            for c in range(0, cols * block, block)
        ]
    import zstandard

    compressor = zstandard.ZstdCompressor(level=level)
    out = []
    for r in range(0, rows * block, block):
        for c in range(0, cols * block, block):
            tile = array[r : r + block, c : c + block]  # a view: the predictors read it as it lies
            if predictor == 2:
                tile = _delta(tile)
            elif predictor == 3:
                tile = _floatpred(tile)
            else:
                tile = np.ascontiguousarray(tile)
            out.append(compressor.compress(tile))
    return out


def _delta(tile: np.ndarray) -> np.ndarray:
    """TIFF predictor 2 of an HxW or HxWxS integer tile: each sample minus the same sample a pixel before it in the
    row (wrapping), the first pixel of a row as it is; ``imagecodecs.delta_encode(tile, axis=1)`` byte for byte."""
    rows, samples = tile.shape[0], tile.shape[2] if tile.ndim == 3 else 1
    flat = np.ascontiguousarray(tile).reshape(rows, -1)
    out = np.empty_like(flat)
    out[:, :samples] = flat[:, :samples]
    np.subtract(flat[:, samples:], flat[:, :-samples], out=out[:, samples:])
    return out


def _floatpred(tile: np.ndarray) -> np.ndarray:
    """TIFF predictor 3 of an HxW or HxWxS little-endian float tile, byte for byte
    ``imagecodecs.floatpred_encode(tile, axis=1)``: per row, the bytes of every value regrouped most significant
    first, then each byte minus the one a pixel before it."""
    if tile.strides[-1] != tile.itemsize or tile.dtype != tile.dtype.newbyteorder("<"):
        tile = np.ascontiguousarray(tile, tile.dtype.newbyteorder("<"))  # viewed as little-endian bytes below
    rows, samples = tile.shape[0], tile.shape[2] if tile.ndim == 3 else 1
    planes = tile.view(np.uint8).reshape(rows, -1, tile.dtype.itemsize)[:, :, ::-1].transpose(0, 2, 1).reshape(rows, -1)
    out = np.empty_like(planes)  # each byte minus the one a pixel (``samples`` bytes) before it
    out[:, :samples] = planes[:, :samples]
    np.subtract(planes[:, samples:], planes[:, :-samples], out=out[:, samples:])
    return out


def encode(
    array: np.ndarray,
    crs: str,
    transform: Affine,
    block: int,
    compress: str,
    predictor: int,
    photometric: int,
    level: int,
    colormap: dict | None = None,
    nodata: float | None = None,
    dataset_tags: dict | None = None,
    band_tags: list[dict] | None = None,
    descriptions: list[str | None] | None = None,
) -> bytes | None:
    """A tiled GeoTIFF of ``array`` (HxW, or HxWxS pixel-interleaved) in GDAL's COG layout, or None where this
    writer does not apply (see the module docstring). ``level`` is the ZSTD level (unused by other compressions)."""
    if compress not in _COMPRESSION or not available(compress):
        return None
    a, b, c, d, e, f = transform[:6]
    if b != 0 or d != 0 or not a > 0 or not e < 0:
        return None
    keys = geokeys(crs)
    if keys is None:
        return None
    height, width = array.shape[:2]
    samples = array.shape[2] if array.ndim == 3 else 1
    bits, fmt = array.dtype.itemsize * 8, 3 if array.dtype.kind == "f" else 1
    tiles = _tiles(array, block, predictor, compress, nodata, level)
    tags: list[tuple[int, tuple, tuple | bytes]] = [
        (256, _SHORT if width < 65536 else _LONG, (width,)),
        (257, _SHORT if height < 65536 else _LONG, (height,)),
        (258, _SHORT, (bits,) * samples),
        (259, _SHORT, (_COMPRESSION[compress],)),
        (262, _SHORT, (photometric,)),
        (277, _SHORT, (samples,)),
        (284, _SHORT, (1,)),
    ]
    if compress != "none":
        tags.append((317, _SHORT, (predictor,)))
    if colormap is not None:
        table = np.zeros((3, 1 << bits), np.uint16)
        for code, rgba in colormap.items():
            table[:, code] = np.asarray(rgba[:3], np.uint16) * 257
        tags.append((320, _SHORT, tuple(table.ravel().tolist())))
    tags += [
        (322, _SHORT, (block,)),
        (323, _SHORT, (block,)),
        (324, _LONG, (0,) * len(tiles)),  # patched below
        (325, _LONG, tuple(len(t) for t in tiles)),
        (339, _SHORT, (fmt,) * samples),
        (33550, _DOUBLE, (a, -e, 0.0)),
        (33922, _DOUBLE, (0.0, 0.0, 0.0, c, f, 0.0)),
        *keys,
    ]
    xml = _metadata_xml(dataset_tags or {}, band_tags or [{}] * samples, descriptions or [None] * samples)
    if xml is not None:
        tags.append((42112, _ASCII, xml.encode() + b"\0"))
    if nodata is not None:
        tags.append((42113, _ASCII, _nodata_text(nodata).encode() + b"\0"))
    tags.sort(key=lambda t: t[0])

    # Out-of-line values follow the IFD in tag order, the tile offsets and byte counts last (as GDAL does).
    ifd_end = _IFD_START + 2 + 12 * len(tags) + 4
    order = [t for t in tags if t[0] not in (324, 325)] + [t for t in tags if t[0] in (324, 325)]
    value_at: dict[int, int] = {}
    pos = ifd_end
    for code, (_, _, size), value in order:
        nbytes = len(value) * size
        if nbytes > 4:
            pos += pos % 2
            value_at[code] = pos
            pos += nbytes
    offsets, at = [], pos
    for t in tiles:
        offsets.append(at + 4)
        at += 4 + len(t) + 4
    if at >= 1 << 32:
        return None  # needs BigTIFF: leave it to GDAL

    buf = bytearray(pos)  # header, IFD and tag values; the blocks are joined on after it
    buf[0:8] = b"II*\0" + struct.pack("<I", _IFD_START)
    buf[8 : 8 + len(_GHOST)] = _GHOST
    struct.pack_into("<H", buf, _IFD_START, len(tags))
    for i, (code, (ftype, char, size), value) in enumerate(tags):
        if code == 324:
            value = tuple(offsets)
        raw = value if char == "s" else struct.pack(f"<{len(value)}{char}", *value)
        entry = _IFD_START + 2 + 12 * i
        struct.pack_into("<HHI", buf, entry, code, ftype, len(raw) // size)
        if len(raw) <= 4:
            buf[entry + 8 : entry + 8 + len(raw)] = raw
        else:
            struct.pack_into("<I", buf, entry + 8, value_at[code])
            buf[value_at[code] : value_at[code] + len(raw)] = raw
    parts = [buf]  # each block led by its size and trailed by its last 4 bytes
    for t in tiles:
        parts += [struct.pack("<I", len(t)), t, t[-4:] if len(t) >= 4 else t.rjust(4, b"\0")]
    return b"".join(parts)
