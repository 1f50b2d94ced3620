"""Sidecars that make a loose label GeoTIFF open with class names and colours: a QGIS style and GDAL category names.

Beside ``<name>.tif``: ``<name>.qml``, the style QGIS loads by default for the layer (a paletted renderer, one entry
per class of the scheme: code, colour, name), and ``<name>.tif.aux.xml``, GDAL's PAM file with the band's category
names (``gdalinfo`` lists them under ``Categories``; QGIS and every GDAL reader see them). The nodata code gets no
palette entry: QGIS shows nodata pixels as transparent.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from synthgen.io.atomic import atomic_write
from synthgen.schema import ClassScheme

QGIS_VERSION = "3.28.0"


def _hex(color: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def _xml(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def qml_style(scheme: ClassScheme) -> str:
    """A QGIS layer style (.qml) for band 1 of a label raster: a paletted renderer with the scheme's classes."""
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1", nodataColor=""
    )
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for c in scheme.valid_classes:
        ET.SubElement(palette, "paletteEntry", value=str(c.code), color=_hex(c.color), label=c.name, alpha="255")
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", colorizeOn="0", grayscaleMode="0", invertColors="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + _xml(root)


def aux_xml(scheme: ClassScheme) -> str:
    """GDAL's PAM sidecar (.aux.xml) naming the categories of band 1: entry i is the name of code i ('' for codes
    the scheme does not define)."""
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    ET.SubElement(band, "Description").text = f"land cover ({scheme.name})"
    names = ET.SubElement(band, "CategoryNames")
    by_code = scheme.names
    for code in range(max(scheme.codes) + 1):
        ET.SubElement(names, "Category").text = by_code.get(code, "")
    return _xml(root)


def sidecar_paths(tif: Path) -> tuple[Path, Path]:
    """The style and the PAM file of label raster ``tif``: ``<name>.qml`` and ``<name>.tif.aux.xml``."""
    tif = Path(tif)
    return tif.with_suffix(".qml"), tif.with_name(tif.name + ".aux.xml")


def write_label_sidecars(tif: Path, scheme: ClassScheme) -> tuple[Path, Path]:
    """Write the QGIS style and the GDAL category names beside label raster ``tif``; returns their paths."""
    qml, aux = sidecar_paths(tif)
    atomic_write(qml, qml_style(scheme))
    atomic_write(aux, aux_xml(scheme))
    return qml, aux
