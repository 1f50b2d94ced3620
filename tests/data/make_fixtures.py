"""Seeded fixture data for the tests: small GeoTIFFs with real CRSs, plain PNGs, a DSM/DTM pair and footprints.

Run as a script to write them into a folder (``python tests/data/make_fixtures.py OUT``); the test suite calls
``make_fixtures(tmp)`` once per session. Layout written under OUT:

    scene/area_a/images/t0.tif, t1.tif   3-band uint8, EPSG:32633, 96x80 px at 0.5 m
    scene/area_a/labels/t0.tif, t1.tif   isprs codes 0..6 on the image grid
    scene/area_b/images/t2.tif           as above, elsewhere
    scene/area_b/labels/t2.tif           on a grid shifted by one pixel east and south (needs reprojection)
    series/s_20100601.tif, s_20120701.tif, s_20140801.tif   4-band, same place, grids differing by a pixel
    plain/images/p0.png, p1.png          no georeference, 64x64 RGB
    plain/labels/p0.png, p1.png          dubai codes (0..5, 255)
    lidar/dsm.tif, dtm.tif               float32, EPSG:26918, 48x40 px at 2 m, nodata -9999
    lidar/buildings.geojson              two footprints in CRS84
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.warp import transform as warp_transform

SEED = 0


def _blocky_labels(rng: np.random.Generator, height: int, width: int, codes: list[int], block: int = 8) -> np.ndarray:
    small = rng.choice(codes, size=(-(-height // block), -(-width // block)))
    return np.kron(small, np.ones((block, block), dtype=np.int64))[:height, :width].astype(np.uint8)


def _image_from_labels(rng: np.random.Generator, labels: np.ndarray, bands: int = 3) -> np.ndarray:
    colours = rng.integers(20, 235, size=(256, bands))
    noise = rng.integers(-10, 10, size=(*labels.shape, bands))
    return np.clip(colours[labels] + noise, 0, 255).astype(np.uint8).transpose(2, 0, 1)


def write_tif(path: Path, array: np.ndarray, crs, transform: Affine, nodata=None) -> None:
    """Write an array (HxW or CxHxW) as a plain GTiff with the given CRS (or None) and transform."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 2:
        array = array[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=array.shape[2],
        height=array.shape[1],
        count=array.shape[0],
        dtype=array.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(array)


def make_fixtures(out: Path) -> Path:
    """Write every fixture under ``out`` (deterministic for SEED) and return ``out``."""
    out = Path(out)
    rng = np.random.default_rng(SEED)
    isprs = [0, 1, 2, 3, 4, 5, 6]
    for i, (area, x0) in enumerate([("area_a", 500_000.0), ("area_a", 500_048.0), ("area_b", 501_000.0)]):
        transform = Affine(0.5, 0, x0, 0, -0.5, 5_500_000.0)
        labels = _blocky_labels(rng, 80, 96, isprs)
        write_tif(out / f"scene/{area}/images/t{i}.tif", _image_from_labels(rng, labels), "EPSG:32633", transform)
        label_transform = transform @ Affine.translation(1, 1) if area == "area_b" else transform
        write_tif(out / f"scene/{area}/labels/t{i}.tif", labels, "EPSG:32633", label_transform)

    base = _blocky_labels(rng, 60, 72, list(range(8)), block=6)
    for j, date in enumerate(["20100601", "20120701", "20140801"]):
        transform = Affine(5.0, 0, 485_900.0 + 5.0 * (j % 2), 0, -5.0, 5_209_245.0 + 2.0 * j)
        image = _image_from_labels(np.random.default_rng(SEED + j), base, bands=4)
        write_tif(out / f"series/s_{date}.tif", image, "EPSG:26914", transform, nodata=0)

    for k in range(2):
        labels = _blocky_labels(rng, 64, 64, [0, 1, 2, 3, 4, 5, 255])
        (out / "plain/images").mkdir(parents=True, exist_ok=True)
        (out / "plain/labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image_from_labels(rng, labels).transpose(1, 2, 0)).save(out / f"plain/images/p{k}.png")
        Image.fromarray(labels).save(out / f"plain/labels/p{k}.png")

    transform = Affine(2.0, 0, 321_498.0, 0, -2.0, 4_298_018.0)
    dtm = (10 + rng.random((40, 48)) * 0.5).astype(np.float32)
    dsm = dtm + (rng.random((40, 48)) * 0.3).astype(np.float32)
    dsm[5:15, 5:15] += 12.0
    dsm[25:35, 30:40] += 6.0
    dsm[0, 0] = -9999.0
    write_tif(out / "lidar/dsm.tif", dsm, "EPSG:26918", transform, nodata=-9999.0)
    write_tif(out / "lidar/dtm.tif", dtm, "EPSG:26918", transform, nodata=-9999.0)
    features = []
    for r0, c0 in [(5, 5), (25, 30)]:
        xs = [transform.c + 2.0 * c for c in (c0, c0 + 10, c0 + 10, c0, c0)]
        ys = [transform.f - 2.0 * r for r in (r0, r0, r0 + 10, r0 + 10, r0)]
        lon, lat = warp_transform("EPSG:26918", "EPSG:4326", xs, ys)
        features.append(
            {
                "type": "Feature",
                "properties": {"HEIGHT": 10.0},
                "geometry": {"type": "Polygon", "coordinates": [list(map(list, zip(lon, lat, strict=True)))]},
            }
        )
    (out / "lidar/buildings.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
                "features": features,
            }
        )
    )
    return out


if __name__ == "__main__":
    print(make_fixtures(Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures")))
