"""PNG plots of a validation report (matplotlib, Agg): cross-test heatmap, per-class IoU bars, mixing curves; and
prediction overlays (pillow): rgb | truth | prediction (| true height | predicted height) for a few test tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from synthgen.io.atomic import atomic_path
from synthgen.schema import ClassScheme

HEIGHT_RAMP_MAX_M = 30.0
OVERLAY_MIN_PX = 96


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(rows: list[str], columns: list[str], values: np.ndarray, path: Path, title: str) -> Path:
    """A rows x columns heatmap of scores in [0, 1], each cell written out; NaN cells are grey."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(columns), 1.0 + 0.45 * len(rows)))
    masked = np.ma.masked_invalid(values.astype(float))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    image = ax.imshow(masked, cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(columns)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", color="w" if values[i, j] < 0.6 else "k")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("test set")
    ax.set_ylabel("training set × architecture")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.04)
    path = _save(fig, path)
    plt.close(fig)
    return path


def class_bars(per_test: dict[str, dict[str, dict[str, float | None]]], path: Path) -> Path:
    """One panel per test set: per-class IoU bars, one bar per run (``per_test[test][run][class]``)."""
    plt = _pyplot()
    tests = list(per_test)
    fig, axes = plt.subplots(len(tests), 1, figsize=(10, 3.2 * len(tests)), squeeze=False)
    for ax, test in zip(axes[:, 0], tests, strict=True):
        runs = per_test[test]
        classes = [
            c
            for c in dict.fromkeys(c for r in runs.values() for c in r)
            if any(r.get(c) is not None for r in runs.values())
        ]
        width = 0.8 / max(len(runs), 1)
        for k, (run, ious) in enumerate(runs.items()):
            values = [ious.get(c) if ious.get(c) is not None else 0.0 for c in classes]
            ax.bar(np.arange(len(classes)) + k * width - 0.4 + width / 2, values, width, label=run)
        ax.set_xticks(range(len(classes)), classes, rotation=20, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("IoU")
        ax.set_title(f"per-class IoU on '{test}'")
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    path = _save(fig, path)
    plt.close(fig)
    return path


def draw_mixing(ax, lines: dict[str, list[tuple[float, float, float]]], title: str) -> None:
    """One mixing panel on ``ax``: mIoU (mean, sd as error bars) against the real share, a line per label."""
    for label, points in lines.items():
        xs, ys, sds = zip(*sorted(points), strict=True)
        ax.errorbar(xs, ys, yerr=sds, fmt="-o" if label.endswith(" only") else "--o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("share of the real training set")
    ax.set_ylabel("mIoU")
    ax.set_title(title)
    ax.legend(fontsize=7)


def mixing_curves(curves: dict[str, dict[str, list[tuple[float, float, float]]]], path: Path) -> Path:
    """One panel per test set: mIoU (mean, sd as error bars) against the real share, one line per (arch, real only /
    + synthetic sets)."""
    plt = _pyplot()
    tests = list(curves)
    fig, axes = plt.subplots(1, len(tests), figsize=(5 * len(tests), 3.8), squeeze=False)
    for ax, test in zip(axes[0], tests, strict=True):
        draw_mixing(ax, curves[test], f"mixing, tested on '{test}'")
        ax.set_ylim(0, 1)
    fig.tight_layout()
    path = _save(fig, path)
    plt.close(fig)
    return path


def _height_rgb(height: np.ndarray) -> np.ndarray:
    h = np.nan_to_num(np.clip(height / HEIGHT_RAMP_MAX_M, 0, 1), nan=0.0)
    ramp = (np.stack([h, h**0.5, 1 - h], -1) * 255).astype(np.uint8)
    ramp[~np.isfinite(height)] = 0
    return ramp


def write_overlay(path: Path, samples: list[dict], scheme: ClassScheme) -> Path:
    """A PNG with one row per sample: rgb | truth | prediction in the scheme's palette (| heights, 0-30 m ramp);
    tiles under 96 px are enlarged by pixel repetition so that they can be seen."""
    lut = scheme.palette_lut()
    zoom = max(1, OVERLAY_MIN_PX // max(s["rgb"].shape[0] for s in samples))
    rows = []
    for s in samples:
        panels = [s["rgb"], lut[s["label"]], lut[s["pred"]]]
        if s.get("height") is not None:
            panels += [_height_rgb(s["height"]), _height_rgb(s["pred_height"])]
        panels = [p.repeat(zoom, 0).repeat(zoom, 1) for p in panels]
        rows.append(np.concatenate([np.pad(p, ((2, 2), (2, 2), (0, 0)), constant_values=255) for p in panels], 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    body = np.concatenate(rows, 0)
    header = Image.new("RGB", (width, 14), "white")
    names = ["rgb", "truth", "prediction", "true height", "pred. height"]
    cell = samples[0]["rgb"].shape[1] * zoom + 4
    draw = ImageDraw.Draw(header)
    for k in range(rows[0].shape[1] // cell):
        draw.text((k * cell + 3, 1), names[k], fill="black")
    image = Image.new("RGB", (width, 14 + body.shape[0]), "white")
    image.paste(header, (0, 0))
    image.paste(Image.fromarray(body), (0, 14))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
