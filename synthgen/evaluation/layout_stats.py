"""Per-tile layout statistics (pure functions on label and height arrays) and the distances between two sets of
them; ``synthgen.evaluation.layout`` gathers them over manifests (its docstring says what each one measures)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

# --- per-tile statistics (pure functions on arrays) -------------------------------------------------------------


def class_counts(label: np.ndarray, codes: list[int]) -> np.ndarray:
    """Pixel count of each code in ``codes`` (in that order) in a label map."""
    hist = np.bincount(np.asarray(label, np.uint8).ravel(), minlength=256)
    return hist[np.asarray(codes, np.int64)].astype(np.int64)


def labelled_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a boolean mask: the label image (0 = background) and their number."""
    labelled, n = ndimage.label(mask)  # the default structure is the 4-neighbour cross
    return labelled, int(n)


def component_sizes(mask: np.ndarray) -> np.ndarray:
    """Sizes in pixels of the 4-connected components of a boolean mask (int64, in label order)."""
    labelled, n = labelled_components(mask)
    if n == 0:
        return np.zeros(0, np.int64)
    return np.bincount(labelled.ravel(), minlength=n + 1)[1:].astype(np.int64)


def adjacency_counts(label: np.ndarray, codes: list[int], nodata: int | None = None) -> np.ndarray:
    """Symmetric KxK counts of 4-neighbour pixel pairs of two different classes, K = len(codes), rows in codes order.

    Each horizontally or vertically adjacent pair (a, b) with a != b adds 1 to [a, b] and 1 to [b, a]; pairs
    with a nodata pixel or a code outside ``codes`` are not counted.
    """
    label = np.asarray(label, np.uint8)
    pairs = np.zeros(256 * 256, np.int64)
    for a, b in ((label[:, :-1], label[:, 1:]), (label[:-1, :], label[1:, :])):
        differ = a != b
        if nodata is not None:
            differ &= (a != nodata) & (b != nodata)
        flat = a[differ].astype(np.int64) * 256 + b[differ].astype(np.int64)
        pairs += np.bincount(flat, minlength=256 * 256)
    matrix = pairs.reshape(256, 256)
    matrix = matrix + matrix.T
    idx = np.asarray(codes, np.int64)
    return matrix[np.ix_(idx, idx)]


def boundary_density(label: np.ndarray, nodata: int | None = None) -> float:
    """Share of valid pixels whose right or bottom neighbour is a valid pixel of another class (NaN if none valid).

    A map split into two classes by one vertical line has density H / (H * W): one boundary pixel per row.
    """
    label = np.asarray(label)
    valid = np.ones(label.shape, bool) if nodata is None else label != nodata
    n_valid = int(valid.sum())
    if n_valid == 0:
        return math.nan
    boundary = np.zeros(label.shape, bool)
    boundary[:, :-1] |= (label[:, :-1] != label[:, 1:]) & valid[:, 1:]
    boundary[:-1, :] |= (label[:-1, :] != label[1:, :]) & valid[1:, :]
    return float((boundary & valid).sum() / n_valid)


def component_median_heights(mask: np.ndarray, height: np.ndarray) -> np.ndarray:
    """Median of the finite heights in each 4-connected component of ``mask``; components without one are left out."""
    labelled, n = labelled_components(mask)
    return median_by_component(labelled, n, height)


def median_by_component(labelled: np.ndarray, n: int, height: np.ndarray) -> np.ndarray:
    """The median finite height of each of the ``n`` components of ``labelled`` (components without one left out)."""
    if n == 0:
        return np.zeros(0, np.float64)
    keep = (labelled > 0) & np.isfinite(height)
    ids = labelled[keep]
    values = height[keep].astype(np.float64)
    if ids.size == 0:
        return np.zeros(0, np.float64)
    order = np.lexsort((values, ids))
    ids, values = ids[order], values[order]
    _, start, count = np.unique(ids, return_index=True, return_counts=True)
    return (values[start + (count - 1) // 2] + values[start + count // 2]) / 2.0


# --- distances between two sets of statistics -------------------------------------------------------------------


def js_divergence(p: np.ndarray, q: np.ndarray) -> float | None:
    """Jensen–Shannon divergence (base 2, in [0, 1]) between two count or frequency vectors; None if one is empty."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    return float(jensenshannon(p, q, base=2) ** 2)


def total_variation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Total variation (L1 / 2) between two non-negative arrays, each normalised to sum 1; None if one is empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        return None
    return float(np.abs(a / a.sum() - b / b.sum()).sum() / 2.0)


def ks_distance(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sample Kolmogorov–Smirnov statistic (max CDF gap, in [0, 1]); None if a sample is empty."""
    if len(a) == 0 or len(b) == 0:
        return None
    return float(ks_2samp(np.asarray(a, np.float64), np.asarray(b, np.float64)).statistic)


def size_distribution_distance(real_sizes: np.ndarray, synthetic_sizes: np.ndarray) -> dict:
    """Wasserstein-1 distance of log10 component sizes and KS statistic of the sizes (None where a side is empty)."""
    if len(real_sizes) == 0 or len(synthetic_sizes) == 0:
        return {"wasserstein_log10": None, "ks": None}
    return {
        "wasserstein_log10": float(
            wasserstein_distance(
                np.log10(np.asarray(real_sizes, np.float64)), np.log10(np.asarray(synthetic_sizes, np.float64))
            )
        ),
        "ks": ks_distance(real_sizes, synthetic_sizes),
    }


def rectangularity(labelled: np.ndarray, n: int, min_pixels: int = 16) -> np.ndarray:
    """Per component of ``labelled`` (1..n) with at least ``min_pixels`` pixels: its area over the area of its
    minimum-area enclosing rectangle (OpenCV's ``minAreaRect`` of the pixel centres, each side grown by one pixel so
    that a full axis-aligned rectangle scores 1). Compact rectangular buildings score near 1, blobs and L shapes
    less."""
    import cv2

    if n == 0:
        return np.zeros(0)
    objects = ndimage.find_objects(labelled)
    scores = []
    for index, box in enumerate(objects, start=1):
        if box is None:
            continue
        ys, xs = np.nonzero(labelled[box] == index)
        if len(ys) < min_pixels:
            continue
        (_, _), (w, h), _ = cv2.minAreaRect(np.stack([xs, ys], 1).astype(np.float32))
        scores.append(len(ys) / ((w + 1) * (h + 1)))
    return np.clip(np.asarray(scores, np.float64), 0, 1)


@dataclass
class LineStats:
    """Line-likeness of a class mask (roads), from scikit-image's skeleton: ``pixels`` and ``skeleton`` pixels
    (their ratio is the mean stroke width), the ``elongation`` (skeleton length² / area: a line of length L and
    width w scores L / w, a blob a few units) of each component of at least ``min_pixels``, and the pixels of
    components that reach at least two tile edges (``crossing``: roads run through tiles, patches do not)."""

    pixels: int = 0
    skeleton: int = 0
    crossing: int = 0
    elongation: np.ndarray = field(default_factory=lambda: np.zeros(0))


def line_stats(mask: np.ndarray, min_pixels: int = 16) -> LineStats:
    """The ``LineStats`` of one tile's class mask."""
    from skimage.morphology import skeletonize

    if not mask.any():
        return LineStats()
    skeleton = skeletonize(mask)
    labelled, _ = ndimage.label(mask)
    elongation, crossing = [], 0
    for index, box in enumerate(ndimage.find_objects(labelled), start=1):
        component = labelled[box] == index
        area = int(component.sum())
        edges = (
            (box[0].start == 0) + (box[0].stop == mask.shape[0]) + (box[1].start == 0) + (box[1].stop == mask.shape[1])
        )
        crossing += area if edges >= 2 else 0
        if area >= min_pixels:
            length = int((skeleton[box] & component).sum())
            elongation.append(length * length / area)
    return LineStats(int(mask.sum()), int(skeleton.sum()), crossing, np.asarray(elongation, np.float64))


def relative_gap(real: float | None, synthetic: float | None) -> float | None:
    """``synthetic / real - 1`` (None when either is missing or real is 0)."""
    if real is None or synthetic is None or real == 0:
        return None
    return synthetic / real - 1
