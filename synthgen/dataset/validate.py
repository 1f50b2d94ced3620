"""The validate stage of ``synthgen dataset``: train on the generated RGB sets, test on real tiles when the real
manifest exists, else on a held-out part of the generated label maps; ``synthgen validate`` does the work.

With the filter stage, each filtered set (``<stage>-filtered``) is trained on beside its full set. With the real
manifest (``validate.real``): each generated set (all its tiles) and, with ``real_baseline``, the real
train split are trained on; the real val split is the test set. Without it, the real test is reported as skipped
with the reason, and each generated set is split by parent label map (``dataset_manifests.split_by_parent``): the
same ``holdout`` share of label maps is held out of every set, and each set's held-out part is a test set.
"""

from __future__ import annotations

import time
from pathlib import Path

from synthgen.config import config_to_dict
from synthgen.dataset.config import DatasetConfig, stage_paths
from synthgen.dataset.filter import filtered_sets
from synthgen.dataset.manifests import heldout_parents, split_by_parent
from synthgen.dataset.stages import validate_config, validate_settings
from synthgen.dataset.state import fingerprint, read_state, write_state
from synthgen.errors import ConfigError


def plan_sets(config: DatasetConfig) -> tuple[list[str], list[str], list[dict], str, str]:
    """(train specs, test specs, missing sets with reasons, note, what was tested on: 'real' or 'held-out')."""
    extras, _ = validate_settings(config)
    generated = {s: stage_paths(config, s).manifest for s in extras["sets"]}
    absent = [s for s, m in generated.items() if not m.is_file()]
    if absent:
        raise ConfigError(
            f"stage 'validate': no manifest of stage '{absent[0]}' ({generated[absent[0]]}): add it to 'stages' "
            "or leave it out of validate.sets"
        )
    filtered = filtered_sets(config)
    real = extras["real"]
    if real and Path(real).is_file():
        train = [f"{s}={m}" for s, m in {**generated, **filtered}.items()]
        if extras["real_baseline"]:
            train.append(f"real={real}:train")
        baseline = " and, as the baseline, the real train split" if extras["real_baseline"] else ""
        note = f"trained on the generated sets{baseline}; tested on the real val split of {real}"
        return train, [f"real={real}:val"], [], note, "real"
    why = "validate.real is null" if not real else f"{real} not found (`make ingest-dubai128` makes it)"
    missing = [{"set": "real", "reason": f"skipped the test on real tiles: {why}"}]
    heldout = heldout_parents(generated.values(), extras["holdout"])
    train, test = [], []
    for stage, manifest in {**generated, **filtered}.items():
        split = stage_paths(config, "validate").dir / "sets" / f"{stage}.parquet"
        counts = split_by_parent(manifest, split, heldout)
        if counts["train"]:
            train.append(f"{stage}={split}:train")
        else:
            missing.append({"set": stage, "reason": "every tile of this set is held out: nothing to train on"})
        if stage in filtered:
            continue  # tested on through its full set
        if counts["val"]:
            test.append(f"{stage}-heldout={split}:val")
        else:
            missing.append({"set": f"{stage}-heldout", "reason": "no label map of this set is held out"})
    if not train or not test:
        raise ConfigError(
            "stage 'validate': too few generated tiles to hold some out for testing (make more tiles, change "
            f"validate.holdout {extras['holdout']}, or give validate.real)"
        )
    note = (
        f"no real test set ({why}): tested on the generated held-out part, the label maps whose key ranks in the "
        f"first {extras['holdout']:.0%} by sha256 (never trained on, in any set)"
    )
    return train, test, missing, note, "held-out"


def _set_manifests(specs: list[str]) -> list[Path]:
    paths = []
    for spec in specs:
        manifest = spec.split("=", 1)[1]
        head, colon, tail = manifest.rpartition(":")
        paths.append(Path(head if colon and "/" not in tail and "." not in tail else manifest))
    return sorted(set(paths))


def run_validate_stage(config: DatasetConfig, bars, log) -> dict:
    """Run (or skip) the validate stage; returns its record for the report (also its ``stage.json``)."""
    from synthgen.validation.crosstest import run_validate
    from synthgen.validation.report import crosstest_table

    paths = stage_paths(config, "validate")
    train, test, missing, note, tested_on = plan_sets(config)
    vconfig = validate_config(config, train, test)
    fp = fingerprint(vconfig, [], _set_manifests(train + test), {"missing": missing, "note": note})
    state = read_state(paths.state)
    if state and state.get("fingerprint") == fp and (paths.dir / "report.json").is_file():
        log(f"validate: complete ({state['runs']} models in {state['report']}), skipped")
        return {**state, "status": "skipped"}
    log(f"validate: running ({len(train)} training sets, {len(test)} test sets)")
    progress = bars("validate", None, "step") if bars else None
    start = time.perf_counter()
    try:
        report = run_validate(vconfig, progress, missing=missing, study_note=note)
    finally:
        if progress is not None:
            progress.close()
    wall = time.perf_counter() - start
    sets = report["sets"]
    record = {
        "stage": "validate",
        "status": "done",
        "tiles": sum(s["tiles"] for role in ("train", "test") for s in sets[role].values()),
        "wall_s": round(wall, 2),
        "tiles_per_s": None,
        "runs": len(report["runs"]),
        "profile": validate_settings(config)[0]["profile"],
        "steps": vconfig.steps,
        "arch": vconfig.arch,
        "tested_on": tested_on,
        "note": note,
        "missing": report["missing"],
        "sets": {role: {n: s["tiles"] for n, s in sets[role].items()} for role in ("train", "test")},
        "table": crosstest_table(report) if vconfig.with_seg else [],
        "converged_runs": sum(r["training"].get("convergence", {}).get("plateau") is True for r in report["runs"]),
        "report": (paths.dir / "report.md").relative_to(config.root).as_posix(),
        "config": config_to_dict(vconfig),
        "fingerprint": fp,
    }
    write_state(paths.state, record)
    log(f"validate: {record['runs']} models trained and tested in {wall:.1f} s -> {paths.dir / 'report.md'}")
    return record
