"""Fit a ``HeightPrior`` to real lidar heights and building footprints.

The elevation folder holds ``dsm.tif``, ``dtm.tif`` (nodata -9999), ``hag.tif`` (height above ground) on one
2 m grid, and ``buildings.geojson`` footprints (any CRS GDAL knows, CRS84 in the shipped data) with an
optional ``HEIGHT`` attribute.

Which height raster: ``source="ndsm"`` (the default) uses DSM - DTM, ``source="hag"`` uses ``hag.tif``. On
the shipped data the per-footprint median of DSM - DTM agrees with the footprints' independent ``HEIGHT``
attribute (correlation about 0.97, mean absolute difference about 0.5 m), while ``hag.tif`` sits several
metres above DSM - DTM almost everywhere, bare ground included; the statistics returned by
``fit_height_prior_with_stats`` report both agreements so the choice can be checked on other data.

Assumptions, each a judgement the data cannot settle:

- Roof height of a footprint is the median height of its interior (the footprint eroded by one pixel, or
  the whole footprint when erosion would leave fewer than 3 pixels): edge pixels mix roof and ground, and
  overhanging trees would inflate a high percentile. The median of a gable roof is its mean height, which
  is what ``HeightPrior`` draws.
- A footprint is pitched when a gable model (height rising linearly from the eaves to a ridge along the
  footprint's longer axis, fitted by least squares on interior pixels) has a slope above 0.2 m/m and
  explains more than 20 % of the height variance; only footprints with at least 10 interior pixels count.
- Trees are the pixels higher than 2 m outside every footprint grown by one pixel. Unmapped buildings,
  bridges and power lines would also land there; in a residential block they are few.
- Tree tops are local maxima of tree height in a 5 x 5 pixel window; the crown radius is that of a disk with
  the tree area per top; the crown edge ratio follows from the mean tree-pixel height over the mean top
  height under a paraboloid crown (mean = top * (1 + edge) / 2).
- Low vegetation is the pixels from 0.1 m to 1 m outside the grown footprints (grass, shrubs, hedges, but
  also cars and crown fringes); ground noise is the root mean square of heights below 0.3 m in magnitude.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.features import rasterize
from rasterio.warp import transform_geom
from scipy import ndimage as ndi
from scipy import stats

from synthgen.errors import ConfigError, RasterError, allowed
from synthgen.models.height_prior import HeightPrior

SOURCES = ("ndsm", "hag")
NODATA = -9999.0
TREE_MIN_HEIGHT_M = 2.0
LOW_VEGETATION_RANGE_M = (0.1, 1.0)
GROUND_NOISE_RANGE_M = 0.3
PITCH_MIN_SLOPE = 0.2
PITCH_MIN_R2 = 0.2
PITCH_MIN_PIXELS = 10
TREE_TOP_WINDOW_PX = 5


def fit_height_prior(elevation_dir: Path, source: str = "ndsm") -> HeightPrior:
    """Fit a ``HeightPrior`` to the rasters and footprints in ``elevation_dir`` (see the module docstring)."""
    return fit_height_prior_with_stats(elevation_dir, source)[0]


def fit_height_prior_with_stats(elevation_dir: Path, source: str = "ndsm") -> tuple[HeightPrior, dict[str, Any]]:
    """Fit a ``HeightPrior`` and return it with a dict of fit statistics.

    The statistics: footprint counts, per-footprint roof heights (median, mean), the Kolmogorov-Smirnov
    distance and p-value of the fitted log-normal against those heights, the same for tree tops, pitched
    footprint counts, agreement of the roof heights with the footprints' ``HEIGHT`` attribute, and the
    median offset of ``hag.tif`` from DSM - DTM.
    """
    if source not in SOURCES:
        raise ConfigError(f"height prior fit: unknown source '{source}' (allowed: {allowed(SOURCES)})")
    elevation_dir = Path(elevation_dir)
    ndsm, hag, transform, crs, gsd = _read_heights(elevation_dir)
    height = ndsm if source == "ndsm" else hag
    footprints, attribute_heights = _rasterize_footprints(
        elevation_dir / "buildings.geojson", height.shape, transform, crs
    )

    roofs = _roofs(height, footprints, gsd)
    if len(roofs["height"]) < 3:
        raise RasterError(f"{elevation_dir}: only {len(roofs['height'])} footprints hold valid heights; need 3 to fit")
    roof_h = np.asarray(roofs["height"])
    b_mu, b_sigma = _lognormal(roof_h)
    pitched = np.asarray(roofs["pitched"], bool)
    candidates = np.asarray(roofs["candidate"], bool)
    slopes = np.asarray(roofs["slope"])
    half_widths = np.asarray(roofs["half_width"])
    pitch_probability = float(pitched.sum() / max(candidates.sum(), 1))
    pitch_ratio = float(np.median(slopes[pitched])) if pitched.any() else 0.0
    pitch_max_half_width = float(half_widths[pitched].max()) if pitched.any() else 0.0

    grown = ndi.binary_dilation(footprints > 0, iterations=1)
    valid = np.isfinite(height)
    open_ground = valid & ~grown
    trees = open_ground & (height > TREE_MIN_HEIGHT_M)
    if trees.sum() < 10:
        raise RasterError(f"{elevation_dir}: only {int(trees.sum())} tree pixels (> 2 m outside footprints); need 10")
    local_max = ndi.maximum_filter(np.where(trees, height, -np.inf), size=TREE_TOP_WINDOW_PX)
    tops = trees & (height == local_max)
    top_h = height[tops].astype(np.float64)
    t_mu, t_sigma = _lognormal(top_h)
    area_per_top_m2 = trees.sum() * gsd * gsd / tops.sum()
    edge_ratio = float(np.clip(2.0 * height[trees].mean() / top_h.mean() - 1.0, 0.0, 1.0))

    low = open_ground & (height >= LOW_VEGETATION_RANGE_M[0]) & (height < LOW_VEGETATION_RANGE_M[1])
    lv_mu, lv_sigma = _lognormal(height[low].astype(np.float64))
    flat = open_ground & (np.abs(height) < GROUND_NOISE_RANGE_M)
    ground_sigma = float(np.sqrt(np.mean(height[flat].astype(np.float64) ** 2)))

    prior = HeightPrior(
        building_height_mu=b_mu,
        building_height_sigma=b_sigma,
        building_height_min=float(roof_h.min()),
        building_height_max=float(roof_h.max()),
        roof_pitch_probability=pitch_probability,
        roof_pitch_ratio=pitch_ratio,
        roof_pitch_max_half_width_m=pitch_max_half_width,
        tree_height_mu=t_mu,
        tree_height_sigma=t_sigma,
        tree_height_min=float(top_h.min()),
        tree_height_max=float(top_h.max()),
        tree_crown_radius_m=float(np.sqrt(area_per_top_m2 / np.pi)),
        tree_crown_edge_ratio=edge_ratio,
        low_vegetation_height_mu=lv_mu,
        low_vegetation_height_sigma=lv_sigma,
        low_vegetation_height_max=LOW_VEGETATION_RANGE_M[1],
        ground_noise_sigma=ground_sigma,
        gsd=gsd,
    )

    ks_b = stats.kstest(roof_h, "lognorm", args=(b_sigma, 0.0, np.exp(b_mu)))
    ks_t = stats.kstest(top_h, "lognorm", args=(t_sigma, 0.0, np.exp(t_mu)))
    attr = np.asarray([attribute_heights[i] for i in roofs["index"]], np.float64)
    has_attr = np.isfinite(attr)
    both = np.isfinite(ndsm) & np.isfinite(hag)
    fit_stats: dict[str, Any] = {
        "source": source,
        "gsd": gsd,
        "n_footprints": len(attribute_heights),
        "n_buildings": int(roof_h.size),
        "building_height_median_m": float(np.median(roof_h)),
        "building_height_mean_m": float(roof_h.mean()),
        "building_ks_statistic": float(ks_b.statistic),
        "building_ks_pvalue": float(ks_b.pvalue),
        "n_pitch_candidates": int(candidates.sum()),
        "n_pitched": int(pitched.sum()),
        "n_attribute_heights": int(has_attr.sum()),
        "attribute_height_corr": float(np.corrcoef(roof_h[has_attr], attr[has_attr])[0, 1])
        if has_attr.sum() > 2
        else float("nan"),
        "attribute_height_mae_m": float(np.mean(np.abs(roof_h[has_attr] - attr[has_attr])))
        if has_attr.any()
        else float("nan"),
        "n_tree_pixels": int(trees.sum()),
        "n_tree_tops": int(tops.sum()),
        "tree_top_height_median_m": float(np.median(top_h)),
        "tree_ks_statistic": float(ks_t.statistic),
        "tree_ks_pvalue": float(ks_t.pvalue),
        "hag_minus_ndsm_median_m": float(np.median(hag[both] - ndsm[both])),
    }
    return prior, fit_stats


def _read_heights(folder: Path) -> tuple[np.ndarray, np.ndarray, Any, Any, float]:
    """DSM - DTM and hag as float32 with NaN for nodata (negatives set to 0), plus transform, CRS and gsd."""
    arrays = {}
    grid = None
    for name in ("dsm", "dtm", "hag"):
        path = folder / f"{name}.tif"
        if not path.is_file():
            raise RasterError(
                f"{path}: missing (an elevation folder holds dsm.tif, dtm.tif, hag.tif, buildings.geojson)"
            )
        with rasterio.open(path) as src:
            data = src.read(1).astype(np.float32)
            nodata = NODATA if src.nodata is None else src.nodata
            this_grid = (src.shape, src.transform, src.crs)
        if grid is not None and this_grid != grid:
            raise RasterError(f"{path}: grid {this_grid[0]} {this_grid[1]} {this_grid[2]} differs from dsm.tif's")
        grid = this_grid
        data[(data == nodata) | ~np.isfinite(data)] = np.nan
        arrays[name] = data
    shape, transform, crs = grid
    if abs(abs(transform.a) - abs(transform.e)) > 1e-6 or transform.b or transform.d:
        raise RasterError(f"{folder}: pixels must be square and north-up, got transform {tuple(transform)[:6]}")
    ndsm = np.maximum(arrays["dsm"] - arrays["dtm"], 0.0)
    hag = np.maximum(arrays["hag"], 0.0)
    return ndsm, hag, transform, crs, float(abs(transform.a))


def _rasterize_footprints(
    path: Path, shape: tuple[int, int], transform: Any, crs: Any
) -> tuple[np.ndarray, list[float]]:
    """Footprint index + 1 per pixel (0 outside) and each footprint's ``HEIGHT`` attribute (NaN if absent)."""
    if not path.is_file():
        raise RasterError(f"{path}: missing (building footprints as GeoJSON)")
    data = json.loads(path.read_text())
    src_crs = (data.get("crs") or {}).get("properties", {}).get("name", "OGC:CRS84")
    if src_crs.startswith("urn:ogc:def:crs:OGC:1.3:CRS84"):
        src_crs = "OGC:CRS84"
    shapes = []
    attribute = []
    for i, feature in enumerate(data.get("features", [])):
        value = (feature.get("properties") or {}).get("HEIGHT")
        attribute.append(float(value) if value is not None else float("nan"))
        if feature.get("geometry"):
            shapes.append((transform_geom(src_crs, crs, feature["geometry"]), i + 1))
    if not shapes:
        raise RasterError(f"{path}: no footprint geometries")
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32"), attribute


def _roofs(height: np.ndarray, footprints: np.ndarray, gsd: float) -> dict[str, list]:
    """Per footprint with valid pixels: roof height, gable slope and half-width, and the pitch decision."""
    out: dict[str, list] = {k: [] for k in ("index", "height", "slope", "half_width", "candidate", "pitched")}
    objects = ndi.find_objects(footprints)
    for index, window in enumerate(objects):
        if window is None:
            continue
        mask = footprints[window] == index + 1
        interior = ndi.binary_erosion(mask)
        if interior.sum() < 3:
            interior = mask
        interior &= np.isfinite(height[window])
        if not interior.any():
            continue
        ys, xs = np.nonzero(interior)
        values = height[window][interior].astype(np.float64)
        slope, half_width, r2 = _gable_fit(xs * gsd, ys * gsd, values)
        candidate = values.size >= PITCH_MIN_PIXELS
        out["index"].append(index)
        out["height"].append(float(np.median(values)))
        out["slope"].append(slope)
        out["half_width"].append(half_width + 1.5 * gsd)
        out["candidate"].append(candidate)
        out["pitched"].append(bool(candidate and slope > PITCH_MIN_SLOPE and r2 > PITCH_MIN_R2))
    return out


def _gable_fit(x: np.ndarray, y: np.ndarray, h: np.ndarray) -> tuple[float, float, float]:
    """Least-squares gable along the longer axis: (slope in m/m, half-width in m, R^2)."""
    if h.size < 3:
        return 0.0, 0.0, 0.0
    dx = x - x.mean()
    dy = y - y.mean()
    theta = 0.5 * np.arctan2(2.0 * np.mean(dx * dy), np.mean(dx * dx) - np.mean(dy * dy))
    across = np.abs(-np.sin(theta) * dx + np.cos(theta) * dy)
    half_width = float(across.max())
    run = half_width - across
    if np.ptp(run) == 0 or np.ptp(h) == 0:
        return 0.0, half_width, 0.0
    design = np.stack([np.ones_like(run), run], axis=1)
    coef, *_ = np.linalg.lstsq(design, h, rcond=None)
    residual = h - design @ coef
    r2 = 1.0 - float(np.sum(residual**2) / np.sum((h - h.mean()) ** 2))
    return float(coef[1]), half_width, r2


def _lognormal(values: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood log-normal (mu, sigma) of positive values."""
    logs = np.log(values[values > 0])
    return float(logs.mean()), float(logs.std())
