"""Contact sheets: a PNG showing a few tiles of a manifest as ``rgb | label | height`` with a legend.

The sheet is a grid of cells, one per tile, each holding three square panels of ``PANEL_PX`` pixels (a tile is
scaled to fit, keeping its aspect ratio) and the tile key beneath. Labels are drawn in their scheme's palette,
heights as a viridis-like ramp from 0 m to the 99th percentile of the shown heights (at least 1 m), NaN black.
Below the grid, a legend per scheme shown (class swatches and names) and the height colour bar. A manifest whose
tiles hold rgb alone (``synthgen climate`` output) gets one ``rgb`` panel per cell and no legend; any manifest with
labels or heights keeps all three panels, a tile's missing raster drawn as a grey panel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from synthgen.errors import ConfigError, ManifestError
from synthgen.io.atomic import atomic_path
from synthgen.io.geotiff import RASTER_KINDS
from synthgen.io.manifest import iter_samples, read_manifest
from synthgen.schema import ClassScheme, load_scheme

PANEL_PX = 160
GAP = 4
MARGIN = 12
KEY_H = 18
HEADER_H = 24
CELL_W = 3 * PANEL_PX + 2 * GAP
CELL_H = PANEL_PX + KEY_H
SWATCH = 14
LEGEND_SLOT_W = 160
LEGEND_ROW_H = 20
LEGEND_GAP = 8
COLORBAR_W = 256
FONT_SIZE = 12

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MISSING = (150, 150, 150)
SUBTLE = (110, 110, 110)
LETTERBOX = (235, 235, 235)
RAMP_ANCHORS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64)


@dataclass(frozen=True)
class _Layout:
    columns: int
    rows: int
    cell_width: int
    width: int
    grid_top: int
    legend_top: int
    height: int


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def pick_rows(num_rows: int, n: int, seed: int) -> list[int]:
    """Row indices a sheet shows: all if ``n >= num_rows``, else a seeded sample kept in manifest order."""
    if n < 1:
        raise ConfigError(f"contact sheet size n={n} must be at least 1")
    if n >= num_rows:
        return list(range(num_rows))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(num_rows, size=n, replace=False).tolist())


def shown_members(df: pd.DataFrame) -> tuple[str, ...]:
    """The rasters a sheet of ``df`` shows per tile: ``("rgb",)`` when no tile of the manifest has a label or a
    height, else all of ``rgb, label, height``."""
    kinds = {
        name.removeprefix(f"{key}.").removesuffix(".tif")
        for key, members in zip(df["key"], df["members"], strict=True)
        for name in members
    }
    return RASTER_KINDS if kinds & {"label", "height"} else ("rgb",)


def cell_width(num_panels: int) -> int:
    """Width of a cell of ``num_panels`` panels side by side (``CELL_W`` for three)."""
    return num_panels * PANEL_PX + (num_panels - 1) * GAP


def height_ramp(height: np.ndarray, vmax: float) -> np.ndarray:
    """Heights (m) as HxWx3 uint8 colours: 0 to ``vmax`` along a viridis-like ramp, clipped, NaN black."""
    t = np.clip(np.nan_to_num(height, nan=0.0) / vmax, 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(RAMP_ANCHORS))
    rgb = np.stack([np.interp(t, stops, RAMP_ANCHORS[:, c]) for c in range(3)], axis=-1)
    rgb[~np.isfinite(height)] = 0
    return np.round(rgb).astype(np.uint8)


def height_range(samples: list[dict]) -> float:
    """The top of the height ramp: the 99th percentile of the valid heights shown, at least 1 m."""
    valid = [s["height"][np.isfinite(s["height"])] for s in samples if s["height"] is not None]
    values = np.concatenate(valid) if valid else np.empty(0)
    if values.size == 0:
        return 1.0
    return max(1.0, float(np.percentile(values, 99)))


def _fit(image: Image.Image, resample: Image.Resampling) -> Image.Image:
    scale = PANEL_PX / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    panel = Image.new("RGB", (PANEL_PX, PANEL_PX), LETTERBOX)
    panel.paste(image.resize(size, resample), ((PANEL_PX - size[0]) // 2, (PANEL_PX - size[1]) // 2))
    return panel


def _missing_panel(text: str, font) -> Image.Image:
    panel = Image.new("RGB", (PANEL_PX, PANEL_PX), MISSING)
    ImageDraw.Draw(panel).text((PANEL_PX / 2, PANEL_PX / 2), text, fill=BACKGROUND, font=font, anchor="mm")
    return panel


def _panels(sample: dict, members: tuple[str, ...], vmax: float, font) -> list[Image.Image]:
    rgb, label, height = sample["rgb"], sample["label"], sample["height"]
    bilinear, nearest = Image.Resampling.BILINEAR, Image.Resampling.NEAREST
    panels = [_fit(Image.fromarray(rgb), bilinear) if rgb is not None else _missing_panel("no rgb", font)]
    if "label" in members:
        scheme = load_scheme(sample["meta"]["scheme"])
        panels.append(
            _fit(Image.fromarray(scheme.palette_lut()[label]), nearest)
            if label is not None
            else _missing_panel("no label", font)
        )
    if "height" in members:
        panels.append(
            _fit(Image.fromarray(height_ramp(height, vmax)), bilinear)
            if height is not None
            else _missing_panel("no height", font)
        )
    return panels


def _truncate(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _legend_entries(scheme: ClassScheme) -> list[tuple[tuple[int, int, int], str]]:
    entries = [(c.color, f"{c.code} {c.name}") for c in scheme.valid_classes]
    if scheme.nodata is not None:
        entries.append(((0, 0, 0), f"{scheme.nodata} {scheme.names[scheme.nodata]}"))
    return entries


def _scheme_legend_height(scheme: ClassScheme, width: int) -> int:
    per_row = max(1, (width - 2 * MARGIN) // LEGEND_SLOT_W)
    return (1 + math.ceil(len(_legend_entries(scheme)) / per_row)) * LEGEND_ROW_H + LEGEND_GAP


def _layout(num_tiles: int, columns: int, members: tuple[str, ...], schemes: list[ClassScheme]) -> _Layout:
    cols = min(columns, num_tiles)
    rows = math.ceil(num_tiles / cols)
    cell_w = cell_width(len(members))
    width = max(MARGIN + cols * (cell_w + MARGIN), 2 * MARGIN + COLORBAR_W + 2 * LEGEND_SLOT_W)
    grid_top = HEADER_H + MARGIN
    legend_top = grid_top + rows * (CELL_H + MARGIN)
    legend_h = sum(_scheme_legend_height(s, width) for s in schemes)
    legend_h += 2 * LEGEND_ROW_H if "height" in members else 0
    height = legend_top + legend_h + MARGIN
    return _Layout(cols, rows, cell_w, width, grid_top, legend_top, height)


def _tile_size(sample: dict) -> str:
    array = next(sample[k] for k in ("rgb", "label", "height") if sample[k] is not None)
    return f"{array.shape[1]}x{array.shape[0]} px"


def _draw_cell(sheet: Image.Image, origin: tuple[int, int], sample: dict, panels: list[Image.Image], font):
    x, y = origin
    for i, panel in enumerate(panels):
        sheet.paste(panel, (x + i * (PANEL_PX + GAP), y))
    draw = ImageDraw.Draw(sheet)
    size = _tile_size(sample)
    size_w = round(draw.textlength(size, font=font))
    cell_w = cell_width(len(panels))
    key = _truncate(draw, sample["key"], cell_w - size_w - 10, font)
    draw.text((x, y + PANEL_PX + 3), key, fill=TEXT, font=font)
    draw.text((x + cell_w - size_w, y + PANEL_PX + 3), size, fill=SUBTLE, font=font)


def _swatch(draw: ImageDraw.ImageDraw, xy: tuple[int, int], color, name: str, font) -> None:
    x, y = xy
    draw.rectangle((x, y, x + SWATCH - 1, y + SWATCH - 1), fill=tuple(color), outline=TEXT)
    text = _truncate(draw, name, LEGEND_SLOT_W - SWATCH - 12, font)
    draw.text((x + SWATCH + 5, y), text, fill=TEXT, font=font)


def _draw_scheme_legend(draw: ImageDraw.ImageDraw, scheme: ClassScheme, top: int, width: int, font) -> int:
    draw.text((MARGIN, top), f"classes ({scheme.name})", fill=TEXT, font=font)
    entries = _legend_entries(scheme)
    per_row = max(1, (width - 2 * MARGIN) // LEGEND_SLOT_W)
    for i, (color, name) in enumerate(entries):
        row, col = divmod(i, per_row)
        _swatch(draw, (MARGIN + col * LEGEND_SLOT_W, top + (row + 1) * LEGEND_ROW_H), color, name, font)
    return top + _scheme_legend_height(scheme, width)


def _draw_colorbar(sheet: Image.Image, top: int, vmax: float, font) -> None:
    draw = ImageDraw.Draw(sheet)
    draw.text((MARGIN, top), "height above ground (m)", fill=TEXT, font=font)
    y = top + LEGEND_ROW_H
    ramp = height_ramp(np.tile(np.linspace(0.0, vmax, COLORBAR_W, dtype=np.float32), (SWATCH, 1)), vmax)
    draw.text((MARGIN, y), "0 m", fill=TEXT, font=font)
    bar_x = MARGIN + 30
    sheet.paste(Image.fromarray(ramp), (bar_x, y))
    draw.rectangle((bar_x - 1, y - 1, bar_x + COLORBAR_W, y + SWATCH), outline=TEXT)
    draw.text((bar_x + COLORBAR_W + 6, y), f"{vmax:.1f} m", fill=TEXT, font=font)
    _swatch(draw, (bar_x + COLORBAR_W + 70, y), (0, 0, 0), "NaN (no data)", font)


def _read_rows(df: pd.DataFrame, rows: list[int]) -> list[dict]:
    subset = df.iloc[rows]
    subset.attrs = dict(df.attrs)
    by_key = {s["key"]: s for s in iter_samples(subset)}
    return [by_key[k] for k in subset["key"]]


def _render(samples: list[dict], title: str, columns: int, members: tuple[str, ...]) -> Image.Image:
    schemes = []
    if "label" in members:
        schemes = [load_scheme(name) for name in dict.fromkeys(s["meta"]["scheme"] for s in samples)]
    layout = _layout(len(samples), columns, members, schemes)
    font = _font()
    vmax = height_range(samples)
    sheet = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((MARGIN, 6), _truncate(draw, title, layout.width - 2 * MARGIN, font), fill=TEXT, font=font)
    for i, sample in enumerate(samples):
        row, col = divmod(i, layout.columns)
        origin = (MARGIN + col * (layout.cell_width + MARGIN), layout.grid_top + row * (CELL_H + MARGIN))
        _draw_cell(sheet, origin, sample, _panels(sample, members, vmax, font), font)
    top = layout.legend_top
    for scheme in schemes:
        top = _draw_scheme_legend(draw, scheme, top, layout.width, font)
    if "height" in members:
        _draw_colorbar(sheet, top, vmax, font)
    return sheet


def write_contact_sheet(manifest: Path, out_png: Path, n: int = 16, seed: int = 0, columns: int = 4) -> Path:
    """Write a PNG contact sheet of ``n`` tiles of ``manifest`` (a seeded sample, or all); return its path.

    Each tile is a cell ``rgb | label | height`` with its key beneath; a missing raster is a grey panel. A manifest
    of rgb tiles alone shows ``rgb`` only, without class legend or height colour bar. Only the chosen rows are
    read. The PNG is written through a temporary file and renamed into place.
    """
    if columns < 1:
        raise ConfigError(f"contact sheet columns={columns} must be at least 1")
    df = read_manifest(manifest)
    if len(df) == 0:
        raise ManifestError(f"{manifest}: manifest has no tiles, nothing to preview")
    rows = pick_rows(len(df), n, seed)
    samples = _read_rows(df, rows)
    members = shown_members(df)
    title = f"{Path(manifest).name}: {len(rows)} of {len(df)} tiles (seed {seed})   {' | '.join(members)}"
    sheet = _render(samples, title, columns, members)
    with atomic_path(out_png) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(out_png)
