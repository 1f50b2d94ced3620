"""The data-ranking study's summary (`make fidelity`): from the report of `synthgen validate --paper --profile
fidelity`, the issue-14 targets (synthetic data against real data on the real Dubai val split, mean over seeds),
the per-class IoU of roads and trees, how many models reached a plateau, and the CPU time; JSON plus one figure
(mIoU per training set with its spread across seeds | the mixing curve | per-class IoU).

    python scripts/fidelity.py runs/fidelity/report.json --out bench/fidelity.json --plot docs/fidelity.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthgen.io.atomic import atomic_path, atomic_write  # noqa: E402
from synthgen.validation.plots import draw_mixing  # noqa: E402
from synthgen.validation.report import load_report, mixing_curves  # noqa: E402
from synthgen.validation.seeds import seed_groups  # noqa: E402

TEST = "real"
GENERATORS = ("spade", "controlnet")
WATCHED_CLASSES = ("road", "tree", "building")


def _miou(group: dict | None) -> dict | None:
    return None if group is None else group["tests"].get(TEST, {}).get("miou")


def _ratio(num: dict | None, den: dict | None, target: float) -> dict:
    if num is None or den is None or not den["mean"]:
        return {"ratio": None, "target": target, "met": None}
    ratio = num["mean"] / den["mean"]
    return {"ratio": round(ratio, 3), "target": target, "met": bool(ratio >= target), "of": num, "against": den}


def targets(groups: list[dict]) -> dict:
    """Each target of issue 14, per generator: the ratio of mean mIoU on the real val split, and whether it is met."""
    cross = {g["train"]: g for g in groups if g["kind"] == "crosstest"}
    mixing = {(g["fraction"], tuple(g["synthetic"])): g for g in groups if g["kind"] == "mixing"}
    real = _miou(cross.get("real"))
    result = {}
    for gen in GENERATORS:
        synthetic = f"{gen}_synthetic"
        entry = {
            "generated labels / real": _ratio(_miou(cross.get(synthetic)), real, 1.0),
            "real labels / real": _ratio(_miou(cross.get(f"{gen}_real")), real, 1.0),
        }
        for fraction, goal in ((0.1, 1.15), (0.25, 1.0), (1.0, 1.0)):
            alone, mixed = mixing.get((fraction, ())), mixing.get((fraction, (synthetic,)))
            entry[f"{fraction:g} real + generated / {fraction:g} real"] = _ratio(_miou(mixed), _miou(alone), goal)
        result[gen] = entry
    return result


def filter_effect(groups: list[dict]) -> dict:
    """Per generator, the label-consistency filter: its kept tiles against a random subset of the same size (does
    choosing the tiles help?) and against the whole set (is it worth the tiles it drops?)."""
    cross = {g["train"]: g for g in groups if g["kind"] == "crosstest"}
    result = {}
    for gen in GENERATORS:
        filtered = _miou(cross.get(f"{gen}_synthetic_filtered"))
        if filtered is None:
            continue
        result[gen] = {
            "filtered / same-size random": _ratio(filtered, _miou(cross.get(f"{gen}_synthetic_random")), 1.0),
            "filtered / all generated": _ratio(filtered, _miou(cross.get(f"{gen}_synthetic")), 1.0),
            "tiles": {
                k: cross[f"{gen}_synthetic{k}"]["train_tiles"]
                for k in ("", "_filtered")
                if f"{gen}_synthetic{k}" in cross
            },
        }
    return result


def class_ious(groups: list[dict]) -> dict:
    """Per cross-test training set, the IoU (mean ± sd) of the watched classes on the real val split."""
    return {
        g["train"]: {c: g["tests"].get(TEST, {}).get("iou_per_class", {}).get(c) for c in WATCHED_CLASSES}
        for g in groups
        if g["kind"] == "crosstest"
    }


def summary(report: dict) -> dict:
    """What bench/fidelity.json holds."""
    groups = report.get("summary") or seed_groups(report["runs"])
    runs = report["runs"]
    converged = sum(r["training"].get("convergence", {}).get("plateau") is True for r in runs)
    seconds = sum(r["training"].get("seconds", 0.0) for r in {r["training"]["folder"]: r for r in runs}.values())
    return {
        "command": report["command"],
        "created": report["created"],
        "device": report["versions"]["device"],
        "config": {k: report["config"][k] for k in ("encoder", "steps", "batch_size", "crop", "lr", "lr_schedule")},
        "seeds": sorted({r["seed"] for r in runs}),
        "test_set": TEST,
        "models": len({r["training"]["folder"] for r in runs}),
        "models_at_plateau": converged,
        "runs": len(runs),
        "training_cpu_hours": round(seconds / 3600, 2),
        "targets": targets(groups),
        "label_filter": filter_effect(groups),
        "class_iou": class_ious(groups),
        "missing": report["missing"],
        "groups": [{k: v for k, v in g.items() if k != "runs"} for g in groups],
    }


def plot(report: dict, path: Path) -> Path:
    """mIoU per training set (mean ± sd) | mixing curve | per-class IoU, all on the real val split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = report.get("summary") or seed_groups(report["runs"])
    cross = [g for g in groups if g["kind"] == "crosstest" and _miou(g)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    names = [g["train"] for g in cross]
    means = [_miou(g)["mean"] for g in cross]
    axes[0].bar(names, means, yerr=[_miou(g)["sd"] for g in cross], capsize=4, color="#4a7ab0")
    axes[0].set_ylabel(f"mIoU on '{TEST}' (mean ± sd over seeds)")
    axes[0].set_title("trained on one set")
    axes[0].tick_params(axis="x", rotation=25)
    draw_mixing(axes[1], mixing_curves(report, [TEST])[TEST], "mixing")
    classes = [c for c in dict.fromkeys(c for g in cross for c in g["tests"][TEST]["iou_per_class"])
               if any(g["tests"][TEST]["iou_per_class"].get(c) for g in cross)]  # fmt: skip
    width = 0.8 / max(len(cross), 1)
    for k, g in enumerate(cross):
        values = [(g["tests"][TEST]["iou_per_class"].get(c) or {"mean": 0.0})["mean"] for c in classes]
        axes[2].bar(np.arange(len(classes)) + (k + 0.5) * width - 0.4, values, width, label=g["train"])
    axes[2].set_xticks(range(len(classes)), classes, rotation=20)
    axes[2].set_ylabel("IoU")
    axes[2].set_title("per class")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def main() -> None:
    """Read the report, write the summary JSON and the figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, required=True)
    args = parser.parse_args()
    report = load_report(args.report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, json.dumps(summary(report), indent=1))
    plot(report, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
