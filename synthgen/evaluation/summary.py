"""What a manifest holds, at a glance: counts, sizes, class fractions, height statistics and quality flags.

``summarize_manifest`` reads only the manifest and the shard files' sizes (no tile is decoded) and returns a
JSON-able dict; ``format_summary`` turns that dict into aligned text for a terminal.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from synthgen.io.geotiff import RASTER_KINDS
from synthgen.io.manifest import read_manifest, shard_path
from synthgen.schema import load_scheme


def _counts(values) -> dict[str, int]:
    counter = Counter(str(v) for v in values)
    return {k: int(v) for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))}


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _has_raster(df: pd.DataFrame, kind: str) -> pd.Series:
    return pd.Series(
        [f"{key}.{kind}.tif" in list(members) for key, members in zip(df["key"], df["members"], strict=True)],
        index=df.index,
        dtype=bool,
    )


def _shard_files(df: pd.DataFrame) -> dict:
    present, missing, total = 0, [], 0
    for shard in sorted(df["shard"].unique()):
        path = shard_path(df, shard)
        if path.is_file():
            present += 1
            total += path.stat().st_size
        else:
            missing.append(str(shard))
    return {"shards": present + len(missing), "shard_bytes": total, "missing_shards": missing}


def _scheme_classes(scheme_name: str, hists: list[np.ndarray]) -> dict:
    scheme = load_scheme(scheme_name)
    length = max([len(h) for h in hists] + [max(scheme.codes) + 1])
    total_hist = np.zeros(length, np.int64)
    for h in hists:
        total_hist[: len(h)] += np.asarray(h, np.int64)
    pixels = int(total_hist.sum())
    names = scheme.names
    codes = [c.code for c in scheme.valid_classes]
    codes += [c for c in np.flatnonzero(total_hist).tolist() if c not in names]
    fractions = {names.get(c, f"code {c}"): float(total_hist[c] / pixels) if pixels else 0.0 for c in codes}
    nodata = float(total_hist[scheme.nodata] / pixels) if pixels and scheme.nodata is not None else None
    return {"label_tiles": len(hists), "pixels": pixels, "fractions": fractions, "nodata": nodata}


def class_fractions(df: pd.DataFrame) -> dict[str, dict]:
    """Per scheme: labelled tiles, pixels, fraction of label pixels per class name, nodata fraction."""
    has_label = _has_raster(df, "label")
    out = {}
    for scheme_name, group in df[has_label].groupby("scheme", sort=True):
        out[str(scheme_name)] = _scheme_classes(str(scheme_name), list(group["class_hist"]))
    return out


def height_stats(df: pd.DataFrame) -> dict:
    """Tiles with height, their pixel-weighted valid fraction, mean of means, min of mins, max of maxes."""
    h = df[_has_raster(df, "height")]
    if h.empty:
        return {"tiles": 0, "valid_frac": None, "mean": None, "min": None, "max": None}
    pixels = (h["width_px"] * h["height_px"]).to_numpy(np.float64)
    valid = float(np.average(h["height_valid_frac"].to_numpy(np.float64), weights=pixels))
    means = h["height_mean"].to_numpy(np.float64)
    mins, maxes = h["height_min"].to_numpy(np.float64), h["height_max"].to_numpy(np.float64)
    return {
        "tiles": len(h),
        "valid_frac": valid,
        "mean": _finite_or_none(np.nanmean(means)) if np.isfinite(means).any() else None,
        "min": _finite_or_none(np.nanmin(mins)) if np.isfinite(mins).any() else None,
        "max": _finite_or_none(np.nanmax(maxes)) if np.isfinite(maxes).any() else None,
    }


def summarize_manifest(manifest: Path) -> dict:
    """A JSON-able summary of a manifest: counts by split/generator/scheme/size, bytes, classes, heights.

    Reads the manifest and stats the shard files; no tile is decoded.
    """
    df = read_manifest(manifest)
    return {
        "manifest": str(manifest),
        "tiles": len(df),
        **_shard_files(df),
        "rasters": {kind: int(_has_raster(df, kind).sum()) for kind in RASTER_KINDS},
        "splits": _counts(df["split"]),
        "generators": _counts(df["generator"]),
        "schemes": _counts(df["scheme"]),
        "tile_sizes": _counts(f"{w}x{h}" for w, h in zip(df["width_px"], df["height_px"], strict=True)),
        "crs": sorted({str(c) for c in df["crs"]}),
        "synthetic_georef": int(df["synthetic_georef"].fillna(False).astype(bool).sum()),
        "quality_flags": _counts(f for flags in df["quality_flags"] for f in flags),
        "classes": class_fractions(df),
        "height": height_stats(df),
    }


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _join_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k or '(none)'} {v}" for k, v in counts.items()) or "-"


def _metres(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} m"


def _height_line(height: dict) -> str:
    if not height["tiles"]:
        return "no tiles with height"
    return (
        f"{height['tiles']} tiles, {100 * height['valid_frac']:.1f} % valid, mean {_metres(height['mean'])}, "
        f"min {_metres(height['min'])}, max {_metres(height['max'])}"
    )


def _class_lines(scheme: str, info: dict) -> list[str]:
    lines = [f"classes ({scheme}: {info['label_tiles']} tiles, {info['pixels']:,} px)"]
    ranked = sorted(info["fractions"].items(), key=lambda kv: (-kv[1], kv[0]))
    if info["nodata"] is not None:
        ranked.append(("(nodata)", info["nodata"]))
    width = max((len(name) for name, _ in ranked), default=0)
    lines += [f"  {name:<{width}}  {100 * frac:6.2f} %" for name, frac in ranked]
    return lines


def format_summary(summary: dict) -> str:
    """A ``summarize_manifest`` dict as aligned multi-line text; class fractions as sorted percentages."""
    shards = f"{summary['shards']} ({_human_bytes(summary['shard_bytes'])} on disk)"
    if summary["missing_shards"]:
        shards += f", missing: {', '.join(summary['missing_shards'])}"
    fields = [
        ("manifest", summary["manifest"]),
        ("tiles", str(summary["tiles"])),
        ("shards", shards),
        ("rasters", _join_counts(summary["rasters"])),
        ("splits", _join_counts(summary["splits"])),
        ("generators", _join_counts(summary["generators"])),
        ("schemes", _join_counts(summary["schemes"])),
        ("tile sizes", _join_counts(summary["tile_sizes"])),
        ("crs", ", ".join(summary["crs"]) or "-"),
        ("synthetic georef", f"{summary['synthetic_georef']} of {summary['tiles']} tiles"),
        ("quality flags", _join_counts(summary["quality_flags"])),
        ("height", _height_line(summary["height"])),
    ]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name:<{width}}  {value}" for name, value in fields]
    for scheme, info in summary["classes"].items():
        lines += _class_lines(scheme, info)
    return "\n".join(lines)
