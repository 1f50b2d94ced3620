"""Ingest takes image pixels by their dtype and bit depth and label files only when stored losslessly
(synthgen/io/pixels.py): 16-bit and float images become the same uint8 tiles as the 8-bit original, values that do
not fit their declared range and dtypes without a rule are refused, and a label file whose codes went through lossy
compression (told by content, not by name) is refused before anything is written."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from synthgen.config import build_config
from synthgen.errors import ConfigError, RasterError, SchemeError
from synthgen.io.manifest import iter_samples
from synthgen.io.pixels import ImageDepth, image_to_uint8, lossy_compression
from synthgen.jobs.ingest import IngestConfig, make_plan, run_ingest
from tests.conftest import plain_config_values, scene_config_values

IMAGES = ("area_a/images/t0.tif", "area_a/images/t1.tif", "area_b/images/t2.tif")


def _rewrite(path: Path, convert, **profile) -> None:
    """Replace the raster at ``path`` by ``convert(its array)`` on the same grid, with ``profile`` changes."""
    with rasterio.open(path) as ds:
        array, kept = ds.read(), ds.profile
    array = convert(array)
    kept.update(dtype=array.dtype.name, count=array.shape[0], **profile)
    kept.pop("blockxsize", None), kept.pop("blockysize", None), kept.pop("tiled", None)
    path.unlink()
    with rasterio.open(path, "w", **kept) as dst:
        dst.write(array)


def _scene(fixtures_dir: Path, tmp_path: Path, name: str) -> dict:
    """Ingest config values over a private copy of the scene fixture (named ``name``)."""
    values = scene_config_values(fixtures_dir, tmp_path / name)
    root = tmp_path / name / "scene"
    shutil.copytree(fixtures_dir / "scene", root)
    values.update(root=str(root), name=name)
    return values


def _rgb_tiles(values: dict) -> dict[str, np.ndarray]:
    config = build_config(IngestConfig, values)
    run_ingest(config)
    return {s["key"].split("_", 1)[1]: s["rgb"] for s in iter_samples(config.manifest_path)}


def _outputs(values: dict) -> list[Path]:
    config = build_config(IngestConfig, values)
    return [p for p in (config.out_dir, config.manifest_path) if p.exists()]


@pytest.fixture(scope="module")
def original(fixtures_dir, tmp_path_factory) -> dict[str, np.ndarray]:
    """The rgb tiles of the 8-bit scene, by key (without the dataset name)."""
    return _rgb_tiles(_scene(fixtures_dir, tmp_path_factory.mktemp("original"), "orig"))


# ---------------------------------------------------------------------------------------------- images that scale


@pytest.mark.parametrize(
    ("name", "convert", "profile", "bit_depth"),
    [
        ("u16-full-range", lambda a: a.astype(np.uint16) * 257, {}, None),
        ("u16-nbits-12", lambda a: np.rint(a * (4095 / 255)).astype(np.uint16), {"nbits": 12}, None),
        ("u16-config-12-bits", lambda a: np.rint(a * (4095 / 255)).astype(np.uint16), {}, 12),
        ("float32-unit", lambda a: (a / 255).astype(np.float32), {}, None),
        ("float64-unit", lambda a: a / 255.0, {}, None),
    ],
)
def test_deep_and_float_images_give_the_tiles_of_the_8_bit_original(
    fixtures_dir, tmp_path, original, name, convert, profile, bit_depth
):
    values = _scene(fixtures_dir, tmp_path, name)
    for image in IMAGES:
        _rewrite(Path(values["root"]) / image, convert, **profile)
    tiles = _rgb_tiles({**values, "bit_depth": bit_depth})
    assert tiles.keys() == original.keys()
    for key, rgb in tiles.items():
        assert rgb.dtype == np.uint8
        assert np.array_equal(rgb, original[key]), key
    # what the issue saw before: a 16-bit image clipped to 255 almost everywhere
    assert np.mean([(rgb == 255).mean() for rgb in tiles.values()]) < 0.05


def test_uint16_without_declared_depth_is_scaled_by_the_dtype_range_not_clipped(fixtures_dir, tmp_path, original):
    """12-bit values stored in uint16 without NBITS or bit_depth: the rule is the dtype's range (dark, never 255)."""
    values = _scene(fixtures_dir, tmp_path, "u16-undeclared")
    for image in IMAGES:
        _rewrite(Path(values["root"]) / image, lambda a: np.rint(a * (4095 / 255)).astype(np.uint16))
    tiles = _rgb_tiles(values)
    for key, rgb in tiles.items():
        expected = np.rint(np.rint(original[key] * (4095 / 255)) * (255 / 65535))
        assert np.abs(rgb.astype(int) - expected).max() <= 1
        assert rgb.max() <= 16


def test_float_image_nodata_becomes_zero_and_the_rest_scales(fixtures_dir, tmp_path, original):
    values = _scene(fixtures_dir, tmp_path, "float-nodata")

    def with_holes(a):
        out = (a / 255).astype(np.float32)
        out[:, :4, :4] = np.nan
        return out

    for image in IMAGES:
        _rewrite(Path(values["root"]) / image, with_holes, nodata=float("nan"))
    tiles = _rgb_tiles(values)
    corner = tiles["area_a-images-t0_y00000_x00000"]
    assert (corner[:4, :4] == 0).all()
    assert np.array_equal(corner[4:, 4:], original["area_a-images-t0_y00000_x00000"][4:, 4:])


# ---------------------------------------------------------------------------------------------- images refused


@pytest.mark.parametrize(
    ("dtype", "convert"),
    [
        ("int16", lambda a: a.astype(np.int16)),
        ("uint32", lambda a: a.astype(np.uint32)),
        ("int8", lambda a: (a // 2).astype(np.int8)),
        ("complex64", lambda a: a.astype(np.complex64)),
    ],
)
def test_image_dtypes_without_a_rule_are_refused_before_anything_is_written(fixtures_dir, tmp_path, dtype, convert):
    values = _scene(fixtures_dir, tmp_path, f"img-{dtype}")
    _rewrite(Path(values["root"]) / IMAGES[1], convert)
    with pytest.raises(RasterError, match=rf"t1.tif: image dtype {dtype} is not supported \(allowed: uint8, uint16"):
        make_plan(build_config(IngestConfig, values))
    with pytest.raises(RasterError):
        run_ingest(build_config(IngestConfig, values))
    assert _outputs(values) == []


@pytest.mark.parametrize(
    ("name", "convert", "match"),
    [
        ("float-0-255", lambda a: a.astype(np.float32), r"float32 values span \d+\.?\d*\.\.\d+.*\[0, 1\]"),
        ("float-negative", lambda a: (a / 255 - 0.5).astype(np.float32), r"values span -0\.\d+\.\..*\[0, 1\]"),
        ("float-nan-undeclared", lambda a: np.where(a > 200, np.nan, a / 255).astype(np.float32), "nan"),
    ],
)
def test_float_values_outside_0_1_are_refused_not_clipped(fixtures_dir, tmp_path, name, convert, match):
    values = _scene(fixtures_dir, tmp_path, name)
    for image in IMAGES:
        _rewrite(Path(values["root"]) / image, convert)
    with pytest.raises(RasterError, match=match):
        run_ingest(build_config(IngestConfig, values))
    assert not build_config(IngestConfig, values).manifest_path.exists()


def test_values_above_the_configured_bit_depth_are_refused(fixtures_dir, tmp_path):
    values = _scene(fixtures_dir, tmp_path, "over-depth")
    for image in IMAGES:
        _rewrite(Path(values["root"]) / image, lambda a: a.astype(np.uint16) * 257)
    with pytest.raises(RasterError, match=r"t0.tif: value \d+ is above 4095, .*12 bits \(config 'bit_depth'\)"):
        run_ingest(build_config(IngestConfig, {**values, "bit_depth": 12}))


@pytest.mark.parametrize("bit_depth", [0, 17, -8])
def test_bit_depth_must_be_1_to_16(fixtures_dir, tmp_path, bit_depth):
    with pytest.raises(ConfigError, match=rf"'bit_depth': {bit_depth} must be 1..16"):
        build_config(IngestConfig, {**scene_config_values(fixtures_dir, tmp_path), "bit_depth": bit_depth})


def test_bit_depth_above_the_image_dtype_is_refused(fixtures_dir, tmp_path):
    values = {**scene_config_values(fixtures_dir, tmp_path), "bit_depth": 12}
    with pytest.raises(ConfigError, match=r"'bit_depth': 12 is more than the 8 bits of .*t0.tif \(uint8\)"):
        make_plan(build_config(IngestConfig, values))


def test_image_to_uint8_rounds_by_depth_and_keeps_uint8_as_it_was():
    values = np.array([[[0.0, 2047.0, 4095.0]]], np.float32)
    assert image_to_uint8(values, ImageDepth("uint16", 4095.0, "12 bits"), None, "x").tolist() == [[[0, 127, 255]]]
    uint8 = np.array([[[0.0, 17.4, 255.0]]], np.float32)
    assert image_to_uint8(uint8, ImageDepth("uint8", 255.0, "uint8"), 17.4, "x").tolist() == [[[0, 17, 255]]]
    # half a uint8 step past [0, 1] still rounds into range; further is an error
    assert image_to_uint8(np.float32([[[1.0019]]]), ImageDepth("float32", 1.0, "f"), None, "x").tolist() == [[[255]]]
    with pytest.raises(RasterError, match="span 1.01..1.01"):
        image_to_uint8(np.float32([[[1.01]]]), ImageDepth("float32", 1.0, "f"), None, "x")


# ---------------------------------------------------------------------------------------------- label files


def _plain(fixtures_dir: Path, tmp_path: Path) -> dict:
    root = tmp_path / "plain"
    shutil.copytree(fixtures_dir / "plain", root)
    return plain_config_values(root, tmp_path)


def _jpeg_bytes(array: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", **options)
    return buf.getvalue()


@pytest.mark.parametrize("quality", [75, 100])
def test_png_label_holding_jpeg_bytes_is_refused(fixtures_dir, tmp_path, quality):
    values = _plain(fixtures_dir, tmp_path)
    label = Path(values["root"]) / "labels" / "p1.png"
    label.write_bytes(_jpeg_bytes(np.array(Image.open(label)), quality=quality))
    with pytest.raises(RasterError, match=r"p1.png: label file is JPEG \(lossy"):
        run_ingest(build_config(IngestConfig, values))
    assert _outputs(values) == []


def test_png_label_that_is_a_png_is_taken(fixtures_dir, tmp_path):
    values = _plain(fixtures_dir, tmp_path)
    run_ingest(build_config(IngestConfig, values))
    assert build_config(IngestConfig, values).manifest_path.exists()


@pytest.mark.parametrize(
    ("profile", "lossy"),
    [
        ({"compress": "jpeg"}, "JPEG-compressed GTiff"),
        ({"compress": "lerc", "max_z_error": 1}, "LERC with MAX_Z_ERROR 1"),
        ({"compress": "deflate", "predictor": 2}, None),
        ({"compress": "lzw"}, None),
        ({"compress": "lerc"}, None),
        ({"compress": "zstd"}, None),
        ({"compress": "packbits"}, None),
    ],
)
def test_geotiff_labels_refused_only_when_their_compression_is_lossy(fixtures_dir, tmp_path, profile, lossy):
    values = _scene(fixtures_dir, tmp_path, "tif-" + "-".join(map(str, profile.values())))
    label = Path(values["root"]) / "area_a" / "labels" / "t1.tif"
    _rewrite(label, lambda a: a, **profile)
    with rasterio.open(label) as ds:
        assert lossy_compression(ds) == lossy
    if lossy is None:
        make_plan(build_config(IngestConfig, values))
        return
    with pytest.raises(RasterError, match=rf"t1.tif: label file is {lossy} \(lossy"):
        run_ingest(build_config(IngestConfig, values))
    assert _outputs(values) == []


@pytest.mark.parametrize(("lossless", "lossy"), [(False, "lossy WEBP"), (True, None)])
def test_webp_labels_are_told_by_their_compression(tmp_path, lossless, lossy):
    path = tmp_path / "label.png"  # a misleading name: GDAL tells WebP by its bytes
    Image.fromarray(np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4), np.ones((8, 8), np.uint8))).convert(
        "RGB"
    ).save(path, format="WEBP", lossless=lossless)
    with rasterio.open(path) as ds:
        assert ds.driver == "WEBP"
        assert lossy_compression(ds) == lossy


def test_float_label_is_refused_and_wide_codes_are_reported_not_wrapped(fixtures_dir, tmp_path):
    values = _scene(fixtures_dir, tmp_path, "label-float")
    label = Path(values["root"]) / "area_a" / "labels" / "t1.tif"
    _rewrite(label, lambda a: a.astype(np.float32))
    with pytest.raises(RasterError, match="t1.tif: label dtype float32 is not an integer type"):
        make_plan(build_config(IngestConfig, values))

    values = _scene(fixtures_dir, tmp_path, "label-uint16")

    def wide(a):
        out = a.astype(np.uint16)
        out[0, :8, :8] = 257  # 257 as uint8 would wrap to 1, a valid isprs code
        return out

    _rewrite(Path(values["root"]) / "area_a" / "labels" / "t1.tif", wide)
    with pytest.raises(SchemeError, match=r"t1.tif: label value\(s\) 257 are not in scheme 'isprs'"):
        run_ingest(build_config(IngestConfig, values))
