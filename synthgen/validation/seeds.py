"""Runs that differ only in their seed, taken together: mean, standard deviation and count of every score.

A group is one row of a report table (kind, training set, architecture, and for the mixing experiment the real
share and the synthetic sets added); its runs are the seeds. The standard deviation is the sample one (n - 1),
0 for a single seed.
"""

from __future__ import annotations

import numpy as np


def spread(values: list[float | None]) -> dict | None:
    """``{mean, sd, n}`` of the values that are not None (None when there are none)."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return None
    sd = float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0
    return {"mean": round(float(np.mean(kept)), 4), "sd": round(sd, 4), "n": len(kept)}


def group_key(run: dict) -> tuple:
    """What identifies a run's row apart from its seed."""
    return (run["kind"], run.get("train"), run["arch"], run.get("fraction"), tuple(run.get("synthetic") or ()))


def seed_groups(runs: list[dict]) -> list[dict]:
    """The runs grouped by ``group_key`` in first-seen order: each group's identifying fields, seeds, run names,
    per test set the spread of mIoU, overall accuracy, F1 and every class's IoU, and how many runs converged."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    return [_summary(members) for members in groups.values()]


def _summary(members: list[dict]) -> dict:
    first = members[0]
    tests: dict[str, dict] = {}
    for test in dict.fromkeys(t for r in members for t in r["tests"]):
        scores = [r["tests"].get(test, {}) for r in members]
        classes = dict.fromkeys(c for s in scores for c in s.get("iou_per_class", {}))
        tests[test] = {
            **{m: spread([s.get(m) for s in scores]) for m in ("miou", "overall_accuracy", "f1")},
            "iou_per_class": {c: spread([s.get("iou_per_class", {}).get(c) for s in scores]) for c in classes},
        }
    verdicts = [r["training"].get("convergence", {}).get("plateau") for r in members]
    return {
        **{k: first.get(k) for k in ("kind", "train", "arch", "fraction", "synthetic", "real_tiles", "target")},
        "train_tiles": first.get("train_tiles"),
        "seeds": [r["seed"] for r in members],
        "runs": [r["name"] for r in members],
        "tests": tests,
        "converged": sum(v is True for v in verdicts),
        "monitored": sum(v is not None for v in verdicts),
        "train_seconds": spread([r["training"].get("seconds") for r in members]),
    }


def format_spread(value: dict | None, digits: int = 3) -> str:
    """``mean ± sd`` (just the mean for one seed; ``–`` for none)."""
    if value is None:
        return "–"
    if value["n"] == 1:
        return f"{value['mean']:.{digits}f}"
    return f"{value['mean']:.{digits}f} ± {value['sd']:.{digits}f}"
