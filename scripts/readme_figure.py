"""The README's contact sheet (docs/contact_sheet.png), cut from the preview sheets already committed in docs/.

No tile is generated here: every panel is cropped, pixel for pixel, from a sheet that ``synthgen preview`` wrote:

- ``docs/landcover_preview.png``: ``synthgen landcover --n 100`` with the embedded default (label, height, legend);
- ``docs/rgb_spade_preview.png``, ``docs/rgb_controlnet_preview.png``: ``synthgen rgb --method spade|controlnet``
  with the embedded defaults on the first 50 of those land-cover tiles (same keys, same seeds);
- ``docs/climate_preview.png``: ``synthgen climate --sites examples/sites_naip.csv`` with the embedded default.

The label panels of the two RGB sheets are checked to equal the land-cover sheet's, so each column shows one
generated label map, its height and the two RGB images rendered from it. The cell geometry is that of
``synthgen/evaluation/preview.py`` when these sheets were written (160 px panels, 4 px gaps, 12 px margins).

    python scripts/readme_figure.py [--out docs/contact_sheet.png]      # = make docs-figure
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DOCS = Path(__file__).resolve().parents[1] / "docs"
# geometry of a synthgen preview sheet: panels of PANEL px, GAP between a cell's panels, MARGIN around cells
PANEL, GAP, MARGIN, KEY_H, HEADER_H = 160, 4, 12, 18, 24
# tiles shown: index in the land-cover run (10 cells a row on its sheet), and cell (column, row) on the RGB sheets
TILES = {1: (1, 0), 3: (2, 0), 22: (3, 1), 29: (1, 2), 47: (2, 3)}
CLIMATE_CELLS = [(0, 0), (2, 0), (5, 0), (3, 1), (4, 1)]  # (column, row) on the climate sheet, 6 cells a row
ROWS = [
    "synthgen landcover:\nlabel map",
    "synthgen landcover:\nheight (nDSM)",
    "synthgen rgb\n--method spade",
    "synthgen rgb\n--method controlnet",
    "synthgen climate:\nNAIP sites, Aug 2020\n(not the tiles above)",
]
ROW_LABEL_W = 170
TITLE_H = 30
CAPTION_H = 16


def panel(sheet: Image.Image, col: int, row: int, index: int, panels_per_cell: int = 3) -> Image.Image:
    """Panel ``index`` (0 rgb, 1 label, 2 height) of the cell at (col, row) of a preview sheet."""
    cell_w = panels_per_cell * PANEL + (panels_per_cell - 1) * GAP
    x = MARGIN + col * (cell_w + MARGIN) + index * (PANEL + GAP)
    y = HEADER_H + MARGIN + row * (PANEL + KEY_H + MARGIN)
    return sheet.crop((x, y, x + PANEL, y + PANEL))


def legend(sheet: Image.Image, rows: int, width: int) -> Image.Image:
    """The class legend and height colour bar under the grid of a preview sheet with ``rows`` rows of cells."""
    top = HEADER_H + MARGIN + rows * (PANEL + KEY_H + MARGIN)
    return sheet.crop((0, top, width, sheet.height))


def build() -> Image.Image:
    landcover = Image.open(DOCS / "landcover_preview.png").convert("RGB")
    spade = Image.open(DOCS / "rgb_spade_preview.png").convert("RGB")
    controlnet = Image.open(DOCS / "rgb_controlnet_preview.png").convert("RGB")
    climate = Image.open(DOCS / "climate_preview.png").convert("RGB")

    columns = []
    for index, (col, row) in TILES.items():
        label = panel(landcover, index % 10, index // 10, 1)
        for other in (spade, controlnet):
            if not np.array_equal(np.asarray(panel(other, col, row, 1)), np.asarray(label)):
                raise SystemExit(f"tile {index}: the RGB sheets' label panel differs from the land-cover sheet's")
        height = panel(landcover, index % 10, index // 10, 2)
        columns.append([label, height, panel(spade, col, row, 0), panel(controlnet, col, row, 0)])
    for n, (col, row) in enumerate(CLIMATE_CELLS):
        columns[n].append(panel(climate, col, row, 0, panels_per_cell=1))

    key = legend(landcover, rows=10, width=1460)
    width = ROW_LABEL_W + len(columns) * (PANEL + GAP) + MARGIN
    grid_h = len(ROWS) * (PANEL + GAP)
    height = TITLE_H + CAPTION_H + grid_h + key.height + MARGIN
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    small = ImageFont.load_default(size=11)
    draw.text(
        (MARGIN, 8), "synthgen's embedded defaults on CPU (128 px tiles; climate 64 px)", fill=(20, 20, 20), font=font
    )
    for n, index in enumerate(TILES):
        x = ROW_LABEL_W + n * (PANEL + GAP)
        draw.text((x, TITLE_H), f"landcover_{index:07d}", fill=(110, 110, 110), font=small)
    for r, text in enumerate(ROWS):
        y = TITLE_H + CAPTION_H + r * (PANEL + GAP)
        draw.multiline_text((MARGIN, y + PANEL // 2 - 14), text, fill=(20, 20, 20), font=font, spacing=4)
        for n, column in enumerate(columns):
            sheet.paste(column[r], (ROW_LABEL_W + n * (PANEL + GAP), y))
    # the legend is wider than the grid: scale it to fit under it
    scale = min(1.0, (width - MARGIN) / key.width)
    key = key.resize((round(key.width * scale), round(key.height * scale)), Image.LANCZOS)
    sheet.paste(key, (0, TITLE_H + CAPTION_H + grid_h))
    return sheet.crop((0, 0, width, TITLE_H + CAPTION_H + grid_h + key.height + MARGIN))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS / "contact_sheet.png")
    args = parser.parse_args()
    sheet = build()
    sheet.save(args.out, optimize=True)
    print(f"{args.out}: {sheet.width}x{sheet.height}")


if __name__ == "__main__":
    main()
