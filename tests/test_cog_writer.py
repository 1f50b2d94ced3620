"""The direct tile writer (synthgen.io.cog_writer) against GDAL's COG driver: same reads, valid COG, stable bytes."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from affine import Affine
from rasterio.io import MemoryFile

from synthgen.io import geotiff
from synthgen.io.geotiff import Georef, encode_raster, synthetic_georef
from synthgen.schema import load_scheme


def _read(data: bytes) -> tuple[dict, np.ndarray]:
    from rio_cogeo.cogeo import cog_validate

    with MemoryFile(data) as memfile, memfile.open() as src:
        info = {
            "profile": src.profile,
            "tags": src.tags(),
            "band_tags": [src.tags(i) for i in src.indexes],
            "structure": src.tags(ns="IMAGE_STRUCTURE"),
            "descriptions": src.descriptions,
            "colorinterp": src.colorinterp,
            "colormap": src.colormap(1) if src.count == 1 and src.colorinterp[0].name == "palette" else None,
            "valid": cog_validate(src.name, quiet=True),
        }
        return {k: repr(v) for k, v in info.items()}, src.read()


@pytest.mark.parametrize("kind", ["rgb", "label", "height"])
@pytest.mark.parametrize("size", [64, 100])
@pytest.mark.parametrize("compress", ["zstd", "none"])
@pytest.mark.parametrize("real", [False, True])
def test_direct_writer_reads_back_like_gdal_cog(kind, size, compress, real):
    rng = np.random.default_rng(0)
    scheme = load_scheme("oem8")
    arrays = {
        "rgb": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "label": rng.integers(0, 9, (size, size), dtype=np.uint8),
        "height": rng.gamma(2.0, 3.0, (size, size)).astype(np.float32),
    }
    arrays["height"][:3, :5] = np.nan
    georef = Georef("EPSG:32640", Affine(0.5, 0, 3e5, 0, -0.5, 2.78e6)) if real else synthetic_georef(7, size, 1.0)
    args = (kind, arrays[kind], georef, scheme if kind == "label" else None, compress)
    direct = encode_raster(*args)
    assert direct == encode_raster(*args)  # byte-identical across runs
    assert direct.startswith(b"II*\0\xc0\0\0\0GDAL_STRUCTURAL_METADATA_SIZE=")  # the direct writer ran
    with mock.patch.object(geotiff, "_encode_direct", lambda *a: None):
        gdal = encode_raster(*args)
    info, array = _read(direct)
    gdal_info, gdal_array = _read(gdal)
    assert info == gdal_info
    assert "(True, [], [])" == info["valid"]
    np.testing.assert_array_equal(array, gdal_array)


@pytest.mark.parametrize(
    "shape,dtype", [((256, 256), np.float32), ((37, 53), np.float32), ((16, 9, 3), np.float32), ((20, 31), np.float64)]
)
def test_float_predictor_is_imagecodecs_byte_for_byte(shape, dtype):
    import imagecodecs

    from synthgen.io.cog_writer import _floatpred

    rng = np.random.default_rng(1)
    tile = (rng.standard_normal(shape) * 1e3).astype(dtype)
    tile.flat[::7] = np.nan
    tile.flat[3] = np.inf
    tile.flat[5] = -0.0
    want = imagecodecs.floatpred_encode(tile, axis=1)
    assert _floatpred(tile).tobytes() == want.tobytes()
    swapped = tile.astype(tile.dtype.newbyteorder(">"))  # the same values, big-endian: the same little-endian TIFF
    assert _floatpred(swapped).tobytes() == want.tobytes()


@pytest.mark.parametrize("shape,dtype", [((256, 256, 3), np.uint8), ((37, 53), np.uint8), ((20, 31), np.uint16)])
def test_delta_predictor_is_imagecodecs_byte_for_byte(shape, dtype):
    import imagecodecs

    from synthgen.io.cog_writer import _delta

    tile = np.random.default_rng(2).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    assert _delta(tile).tobytes() == imagecodecs.delta_encode(tile, axis=1).tobytes()
    assert _delta(tile[:, ::-1]).tobytes() == imagecodecs.delta_encode(tile[:, ::-1].copy(), axis=1).tobytes()


@pytest.mark.parametrize("size,level", [(64, 1), (300, -1), (512, 1)])
def test_blocks_are_predicted_from_views_as_from_contiguous_copies(size, level):
    """Each block decompresses (imagecodecs' ZSTD) to what imagecodecs' predictor makes of a contiguous copy."""
    import imagecodecs

    from synthgen.io.cog_writer import _tiles

    rng = np.random.default_rng(size)
    arrays = {
        2: [
            rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            rng.integers(0, 9, (size, size), dtype=np.uint8),
            rng.integers(0, 9, (size, 2 * size), dtype=np.uint8)[:, ::2],  # not contiguous
        ],
        3: [
            rng.gamma(2.0, 3.0, (size, size)).astype(np.float32),
            rng.gamma(2.0, 3.0, (size, 2 * size)).astype(np.float32)[:, ::2],
            rng.gamma(2.0, 3.0, (2 * size, size)).astype(np.float32)[::2],
            rng.gamma(2.0, 3.0, (size, size, 2)).astype(np.float32),
        ],
    }
    for predictor, cases in arrays.items():
        for array in cases:
            padded = np.zeros((-(-size // 256) * 256,) * 2 + array.shape[2:], array.dtype)
            padded[:size, :size] = array
            want = []
            for r in range(0, padded.shape[0], 256):
                for c in range(0, padded.shape[1], 256):
                    block = np.ascontiguousarray(padded[r : r + 256, c : c + 256])
                    coded = (imagecodecs.delta_encode if predictor == 2 else imagecodecs.floatpred_encode)(
                        block, axis=1
                    )
                    want.append(coded.tobytes())
            tiles = _tiles(array, 256, predictor, "zstd", None, level)
            assert len(tiles) == len(want) and [imagecodecs.zstd_decode(t) for t in tiles] == want, (
                predictor,
                array.shape,
                array.strides,
            )
