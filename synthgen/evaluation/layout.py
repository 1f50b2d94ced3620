"""Layout fidelity: how closely the label maps (and heights) of one manifest resemble another's.

Five comparisons, each built from per-tile statistics that are accumulated while tiles stream past (no manifest
is ever held in memory):

- class frequency: Jensen–Shannon divergence (base 2, so in [0, 1]) of the pixel share of each valid class;
- connected components (4-connectivity) per class: 1-D Wasserstein distance of log10 component sizes, the
  two-sample KS statistic of the sizes, and the mean number of components per tile; components are cut at tile
  edges, so sizes are those seen within a tile;
- class adjacency: counts of horizontally / vertically neighbouring pixel pairs of two different valid classes,
  symmetric ((i, j) and (j, i) both count), normalised to sum 1; distance = total variation (L1 / 2);
- boundary density: per tile, the share of valid pixels whose right or bottom neighbour is a valid pixel of
  another class; mean over tiles;
- building heights (when both manifests have height rasters): the median height of each building component
  (class named 'building' in the scheme), compared by the KS statistic;
- shapes: building rectangularity (area over the minimum-area enclosing rectangle, per building component of at
  least 16 px; mean), road width (road pixels over road skeleton pixels, in pixels), road elongation (median over
  road components of at least 16 px of skeleton length² / area) and road continuity (the share of road pixels in
  components that reach two tile edges or more), each with the relative gap ``synthetic / real - 1``.

Nodata pixels (the scheme's nodata code) are left out of every statistic. The array functions are pure;
``LayoutAccumulator`` gathers them over tiles and ``evaluate_layout`` runs the whole comparison on two manifests.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from synthgen.errors import ManifestError, SchemeError, allowed
from synthgen.evaluation.layout_stats import (
    adjacency_counts,
    boundary_density,
    js_divergence,
    ks_distance,
    labelled_components,
    line_stats,
    median_by_component,
    rectangularity,
    relative_gap,
    size_distribution_distance,
    total_variation,
)
from synthgen.io.atomic import atomic_write
from synthgen.io.manifest import iter_samples, read_manifest
from synthgen.schema import ClassScheme, load_scheme

BUILDING_CLASS_NAME = "building"
ROAD_CLASS_NAME = "road"


# --- accumulation over tiles ------------------------------------------------------------------------------------


@dataclass
class LayoutAccumulator:
    """Running layout statistics of a stream of label tiles (and heights) in one scheme.

    ``update`` takes one tile; memory grows only with the number of components (their sizes) and buildings.
    """

    scheme: ClassScheme
    tiles: int = 0
    height_tiles: int = 0
    counts: np.ndarray = field(init=False)
    adjacency: np.ndarray = field(init=False)
    boundary_sum: float = 0.0
    boundary_tiles: int = 0
    sizes: dict[int, list[np.ndarray]] = field(init=False)
    building_heights: list[np.ndarray] = field(default_factory=list)
    rectangularity: list[np.ndarray] = field(default_factory=list)
    road_pixels: int = 0
    road_skeleton: int = 0
    road_crossing: int = 0
    road_elongation: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self):
        self.codes = [c.code for c in self.scheme.valid_classes]
        self.counts = np.zeros(len(self.codes), np.int64)
        self.adjacency = np.zeros((len(self.codes), len(self.codes)), np.int64)
        self.sizes = {code: [] for code in self.codes}
        building = [c.code for c in self.scheme.valid_classes if c.name == BUILDING_CLASS_NAME]
        self.building_code: int | None = building[0] if building else None
        road = [c.code for c in self.scheme.valid_classes if c.name == ROAD_CLASS_NAME]
        self.road_code: int | None = road[0] if road else None

    def update(self, label: np.ndarray, height: np.ndarray | None = None, where: str = "tile") -> None:
        """Add one tile; a label value outside the scheme is a SchemeError naming ``where``."""
        label = np.asarray(label)
        hist = np.bincount(label.astype(np.uint8, copy=False).ravel(), minlength=256)
        unknown = sorted(set(np.flatnonzero(hist).tolist()) - set(self.scheme.codes))
        if unknown:
            raise SchemeError(
                f"{where}: label value(s) {allowed(unknown)} are not in scheme '{self.scheme.name}' "
                f"(allowed: {allowed(self.scheme.codes)})"
            )
        self.tiles += 1
        tile_counts = hist[self.codes]
        self.counts += tile_counts
        self.adjacency += adjacency_counts(label, self.codes, self.scheme.nodata)
        density = boundary_density(label, self.scheme.nodata)
        if not math.isnan(density):
            self.boundary_sum += density
            self.boundary_tiles += 1
        if height is not None:
            self.height_tiles += 1
        for code, count in zip(self.codes, tile_counts, strict=True):
            if count == 0:
                continue
            labelled, n = labelled_components(label == code)
            self.sizes[code].append(np.bincount(labelled.ravel(), minlength=n + 1)[1:].astype(np.int64))
            if code == self.building_code:
                self.rectangularity.append(rectangularity(labelled, n))
                if height is not None:
                    self.building_heights.append(median_by_component(labelled, n, np.asarray(height)))
            if code == self.road_code:
                lines = line_stats(label == code)
                self.road_pixels += lines.pixels
                self.road_skeleton += lines.skeleton
                self.road_crossing += lines.crossing
                self.road_elongation.append(lines.elongation)

    def component_sizes(self, code: int) -> np.ndarray:
        """All component sizes of class ``code`` seen so far."""
        chunks = self.sizes[code]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)

    def building_medians(self) -> np.ndarray:
        """Median height of every building component seen so far (tiles with heights only)."""
        return np.concatenate(self.building_heights) if self.building_heights else np.zeros(0, np.float64)

    @property
    def boundary_mean(self) -> float | None:
        """Mean boundary density over tiles with valid pixels (None before any)."""
        return self.boundary_sum / self.boundary_tiles if self.boundary_tiles else None


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def compare_layouts(real: LayoutAccumulator, synthetic: LayoutAccumulator) -> dict:
    """The layout metrics of ``synthetic`` against ``real`` (both in the same scheme) as a JSON-able dict."""
    if real.scheme.name != synthetic.scheme.name:
        raise SchemeError(f"cannot compare layouts in schemes '{real.scheme.name}' and '{synthetic.scheme.name}'")
    names = real.scheme.names
    codes = real.codes

    def fractions(acc: LayoutAccumulator) -> dict[str, float | None]:
        total = acc.counts.sum()
        return {names[c]: (float(n / total) if total else None) for c, n in zip(codes, acc.counts, strict=True)}

    per_class = {}
    for code in codes:
        rs, ss = real.component_sizes(code), synthetic.component_sizes(code)
        per_class[names[code]] = {
            "real_components": len(rs),
            "synthetic_components": len(ss),
            "real_per_tile": len(rs) / real.tiles if real.tiles else None,
            "synthetic_per_tile": len(ss) / synthetic.tiles if synthetic.tiles else None,
            "real_median_size": _median(rs),
            "synthetic_median_size": _median(ss),
            **size_distribution_distance(rs, ss),
        }
    both = [v for v in per_class.values() if v["ks"] is not None]

    def norm(matrix: np.ndarray) -> list[list[float]]:
        total = matrix.sum()
        return (matrix / total if total else matrix.astype(np.float64)).round(8).tolist()

    rb, sb = real.boundary_mean, synthetic.boundary_mean
    return {
        "scheme": real.scheme.name,
        "tiles": {"real": real.tiles, "synthetic": synthetic.tiles},
        "class_frequency": {
            "js_divergence": js_divergence(real.counts, synthetic.counts),
            "real": fractions(real),
            "synthetic": fractions(synthetic),
        },
        "components": {
            "mean_wasserstein_log10": float(np.mean([v["wasserstein_log10"] for v in both])) if both else None,
            "mean_ks": float(np.mean([v["ks"] for v in both])) if both else None,
            "per_class": per_class,
        },
        "adjacency": {
            "distance": total_variation(real.adjacency, synthetic.adjacency),
            "classes": [names[c] for c in codes],
            "real": norm(real.adjacency),
            "synthetic": norm(synthetic.adjacency),
        },
        "boundary_density": {
            "real_mean": rb,
            "synthetic_mean": sb,
            "abs_diff": abs(rb - sb) if rb is not None and sb is not None else None,
        },
        "building_height": _height_section(real, synthetic),
        "shape": {
            "building_rectangularity": _shape(real, synthetic, _mean_rectangularity),
            "road_width_px": _shape(real, synthetic, _road_width),
            "road_elongation": _shape(real, synthetic, _road_elongation),
            "road_continuity": _shape(real, synthetic, _road_continuity),
        },
    }


def _mean_rectangularity(acc: LayoutAccumulator) -> float | None:
    values = np.concatenate(acc.rectangularity) if acc.rectangularity else np.zeros(0)
    return float(values.mean()) if len(values) else None


def _road_width(acc: LayoutAccumulator) -> float | None:
    return acc.road_pixels / acc.road_skeleton if acc.road_skeleton else None


def _road_elongation(acc: LayoutAccumulator) -> float | None:
    values = np.concatenate(acc.road_elongation) if acc.road_elongation else np.zeros(0)
    return float(np.median(values)) if len(values) else None


def _road_continuity(acc: LayoutAccumulator) -> float | None:
    return acc.road_crossing / acc.road_pixels if acc.road_pixels else None


def _shape(real: LayoutAccumulator, synthetic: LayoutAccumulator, measure) -> dict:
    r, s = measure(real), measure(synthetic)
    return {"real": r, "synthetic": s, "relative_gap": relative_gap(r, s)}


def _height_section(real: LayoutAccumulator, synthetic: LayoutAccumulator) -> dict:
    if real.building_code is None:
        return {"skipped": f"scheme '{real.scheme.name}' has no class named '{BUILDING_CLASS_NAME}'"}
    missing = [side for side, acc in (("real", real), ("synthetic", synthetic)) if acc.height_tiles == 0]
    if missing:
        return {"skipped": f"no height rasters in the {' and '.join(missing)} tiles"}
    rh, sh = real.building_medians(), synthetic.building_medians()
    return {
        "ks": ks_distance(rh, sh),
        "real_median": _median(rh),
        "synthetic_median": _median(sh),
        "real_buildings": len(rh),
        "synthetic_buildings": len(sh),
    }


# --- manifests --------------------------------------------------------------------------------------------------


def label_rows(path: Path, split: str | None, max_tiles: int | None = None) -> pd.DataFrame:
    """The rows of manifest ``path`` (of ``split`` when given) that hold a label raster, ``max_tiles`` of them evenly
    spaced when given; a missing split or no label is a one-line ManifestError."""
    df = read_manifest(path)
    if split is not None:
        splits = sorted(df["split"].unique())
        if split not in splits:
            raise ManifestError(f"{path}: no tiles in split '{split}' (splits present: {allowed(splits)})")
        df = df[df["split"] == split]
    has_label = [f"{k}.label.tif" in list(m) for k, m in zip(df["key"], df["members"], strict=True)]
    df = df[has_label]
    if df.empty:
        where = f" in split '{split}'" if split is not None else ""
        raise ManifestError(f"{path}: no tiles with a label raster{where}; layout metrics need label maps")
    if max_tiles is not None and len(df) > max_tiles:
        # evenly spaced rows: deterministic, spread over all shards, still read in manifest order
        df = df.iloc[np.unique(np.linspace(0, len(df) - 1, max_tiles).round().astype(int))]
    df = df.reset_index(drop=True)
    df.attrs["manifest_path"] = str(Path(path).resolve())
    return df


def _single_scheme(df: pd.DataFrame, path: Path) -> str:
    schemes = sorted(df["scheme"].unique())
    if len(schemes) != 1:
        raise SchemeError(f"{path}: label tiles in several schemes ({allowed(schemes)}); layout metrics need one")
    return str(schemes[0])


def _accumulate(df: pd.DataFrame, scheme: ClassScheme, path: Path) -> LayoutAccumulator:
    acc = LayoutAccumulator(scheme)
    for sample in iter_samples(df):
        acc.update(sample["label"], sample["height"], where=f"{path}:{sample['key']}")
    return acc


def evaluate_layout(
    real_manifest: Path,
    synthetic_manifest: Path,
    split: str | None = None,
    max_tiles: int | None = None,
    synthetic_split: str | None = None,
) -> dict:
    """Layout metrics of the synthetic manifest's label maps (and heights) against the real manifest's.

    ``split`` keeps only the real manifest's tiles of that split, ``synthetic_split`` the synthetic manifest's
    (generated tiles have split ''; leave it None to use them all). ``max_tiles`` caps the tiles read from each
    manifest to that many evenly spaced rows. Tiles stream one at a time. Both manifests must hold label rasters in
    one and the same scheme, else a one-line ManifestError / SchemeError.
    """
    if max_tiles is not None and max_tiles < 1:
        raise ManifestError(f"max_tiles {max_tiles} must be >= 1 (or None for all tiles)")
    start = time.perf_counter()
    real_manifest, synthetic_manifest = Path(real_manifest), Path(synthetic_manifest)
    real_df = label_rows(real_manifest, split, max_tiles)
    synth_df = label_rows(synthetic_manifest, synthetic_split, max_tiles)
    real_scheme, synth_scheme = _single_scheme(real_df, real_manifest), _single_scheme(synth_df, synthetic_manifest)
    if real_scheme != synth_scheme:
        raise SchemeError(
            f"real manifest {real_manifest} has scheme '{real_scheme}' but synthetic manifest {synthetic_manifest} "
            f"has scheme '{synth_scheme}'; layout metrics need both in the same scheme"
        )
    scheme = load_scheme(real_scheme)
    real = _accumulate(real_df, scheme, real_manifest)
    synthetic = _accumulate(synth_df, scheme, synthetic_manifest)
    report = {
        "real": {"manifest": str(real_manifest), "split": split},
        "synthetic": {"manifest": str(synthetic_manifest), "split": synthetic_split},
        "max_tiles": max_tiles,
        **compare_layouts(real, synthetic),
    }
    report["elapsed_s"] = round(time.perf_counter() - start, 3)
    return report


# --- output -----------------------------------------------------------------------------------------------------


def save_report(report: dict, path: Path) -> Path:
    """Write a report as JSON through a temporary file, so a reader never sees half of one."""
    return atomic_write(path, json.dumps(report, indent=1, allow_nan=False) + "\n")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_layout_report(report: dict) -> str:
    """A layout report as aligned text for a terminal: headline distances, then per-class components."""
    real, synth = report["real"], report["synthetic"]
    cf, comp, adj, bd, bh = (
        report[k] for k in ("class_frequency", "components", "adjacency", "boundary_density", "building_height")
    )

    def side(info: dict, tiles: int) -> str:
        split = f" [{info['split']}]" if info.get("split") is not None else ""
        return f"{info['manifest']}{split} ({tiles} tiles)"

    lines = [
        f"real               {side(real, report['tiles']['real'])}",
        f"synthetic          {side(synth, report['tiles']['synthetic'])}",
        f"scheme             {report['scheme']}",
        f"class freq JS      {_fmt(cf['js_divergence'])}",
        f"adjacency TV       {_fmt(adj['distance'])}",
        f"boundary density   real {_fmt(bd['real_mean'])}  synthetic {_fmt(bd['synthetic_mean'])}  "
        f"|diff| {_fmt(bd['abs_diff'])}",
        f"components         mean W1(log10 size) {_fmt(comp['mean_wasserstein_log10'])}  "
        f"mean KS {_fmt(comp['mean_ks'])}",
    ]
    if "skipped" in bh:
        lines.append(f"building height    skipped: {bh['skipped']}")
    else:
        lines.append(
            f"building height    KS {_fmt(bh['ks'])}  median real {_fmt(bh['real_median'], 2)} m "
            f"({bh['real_buildings']})  synthetic {_fmt(bh['synthetic_median'], 2)} m "
            f"({bh['synthetic_buildings']})"
        )
    shapes = (
        ("building_rectangularity", "rectangularity"),
        ("road_width_px", "road width px"),
        ("road_elongation", "road elongation"),
        ("road_continuity", "road continuity"),
    )
    for name, label in shapes:
        shape = report["shape"][name]
        lines.append(
            f"{label:18s} real {_fmt(shape['real'])}  synthetic {_fmt(shape['synthetic'])}  "
            f"gap {_fmt(shape['relative_gap'])}"
        )
    lines.append("per class          freq real / syn     comps/tile real / syn   median px real / syn   W1 log10    KS")
    for name, c in comp["per_class"].items():
        fr, fs = cf["real"][name], cf["synthetic"][name]
        lines.append(
            f"  {name:16s} {_fmt(fr):>7s} / {_fmt(fs):<7s}"
            f"  {_fmt(c['real_per_tile'], 2):>8s} / {_fmt(c['synthetic_per_tile'], 2):<8s}"
            f"  {_fmt(c['real_median_size'], 0):>8s} / {_fmt(c['synthetic_median_size'], 0):<8s}"
            f"  {_fmt(c['wasserstein_log10']):>8s}  {_fmt(c['ks']):>6s}"
        )
    if "elapsed_s" in report:
        lines.append(f"elapsed            {report['elapsed_s']:.1f} s")
    return "\n".join(lines)
