"""The report of ``synthgen dataset``: ``report.json`` (every number) and ``report.md`` (per stage: tiles, wall time,
tiles/s, model; the preview sheets; the validation table), written through temporary files into the dataset folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from pathlib import Path

from synthgen import __version__
from synthgen.config import config_to_dict
from synthgen.dataset.config import STAGES, DatasetConfig
from synthgen.io.atomic import atomic_write


def model_label(model: str | None, default: Path) -> str:
    """How the report names a model: as configured, or the embedded default's folder."""
    return model if model is not None else f"synthgen/weights/{default.name} (embedded default)"


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


def build_dataset_report(config: DatasetConfig, records: list[dict], started: float, finished: bool) -> dict:
    """The report dict: the run (config, device, versions, wall time), one record per stage that ran or was
    skipped, and the stages that are off."""
    ran = {r["stage"] for r in records}
    return {
        "kind": "dataset",
        "name": config.name,
        "folder": str(config.root),
        "config_file": config.source,
        "config": config_to_dict(config),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "finished": finished,
        "device": _device(),
        "versions": {"synthgen": __version__, "python": platform.python_version()},
        "wall_s": round(time.time() - started, 2),
        "stages": records,
        "off": [s for s in STAGES if s not in config.stages],
        "pending": [s for s in config.stages if s not in ran],
    }


def _num(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _status(record: dict) -> str:
    if record["status"] == "skipped":
        return "complete earlier (skipped)"
    return record["status"]


def markdown(report: dict) -> str:
    """The report as markdown."""
    lines = [
        f"# synthgen dataset `{report['name']}`",
        "",
        f"- folder: `{report['folder']}`; config `{report['config_file']}` (resolved: `dataset.yaml`)",
        f"- {report['created']} on {report['device']}; synthgen {report['versions']['synthgen']}; "
        f"wall time of this run {report['wall_s']:.1f} s{'' if report['finished'] else ' (not finished)'}",
        "",
        "## Stages",
        "",
        "| stage | status | tiles | made in this run | wall s | tiles/s | model | output |",
        "|---|---|---|---|---|---|---|---|",
    ]
    records = {r["stage"]: r for r in report["stages"]}
    for stage in STAGES:
        r = records.get(stage)
        if r is None:
            status = "off (not in `stages`)" if stage in report["off"] else "not run yet"
            lines.append(f"| {stage} | {status} | | | | | | |")
            continue
        output = r.get("manifest") or r.get("report", "")
        earlier = " (earlier run)" if r["status"] == "skipped" else ""
        made = "–" if stage in ("filter", "validate") else ("0" if earlier else str(r.get("tiles_made", "–")))
        lines.append(
            f"| {stage} | {_status(r)} | {r['tiles']} | {made} | {_num(r['wall_s'], 1)}{earlier} | "
            f"{_num(r.get('tiles_per_s'))}{earlier if r.get('tiles_per_s') is not None else ''} | "
            f"{r.get('model', '–')} | `{output}` |"
        )
    lines += [
        "",
        "Wall time includes loading the model; tiles/s counts the tiles made in that run. A skipped stage (complete "
        "from an earlier run) shows the wall time and tiles/s of the run that made it.",
    ]
    previews = [r for r in report["stages"] if r.get("preview")]
    if previews:
        lines += ["", "## Previews"]
        for r in previews:
            lines += ["", f"### {r['stage']}", "", f"![{r['stage']}]({r['preview']})"]
    filtered = next((r for r in report["stages"] if r["stage"] == "filter"), None)
    if filtered:
        lines += ["", "## Label-consistency filter", ""]
        lines.append(
            f"- per-tile mIoU between each tile's label and what {filtered['model']} segments in its image; kept: "
            f"score >= {filtered['threshold']}"
        )
        lines += ["", "| set | tiles | kept | score p10 / p50 / p90 | filtered manifest |", "|---|---|---|---|---|"]
        for stage, s in filtered["sets"].items():
            quantiles = " / ".join(_num(q) for q in s["score_p10_p50_p90"])
            lines.append(f"| {stage} | {s['tiles']} | {s['kept']} | {quantiles} | `{s['filtered']}` |")
    validation = next((r for r in report["stages"] if r["stage"] == "validate"), None)
    if validation:
        lines += ["", "## Validation", ""]
        lines.append(
            f"- {validation['note']}; profile `{validation['profile']}`, {validation['steps']} steps per model"
        )
        if validation.get("converged_runs", 0) < validation["runs"]:
            lines.append(
                f"- **These numbers do not rank the sets**: {validation['runs'] - validation.get('converged_runs', 0)} "
                f"of {validation['runs']} models were not shown to reach a plateau of their validation loss in "
                f"{validation['steps']} steps; they show that the chain runs end to end. `make fidelity` ranks the "
                "sets (models trained to a plateau, 3 seeds, mean ± sd)."
            )
        for m in validation["missing"]:
            lines.append(f"- **{m['set']}**: {m['reason']}")
        if validation["table"]:
            lines += ["", "mIoU (rows: training set × architecture; columns: test sets):", "", *validation["table"]]
        lines += ["", f"Every score, the sets and the plots: [`{validation['report']}`]({validation['report']})"]
    return "\n".join(lines).rstrip() + "\n"


def write_dataset_report(config: DatasetConfig, records: list[dict], started: float, finished: bool = False) -> dict:
    """Write ``report.json`` and ``report.md`` into the dataset folder; returns the report dict."""
    report = build_dataset_report(config, records, started, finished)
    config.root.mkdir(parents=True, exist_ok=True)
    atomic_write(config.root / "report.json", json.dumps(report, indent=1, default=str))
    atomic_write(config.root / "report.md", markdown(report))
    return report
