"""Real-data sources for ingest: find them, and read one onto a single pixel grid.

A source is one primary file (an image, or a DSM where there is no image) with its partner files found through
templates: ``{path}`` (the primary file, relative to the root), ``{stem}``, ``{dir}``, ``{parent}``. Every raster of
a source is brought onto its reference grid: the primary file's own grid, or the first source's grid when the
config says ``align: first`` (a time series on slightly different grids). Georeferenced partners are reprojected
with rasterio; partners without a georeference must have the reference size exactly.

Sources without a georeference (plain JPG/PNG) get a synthetic one in the frame of synthgen.io.geotiff: pixel size
``gsd`` from the config (1 m if not given), source ``s`` with its top-left corner at the synthetic origin shifted
east by s * 1000 km, so that no two sources overlap.
"""

from __future__ import annotations

import json
import re
import string
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import CRSError, NotGeoreferencedWarning
from rasterio.features import rasterize
from rasterio.warp import Resampling, reproject, transform_bounds, transform_geom

from synthgen.errors import ConfigError, RasterError, allowed
from synthgen.io.geotiff import SYNTHETIC_CRS, SYNTHETIC_ORIGIN, open_raster
from synthgen.io.pixels import check_label_file, image_depth, image_to_uint8
from synthgen.schema import ClassScheme, map_labels

TEMPLATE_FIELDS = ("path", "stem", "dir", "parent")
SYNTHETIC_SOURCE_SPACING_M = 1_000_000.0


@dataclass(frozen=True)
class Source:
    """One source: the primary file and its partners (absolute paths or None)."""

    index: int
    rel: str
    image: Path | None
    label: Path | None
    height: Path | None
    dsm: Path | None
    dtm: Path | None
    footprints: Path | None

    def fields(self) -> dict:
        """The template fields of this source."""
        rel = Path(self.rel)
        return {"path": self.rel, "stem": rel.stem, "dir": str(rel.parent), "parent": str(rel.parent.parent)}


@dataclass(frozen=True)
class Grid:
    """A pixel grid: CRS (or None), transform, width, height."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    def scaled(self, scale: float) -> Grid:
        """The same extent sampled ``scale`` times as densely (scale 0.5 halves the pixel count per side)."""
        if scale == 1.0:
            return self
        width, height = round(self.width * scale), round(self.height * scale)
        transform = self.transform @ Affine.scale(self.width / width, self.height / height)
        return Grid(self.crs, transform, width, height)


@dataclass
class SourceArrays:
    """A source read onto its grid: rgb HxWx3 uint8, label HxW uint8 in the target scheme, height HxW float32."""

    grid: Grid
    rgb: np.ndarray | None
    label: np.ndarray | None
    height: np.ndarray | None
    synthetic_georef: bool


def fill_template(template: str, fields: dict, key: str) -> str:
    """Fill a path template with a source's fields; unknown fields are a ConfigError naming the allowed ones."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigError(f"config '{key}': template '{template}' is not valid ({exc})") from None
    unknown = sorted(names - set(fields))
    if unknown:
        raise ConfigError(f"config '{key}': unknown template field(s) {allowed(unknown)} (allowed: {allowed(fields)})")
    try:
        return template.format(**fields)
    except ValueError as exc:
        raise ConfigError(f"config '{key}': template '{template}' is not valid ({exc})") from None


def sanitize_key(text: str) -> str:
    """A tile-key-safe version of a path: letters, digits, '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")


def check_pattern(pattern: str) -> None:
    """Refuse a sources pattern that is empty or could match files outside the data root (absolute, or with '..')."""
    example = "e.g. '*/images/*.tif'"
    if not pattern.strip():
        raise ConfigError(f"config 'sources': the pattern is empty; give a glob relative to root, {example}")
    path = PurePosixPath(pattern)
    if path.is_absolute():
        raise ConfigError(
            f"config 'sources': '{pattern}' is an absolute path; give a glob relative to root, {example} "
            "(set root to the folder holding the files)"
        )
    if ".." in path.parts:
        raise ConfigError(f"config 'sources': '{pattern}' reaches outside root with '..'; set root to a folder above")


def find_sources(root: Path, pattern: str, templates: dict[str, str | None]) -> list[Source]:
    """Glob the primary files under ``root`` (sorted) and resolve each one's partners from the templates."""
    check_pattern(pattern)
    root = Path(root)
    if not root.is_dir():
        raise RasterError(f"{root}: data folder not found")
    primaries = sorted(p for p in root.glob(pattern) if p.is_file())
    if not primaries:
        raise RasterError(f"{root}: no files match sources pattern '{pattern}'")
    sources = []
    for i, primary in enumerate(primaries):
        rel = primary.relative_to(root).as_posix()
        stub = Source(i, rel, None, None, None, None, None, None)
        paths = {}
        for key, template in templates.items():
            if template is None:
                paths[key] = None
                continue
            path = (root / fill_template(template, stub.fields(), key)).resolve()
            if not path.is_file():
                raise RasterError(f"{path}: {key} file not found (for source {rel}, from template '{template}')")
            paths[key] = path
        sources.append(Source(i, rel, **paths))
    return sources


def _open(path: Path) -> rasterio.DatasetReader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return open_raster(path)


def _grid_of(ds) -> Grid:
    return Grid(ds.crs, ds.transform, ds.width, ds.height)


def source_grid(source: Source) -> Grid:
    """The native grid of a source's primary raster."""
    primary = source.image or source.dsm or source.height or source.label
    if primary is None:
        raise ConfigError(f"source {source.rel}: needs an image, dsm, height or label raster")
    with _open(primary) as ds:
        return _grid_of(ds)


def check_source_files(source: Source, bit_depth: int | None = None) -> None:
    """Refuse, from the file headers alone, an image whose dtype cannot become uint8 or a label file that is not
    exact (lossy or non-integer); see synthgen.io.pixels."""
    if source.image is not None:
        with _open(source.image) as ds:
            image_depth(ds, str(source.image), bit_depth)
    if source.label is not None:
        with _open(source.label) as ds:
            check_label_file(ds, str(source.label))


def _same_grid(a: Grid, b: Grid) -> bool:
    return (
        a.crs == b.crs
        and a.width == b.width
        and a.height == b.height
        and a.transform.almost_equals(b.transform, precision=1e-6)
    )


def _crs_name(crs: CRS) -> str:
    """A short one-line name of a CRS: its authority code, else the name in its WKT."""
    auth = crs.to_authority()
    if auth:
        return ":".join(auth)
    match = re.match(r'\s*\w+\["([^"]*)"', crs.to_wkt())
    return match.group(1) if match else "unnamed CRS"


def _read_onto(
    path: Path, ref: Grid, grid: Grid, bands: list[int], resampling: Resampling, fill: float, dtype
) -> np.ndarray:
    """Read ``bands`` of ``path`` onto ``grid`` (``ref`` rescaled); returns CxHxW.

    Both georeferenced: reprojected. Otherwise the file must have the reference size and is taken pixel for pixel.
    """
    with _open(path) as ds:
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise RasterError(f"{path}: has {ds.count} band(s); band(s) {allowed(bad)} requested")
        native = _grid_of(ds)
        out_shape = (len(bands), grid.height, grid.width)
        if native.crs is None or ref.crs is None:
            if (native.width, native.height) != (ref.width, ref.height):
                why = "it has no georeference" if native.crs is None else "its source has no georeference"
                raise RasterError(
                    f"{path}: size {native.width}x{native.height} does not match its source's "
                    f"{ref.width}x{ref.height} and {why} to align by"
                )
            return ds.read(bands, out_shape=out_shape, resampling=resampling).astype(dtype)
        if _same_grid(native, grid):
            return ds.read(bands).astype(dtype)
        try:
            left, bottom, right, top = transform_bounds(native.crs, grid.crs, *ds.bounds)
        except (CPLE_BaseError, CRSError):
            raise RasterError(
                f"{path}: its CRS ({_crs_name(native.crs)}) has no transformation to its source's ({grid.crs}), "
                "so it cannot be aligned"
            ) from None
        g_left, g_top = grid.transform @ (0, 0)
        g_right, g_bottom = grid.transform @ (grid.width, grid.height)
        if (
            right <= min(g_left, g_right)
            or left >= max(g_left, g_right)
            or top <= min(g_top, g_bottom)
            or bottom >= max(g_top, g_bottom)
        ):
            raise RasterError(f"{path}: does not overlap its source's grid ({grid.crs}), so it cannot be aligned")
        out = np.full(out_shape, fill, dtype=np.float32)
        for i, band in enumerate(bands):
            reproject(
                source=rasterio.band(ds, band),
                destination=out[i],
                dst_transform=grid.transform,
                dst_crs=grid.crs,
                dst_nodata=fill,
                src_nodata=ds.nodata,
                resampling=resampling,
            )
        return out.astype(dtype)


def _read_footprints(path: Path, grid: Grid, burn: int, background: int) -> np.ndarray:
    if grid.crs is None:
        raise RasterError(f"{path}: footprints need a georeferenced source grid to be rasterised on")
    try:
        doc = json.loads(path.read_text())
        features = doc["features"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RasterError(f"{path}: not a GeoJSON FeatureCollection") from None
    crs_name = (doc.get("crs") or {}).get("properties", {}).get("name", "OGC:CRS84")
    src_crs = "EPSG:4326" if "CRS84" in crs_name else crs_name
    shapes = [(transform_geom(src_crs, grid.crs, f["geometry"]), burn) for f in features if f.get("geometry")]
    if not shapes:
        return np.full((grid.height, grid.width), background, np.uint8)
    return rasterize(
        shapes, out_shape=(grid.height, grid.width), transform=grid.transform, fill=background, dtype="uint8"
    )


def read_source(
    source: Source,
    ref: Grid,
    scale: float,
    bands: list[int],
    scheme: ClassScheme,
    target: ClassScheme,
    footprint_class: int,
    gsd: float | None = None,
    bit_depth: int | None = None,
) -> SourceArrays:
    """Read every raster of a source onto ``ref`` rescaled by ``scale``: rgb, label in ``target``, height in metres.

    Images are resampled bilinearly (area-averaged when downscaling) and become uint8 by their dtype and bit depth
    (``bit_depth`` overrides the file's; synthgen.io.pixels), labels by nearest neighbour.
    """
    grid = ref.scaled(scale)
    image_resampling = Resampling.average if scale < 1 else Resampling.bilinear
    rgb = label = height = None
    if source.image is not None:
        if len(bands) != 3:
            raise ConfigError(f"config 'bands': an rgb tile needs exactly 3 bands, got {bands}")
        with _open(source.image) as ds:
            depth, image_nodata = image_depth(ds, str(source.image), bit_depth), ds.nodata
        rgb = _read_onto(source.image, ref, grid, bands, image_resampling, 0, np.float32)
        rgb = image_to_uint8(rgb, depth, image_nodata, str(source.image)).transpose(1, 2, 0)
    nodata = target.nodata if target.nodata is not None else 0
    if source.label is not None:
        with _open(source.label) as ds:
            check_label_file(ds, str(source.label))
            dtype = np.uint8 if ds.dtypes[0] == "uint8" else np.int64  # wider codes are reported, never wrapped
        fill = 255 if scheme.nodata is None else scheme.nodata
        raw = _read_onto(source.label, ref, grid, [1], Resampling.nearest, fill, dtype)[0]
        label = map_labels(raw, scheme, target, str(source.label))
    elif source.footprints is not None:
        label = _read_footprints(source.footprints, grid, footprint_class, nodata)
    if source.height is not None:
        height = _read_height(source.height, ref, grid, image_resampling)
    elif source.dsm is not None:
        if source.dtm is None:
            raise ConfigError(f"source {source.rel}: a dsm needs a dtm to give height above ground (nDSM)")
        height = np.maximum(
            _read_height(source.dsm, ref, grid, image_resampling)
            - _read_height(source.dtm, ref, grid, image_resampling),
            0,
        )
    synthetic = grid.crs is None
    if synthetic:
        pixel = (gsd or 1.0) / scale
        x0, y0 = SYNTHETIC_ORIGIN
        grid = Grid(
            CRS.from_user_input(SYNTHETIC_CRS),
            Affine(pixel, 0, x0 + source.index * SYNTHETIC_SOURCE_SPACING_M, 0, -pixel, y0),
            grid.width,
            grid.height,
        )
    return SourceArrays(grid, rgb, label, height, synthetic)


def _read_height(path: Path, ref: Grid, grid: Grid, resampling: Resampling) -> np.ndarray:
    with _open(path) as ds:
        src_nodata = ds.nodata
    values = _read_onto(path, ref, grid, [1], resampling, np.nan, np.float32)[0]
    if src_nodata is not None and not np.isnan(src_nodata):
        values[values == src_nodata] = np.nan
    return values
