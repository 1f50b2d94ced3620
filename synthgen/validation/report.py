"""Validation reports: one JSON with every number, config and seed; a markdown table in the layout of the published
cross-test (rows: training set x architecture, columns: test sets); PNG plots. ``render`` rebuilds the markdown
and plots from the JSON alone, which is what ``synthgen report`` runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.config import config_to_dict
from synthgen.errors import ConfigError
from synthgen.io.atomic import atomic_write
from synthgen.schema import ClassScheme
from synthgen.validation import plots
from synthgen.validation.seeds import format_spread, seed_groups

REPORT_KINDS = ("validate", "adapt")
TABLE_KINDS = ("crosstest", "source_only", "adapted")


def _versions() -> dict:
    import segmentation_models_pytorch as smp
    import torch
    import torchmetrics

    return {
        "synthgen": __version__,
        "torch": torch.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "torchmetrics": torchmetrics.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
    }


def _command() -> str:
    """The synthgen command line that is running ('' when called as a library)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "synthgen" or (argv0.name == "__main__.py" and argv0.parent.name == "synthgen"):
        return " ".join(["synthgen", *sys.argv[1:]])
    return ""


def build_report(
    kind: str, config, scheme: ClassScheme, sets: dict, runs: list[dict], missing: list[dict], note: str = ""
) -> dict:
    """The report dict: what ran (command, config, seed, versions), on what (sets, scheme), and every score."""
    return {
        "kind": kind,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": _command(),
        "versions": _versions(),
        "seed": config.seed,
        "config": config_to_dict(config),
        "scheme": {"name": scheme.name, "classes": {str(c.code): c.name for c in scheme.valid_classes}},
        "sets": sets,
        "runs": runs,
        "summary": seed_groups(runs),
        "missing": missing,
        "note": note,
    }


def load_report(path: Path) -> dict:
    """Read a report JSON; a missing file or one that is not a synthgen report is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: report not found (synthgen validate / adapt write <out>/report.json)")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(report, dict) or report.get("kind") not in REPORT_KINDS or "runs" not in report:
        raise ConfigError(f"{path}: not a synthgen validation report (needs 'kind' in {REPORT_KINDS} and 'runs')")
    return report


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _test_names(report: dict) -> list[str]:
    return list(report["sets"].get("test", {}))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _row_label(run: dict) -> str:
    if run["kind"] == "adapted":
        return f"{run['train']} → {run.get('target', '?')} (adapted)"
    if run["kind"] == "source_only":
        return f"{run['train']} (source only)"
    return run["train"]


def _groups(report: dict, kinds) -> list[dict]:
    return [g for g in report.get("summary") or seed_groups(report["runs"]) if g["kind"] in kinds]


def crosstest_table(report: dict, metric: str = "miou") -> list[str]:
    """Markdown rows: training set x architecture against test sets, one score per cell (mean ± sd over seeds)."""
    tests = _test_names(report)
    groups = _groups(report, TABLE_KINDS)
    seeds = any(len(g["seeds"]) > 1 for g in groups)  # the column is there when some row has several seeds
    rows = []
    for group in groups:
        cells = [format_spread(group["tests"].get(t, {}).get(metric)) for t in tests]
        rows.append([_row_label(group), group["arch"], *([str(len(group["seeds"]))] if seeds else []), *cells])
    return _table(["training set", "architecture", *(["seeds"] if seeds else []), *tests], rows)


def class_table(report: dict) -> list[str]:
    """Markdown rows: per training set x architecture, every class's IoU on the first test set (mean ± sd)."""
    tests = _test_names(report)
    groups = _groups(report, TABLE_KINDS + ("mixing",))
    if not tests or not groups:
        return []
    classes = list(dict.fromkeys(c for g in groups for c in g["tests"].get(tests[0], {}).get("iou_per_class", {})))
    rows = []
    for group in groups:
        ious = group["tests"].get(tests[0], {}).get("iou_per_class", {})
        rows.append([_mix_label(group), group["arch"], *(format_spread(ious.get(c), 2) for c in classes)])
    return _table(["training set", "architecture", *classes], rows)


def convergence_table(report: dict) -> list[str]:
    """Markdown rows: per run, the validation loss's change over the last fifth of the steps and the verdict."""
    rows = []
    for run in report["runs"]:
        c = run["training"].get("convergence")
        if c:
            verdict = {True: "plateau", False: "still falling", None: "too few points"}[c["plateau"]]
            rows.append(
                [run["name"], _fmt(c["last_fifth_change"], 4), verdict, str(c["best_step"]), _fmt(c["final_loss"])]
            )
    return _table(["run", "last-fifth change", "verdict", "lowest-loss step", "final loss"], rows) if rows else []


def _mix_label(group: dict) -> str:
    if group["kind"] != "mixing":
        return _row_label(group)
    added = " + " + "+".join(group["synthetic"]) if group["synthetic"] else " only"
    return f"{group['fraction']:g} {group['train']}{added}"


def height_table(report: dict) -> list[str]:
    """Markdown rows of height MAE / RMSE (m) / δ<1.25 per run and test set."""
    tests = _test_names(report)
    rows = []
    for run in report["runs"]:
        if run["kind"] in TABLE_KINDS:
            cells = []
            for t in tests:
                h = run["tests"].get(t, {}).get("height") or {}
                cells.append(f"{_fmt(h.get('mae'), 2)} / {_fmt(h.get('rmse'), 2)} / {_fmt(h.get('delta1'))}")
            rows.append([_row_label(run), run["arch"], *cells])
    return _table(["training set", "architecture", *(f"{t} MAE / RMSE / δ<1.25" for t in tests)], rows)


def mixing_curves(report: dict, tests: list[str]) -> dict[str, dict[str, list[tuple[float, float, float]]]]:
    """Per test set, per line ('<arch>, real only' or '<arch>, real + <sets>'), the (real share, mean mIoU, sd) of
    every mixing group."""
    curves: dict = {t: {} for t in tests}
    for g in _groups(report, ("mixing",)):
        label = f"{g['arch']}, real" + (" + " + "+".join(g["synthetic"]) if g["synthetic"] else " only")
        for t in tests:
            value = g["tests"].get(t, {}).get("miou")
            if value is not None:
                curves[t].setdefault(label, []).append((g["fraction"], value["mean"], value["sd"]))
    return curves


def mixing_table(report: dict) -> list[str]:
    """Markdown rows: real share x architecture x what was added (nothing, or synthetic sets); per test set, mIoU
    (mean ± sd over seeds)."""
    tests = _test_names(report)
    rows = []
    for group in sorted(_groups(report, ("mixing",)), key=lambda g: (g["fraction"], g["arch"], g["synthetic"])):
        added = "+".join(group["synthetic"]) or "nothing"
        cells = [format_spread(group["tests"].get(t, {}).get("miou")) for t in tests]
        rows.append([f"{group['fraction']:g}", str(group["real_tiles"]), group["arch"], added, *cells])
    return _table(["real share", "real tiles", "architecture", "added", *tests], rows)


def adapt_table(report: dict) -> list[str]:
    """Markdown rows: per architecture and test set, mIoU of source-only and adapted models and the gain of the
    means (mean ± sd over seeds)."""
    tests = _test_names(report)
    by_arch: dict[str, dict] = {}
    for group in _groups(report, ("source_only", "adapted")):
        by_arch.setdefault(group["arch"], {})[group["kind"]] = group
    coverage = {}
    for run in report["runs"]:
        if run["kind"] == "adapted":
            coverage.setdefault(run["arch"], []).append(run["training"].get("pseudo_label_coverage"))
    rows = []
    for arch, pair in by_arch.items():
        for t in tests:
            before = pair.get("source_only", {}).get("tests", {}).get(t, {}).get("miou")
            after = pair.get("adapted", {}).get("tests", {}).get(t, {}).get("miou")
            gain = None if before is None or after is None else after["mean"] - before["mean"]
            covered = [c for c in coverage.get(arch, []) if c is not None]
            rows.append(
                [
                    arch,
                    t,
                    format_spread(before),
                    format_spread(after),
                    ("+" if (gain or 0) >= 0 else "") + _fmt(gain),
                    _fmt(sum(covered) / len(covered) if covered else None),
                ]
            )
    return _table(["architecture", "test set", "source only", "adapted", "gain", "pseudo-label coverage"], rows)


def markdown(report: dict, plot_paths: dict[str, str]) -> str:
    """The report as markdown: tables of every score, the sets, speeds, what is missing, links to the plots."""
    cfg = report["config"]
    kinds = {r["kind"] for r in report["runs"]}
    lines = [
        f"# synthgen {report['kind']} report",
        "",
        f"- command: `{report['command'] or 'library call'}`",
        f"- created {report['created']} on {report['versions']['device']}; seed {report['seed']}; "
        f"scheme `{report['scheme']['name']}`; encoder `{cfg['encoder']}` "
        f"(weights: {cfg['encoder_weights'] or 'none'}); "
        f"{cfg['steps']} steps × batch {cfg['batch_size']} of {cfg['crop']} px crops "
        f"({cfg.get('lr_schedule', 'cosine')} learning rate); task {','.join(cfg['task'])}; "
        f"seeds {', '.join(str(s) for s in sorted({r['seed'] for r in report['runs']})) or report['seed']}",
    ]
    if report.get("note"):
        lines.append(f"- {report['note']}")
    if "seg" in cfg["task"] and kinds & set(TABLE_KINDS):
        lines += ["", "## mIoU (rows: training set × architecture; columns: test sets)", "", *crosstest_table(report)]
        lines += ["", "## Overall accuracy", "", *crosstest_table(report, "overall_accuracy")]
        lines += ["", "## F1 (macro)", "", *crosstest_table(report, "f1")]
    if "height" in cfg["task"] and kinds & set(TABLE_KINDS):
        lines += ["", "## Height: MAE (m) / RMSE (m) / δ<1.25", "", *height_table(report)]
    if "mixing" in kinds:
        lines += ["", "## Mixing: mIoU with a share of the real set, alone and with the synthetic sets", ""]
        lines += mixing_table(report)
    if "seg" in cfg["task"] and (per_class := class_table(report)):
        lines += ["", f"## Per-class IoU on '{_test_names(report)[0]}'", "", *per_class]
    if conv := convergence_table(report):
        lines += ["", "## Convergence: validation loss over the last fifth of the steps", "", *conv]
    if kinds & {"source_only", "adapted"}:
        lines += ["", "## Self-training adaptation: source only vs adapted (mIoU)", "", *adapt_table(report)]
    lines += ["", "## Sets", ""]
    rows = []
    for role in ("train", "test", "target"):
        for name, s in report["sets"].get(role, {}).items():
            parts = ", ".join(f"`{p['manifest']}:{p['split']}`" for p in s["parts"])
            rows.append([role, name, parts, str(s["tiles"]), ", ".join(s["tile_sizes"]), str(s["with_height"])])
    lines += _table(["role", "set", "manifests", "tiles", "sizes", "with height"], rows)
    lines += ["", "## Speed", ""]
    rows = []
    for run in report["runs"]:
        t = run["training"]
        evals = [f"{n} {v['images_per_s']:.1f}" for n, v in run["tests"].items()]
        rows.append(
            [
                run["name"],
                str(t.get("params", "")),
                _fmt(t.get("images_per_s"), 1),
                _fmt(t.get("seconds"), 1),
                "; ".join(evals),
            ]
        )
    lines += _table(["run", "parameters", "train images/s", "train s", "test images/s"], rows)
    if report["missing"]:
        lines += ["", "## Missing", ""]
        lines += [f"- **{m['set']}**: {m['reason']}" for m in report["missing"]]
    if plot_paths:
        lines += ["", "## Plots", ""]
        lines += [f"- {name}: `{path}`" for name, path in plot_paths.items()]
    return "\n".join(lines) + "\n"


def _mean(value: dict | None) -> float | None:
    return None if value is None else value["mean"]


def render_plots(report: dict, out_dir: Path) -> dict[str, str]:
    """Write the PNG plots the report's numbers allow (means over seeds, the spread as error bars); return their
    paths by name."""
    out_dir = Path(out_dir) / "plots"
    tests = _test_names(report)
    table_groups = _groups(report, TABLE_KINDS)
    paths: dict[str, str] = {}
    seg = "seg" in report["config"]["task"]
    if table_groups and tests and seg:
        rows = [f"{_row_label(g)} · {g['arch']}" for g in table_groups]
        scores = [[_mean(g["tests"].get(t, {}).get("miou")) for t in tests] for g in table_groups]
        values = np.array([[np.nan if v is None else v for v in row] for row in scores], float)
        paths["cross-test mIoU"] = str(plots.heatmap(rows, tests, values, out_dir / "crosstest_miou.png", "mIoU"))
        per_test = {
            t: {
                f"{_row_label(g)} · {g['arch']}": {
                    c: _mean(v) for c, v in g["tests"].get(t, {}).get("iou_per_class", {}).items()
                }
                for g in table_groups
            }
            for t in tests
        }
        paths["per-class IoU"] = str(plots.class_bars(per_test, out_dir / "per_class_iou.png"))
    if _groups(report, ("mixing",)) and seg:
        paths["mixing curves"] = str(plots.mixing_curves(mixing_curves(report, tests), out_dir / "mixing.png"))
    overlays = [v["overlay"] for r in report["runs"] for v in r["tests"].values() if v.get("overlay")]
    for path in overlays:
        paths[f"overlay {Path(path).stem}"] = path
    return paths


def render(report: dict, out_dir: Path) -> dict[str, str]:
    """Write ``report.md`` and the plots from a report dict; return the written paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = render_plots(report, out_dir)
    atomic_write(out_dir / "report.md", markdown(report, paths))
    return {"markdown": str(out_dir / "report.md"), **paths}


def write_report(report: dict, out_dir: Path) -> dict[str, str]:
    """Write ``report.json`` (every number), then the markdown and plots rendered from it (main process only)."""
    from accelerate import PartialState

    out_dir = Path(out_dir)
    if not PartialState().is_main_process:
        return {}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = render(report, out_dir)
    atomic_write(out_dir / "report.json", json.dumps(report, indent=1))
    return {"json": str(out_dir / "report.json"), **paths}
