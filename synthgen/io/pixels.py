"""What the pixels of a source raster may be, told from the open file: how an image's values become uint8, and
whether a label file is stored losslessly.

Images: uint8 is taken as it is; uint16 (and uint8 declaring fewer bits) is scaled by its bit depth ``b`` as
``v * 255 / (2**b - 1)``, ``b`` being the config's ``bit_depth`` if given, else the file's ``NBITS`` tag, else the
dtype's 16 bits; float32/float64 must hold values in [0, 1] and are scaled by 255. Every other dtype is refused.
Nodata pixels of a scaled image become 0, and a value outside its range is an error, never clipped.

Labels: class codes must come through unchanged, so the file must have an integer dtype and must not be stored
with lossy compression. Lossy is told by content, as GDAL identified the file, never by its name: the JPEG driver
(a ``.png`` holding JPEG bytes too), JPEG-compressed GeoTIFF, LERC with ``MAX_Z_ERROR`` > 0, and anything GDAL
reports as ``COMPRESSION_REVERSIBILITY=LOSSY`` (lossy WebP, JPEG 2000, JPEG XL).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthgen.errors import ConfigError, RasterError

ALLOWED_IMAGE_DTYPES = "uint8, uint16 (scaled by its bit depth), float32 or float64 in [0, 1]"
FLOAT_TOLERANCE = 0.5 / 255  # a float this far outside [0, 1] still rounds to 0 or 255
LOSSY_TIFF_COMPRESSIONS = ("JPEG", "YCbCr JPEG")


@dataclass(frozen=True)
class ImageDepth:
    """How one image's values become uint8: ``v * 255 / top``; ``rule`` says where ``top`` came from."""

    dtype: str
    top: float
    rule: str

    @property
    def as_is(self) -> bool:
        """True for a plain uint8 image, which is taken without scaling."""
        return self.dtype == "uint8" and self.top == 255


def image_depth(ds, where: str, bit_depth: int | None = None) -> ImageDepth:
    """The scaling of an open image raster ``ds`` (a ConfigError or RasterError naming the allowed dtypes if none)."""
    dtypes = set(ds.dtypes)
    if len(dtypes) != 1:
        found = ", ".join(sorted(dtypes))
        raise RasterError(f"{where}: bands of different dtypes ({found}); allowed image dtypes: {ALLOWED_IMAGE_DTYPES}")
    dtype = dtypes.pop()
    if dtype in ("float32", "float64"):
        return ImageDepth(dtype, 1.0, "float in [0, 1]")
    if dtype not in ("uint8", "uint16"):
        raise RasterError(f"{where}: image dtype {dtype} is not supported (allowed: {ALLOWED_IMAGE_DTYPES})")
    bits = np.dtype(dtype).itemsize * 8
    if bit_depth is not None:
        if bit_depth > bits:
            raise ConfigError(f"config 'bit_depth': {bit_depth} is more than the {bits} bits of {where} ({dtype})")
        return ImageDepth(dtype, 2.0**bit_depth - 1, f"{bit_depth} bits (config 'bit_depth')")
    nbits = ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
    if nbits is not None and nbits.isdigit() and 0 < int(nbits) < bits:
        return ImageDepth(dtype, 2.0 ** int(nbits) - 1, f"{nbits} bits (NBITS tag)")
    return ImageDepth(dtype, 2.0**bits - 1, f"{bits} bits ({dtype} range)")


def image_to_uint8(values: np.ndarray, depth: ImageDepth, nodata: float | None, where: str) -> np.ndarray:
    """Image values (any float array, read onto the tile grid) as uint8 by ``depth``; nodata pixels of a scaled
    image become 0, and a value outside the depth's range (or NaN) is a RasterError."""
    if depth.as_is:
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if nodata is None:
        missing = None
    else:
        missing = np.isnan(values) if np.isnan(nodata) else values == nodata
    valid = values if missing is None else values[~missing]
    if valid.size:
        lo, hi = float(np.min(valid)), float(np.max(valid))  # NaN propagates into both
        if depth.dtype.startswith("float"):
            if not (-FLOAT_TOLERANCE <= lo and hi <= 1 + FLOAT_TOLERANCE):
                raise RasterError(
                    f"{where}: {depth.dtype} values span {lo:g}..{hi:g}; a float image must hold values in [0, 1] "
                    f"(allowed image dtypes: {ALLOWED_IMAGE_DTYPES})"
                )
        elif hi > depth.top:
            raise RasterError(
                f"{where}: value {hi:g} is above {depth.top:g}, the top of its bit depth, {depth.rule}; "
                "set 'bit_depth' to the bits the sensor records"
            )
    scaled = values * np.float32(255 / depth.top)
    if missing is not None:
        scaled[missing] = 0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def lossy_compression(ds) -> str | None:
    """How an open raster ``ds`` is compressed lossily (e.g. 'JPEG'), or None if its pixels are stored exactly."""
    structure = ds.tags(ns="IMAGE_STRUCTURE")
    compression = structure.get("COMPRESSION", "")
    if ds.driver == "JPEG":
        return "JPEG"
    if compression.upper() in (c.upper() for c in LOSSY_TIFF_COMPRESSIONS):
        return f"{compression}-compressed {ds.driver}"
    if structure.get("COMPRESSION_REVERSIBILITY", "").upper().startswith("LOSSY"):
        return f"lossy {compression or ds.driver}"
    try:
        max_error = float(structure.get("MAX_Z_ERROR", 0))
    except ValueError:
        max_error = 0.0
    if max_error > 0:
        return f"{compression} with MAX_Z_ERROR {max_error:g}"
    return None


def check_label_file(ds, where: str) -> None:
    """Refuse a label raster whose class codes may not be exact: a non-integer dtype or lossy compression."""
    lossy = lossy_compression(ds)
    if lossy is not None:
        raise RasterError(
            f"{where}: label file is {lossy} (lossy: compression changes class codes); store labels losslessly "
            "(PNG, or GeoTIFF with DEFLATE, LZW, ZSTD or no compression)"
        )
    kinds = {np.dtype(d).kind for d in ds.dtypes}
    if kinds - {"u", "i"}:
        raise RasterError(f"{where}: label dtype {ds.dtypes[0]} is not an integer type (class codes are integers)")
