"""The published study, reproducible (``synthgen validate --paper``, run by ``make validate``).

Five training sets built from the project's own defaults and the real data: real RGB + real labels; ControlNet RGB
and SPADE RGB on real labels; ControlNet RGB and SPADE RGB on synthetic labels (``synthgen landcover``, one set of
label maps for both); with ``paper_filter``, each generated-label set's tiles kept by the label-consistency filter
and a random subset of the same size. Each is
split into a training part and a held-out part: the real one by the manifest's own split, the generated ones by
generating from the real train / val label tiles separately (synthetic labels: the last ``paper_val_tiles`` tiles
generated are held out). Every set is a training row and a test column, so the table is the published cross-test;
the real held-out split is the score that matters.

Generation runs the ``synthgen rgb`` and ``synthgen landcover`` commands as subprocesses with their embedded
default weights, into ``<out>/paper_data/generators-<hash of those weights>/`` (``generators.json`` lists them). A
set whose generator is not there (no command, no weights, or the command fails) is reported as missing with the
reason, and the study runs with what exists.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthgen.engine.weights import weights_hash
from synthgen.io.atomic import atomic_write
from synthgen.io.manifest import read_manifest, write_rebased
from synthgen.pipelines.registry import PIPELINES, WEIGHTS_DIR, is_trained
from synthgen.validation.label_filter import DEFAULT_FILTER_MODEL, MAKE_TARGET, filter_manifest

RGB_METHODS = {"controlnet_real": "controlnet", "spade_real": "spade"}
GENERATORS = ("landcover", "rgb-controlnet", "rgb-spade")
SYNTHETIC_SETS = {"controlnet_synthetic": "controlnet", "spade_synthetic": "spade"}


@dataclass
class PaperSets:
    """Train and test set specs for ``ValidateConfig`` and the sets that could not be built, with reasons."""

    train: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)


def write_subset(manifest: Path, rows: list[int], path: Path, split: str | None = None) -> Path:
    """Rows (positions) of ``manifest`` as a new manifest at ``path``: shard paths re-based on its folder, ``split``
    set when given."""
    records = pq.read_table(manifest).take(pa.array(rows, pa.int64())).to_pylist()
    if split is not None:
        records = [{**rec, "split": split} for rec in records]
    return write_rebased(manifest, records, path)


def generators_fingerprint() -> tuple[str, dict[str, str]]:
    """Which embedded weights the generated sets come from: a short hash and ``{folder name: weights hash}`` of the
    generators and the label-filter model present. The sets live in a folder named by the hash, so that new weights
    give new sets (and so new downstream models) instead of old tiles reported as the new generators'."""
    folders = [WEIGHTS_DIR / PIPELINES[name].weights for name in GENERATORS] + [DEFAULT_FILTER_MODEL]
    hashes = {folder.name: weights_hash(folder) for folder in folders if folder.is_dir()}
    digest = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:12]
    return digest, hashes


def _run(args: list[str], log) -> tuple[bool, str]:
    """Run ``synthgen <args>``; (ok, last line of its error output)."""
    log(f"$ synthgen {' '.join(args)}")
    proc = subprocess.run([sys.executable, "-m", "synthgen", *args], capture_output=True, text=True)
    lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
    return proc.returncode == 0, (lines[-1] if lines else f"exit code {proc.returncode}")


def _has_weights(pipeline: str) -> bool:
    return is_trained(WEIGHTS_DIR / PIPELINES[pipeline].weights)


def _no_weights(pipeline: str) -> str:
    spec = PIPELINES[pipeline]
    return f"no embedded weights in {WEIGHTS_DIR / spec.weights} yet (they come from `make {spec.make_target}`)"


def rgb_command_available(log=print) -> tuple[bool, str]:
    """Whether ``synthgen rgb`` exists in this checkout, and why not."""
    ok, line = _run(["rgb", "--help"], log)
    return ok, "" if ok else f"`synthgen rgb` is not available in this checkout ({line})"


def _generate_rgb(method: str, cond: Path, name: str, work: Path, log) -> tuple[Path | None, str]:
    manifest = work / f"{name}.parquet"
    if manifest.is_file():
        return manifest, ""
    args = ["rgb", "--cond", str(cond), "--method", method, "--name", name]
    args += ["--out", str(work / "data" / name), "--manifest", str(manifest)]
    ok, line = _run(args, log)
    if not ok or not manifest.is_file():
        return None, f"`synthgen {' '.join(args[:5])}` failed: {line}"
    return manifest, ""


def _synthetic_labels(n_train: int, n_val: int, size: int, work: Path, log) -> tuple[dict[str, Path], str]:
    if not _has_weights("landcover"):
        return {}, _no_weights("landcover")
    manifest = work / "paper_landcover.parquet"
    if not manifest.is_file():
        args = ["landcover", "--n", str(n_train + n_val), "--size", str(size), "--name", "paper_landcover"]
        args += ["--out", str(work / "data" / "paper_landcover"), "--manifest", str(manifest)]
        ok, line = _run(args, log)
        if not ok:
            return {}, f"`synthgen landcover` failed: {line}"
    n = len(read_manifest(manifest))
    parts = {
        "train": write_subset(manifest, list(range(min(n_train, n))), work / "paper_landcover_train.parquet", "train"),
        "val": write_subset(manifest, list(range(min(n_train, n), n)), work / "paper_landcover_val.parquet", "val"),
    }
    return parts, ""


def _filtered_sets(name: str, train: Path, threshold: float, work: Path, log) -> tuple[list[str], str]:
    """Train specs of a generated set's tiles kept by the label-consistency filter (``<name>_filtered``) and of a
    random subset of the same size (``<name>_random``, the control for the smaller set); (specs, why not)."""
    if not (DEFAULT_FILTER_MODEL / "config.json").is_file():
        return [], f"no embedded label-filter model yet (it comes from `make {MAKE_TARGET}`)"
    filtered = work / f"paper_{name}_filtered_train.parquet"
    if not filtered.is_file():
        log(f"filter {train} (threshold {threshold})")
        scored = work / f"paper_{name}_scored_train.parquet"
        filter_manifest(train, DEFAULT_FILTER_MODEL, threshold, filtered, scored)  # the filtered one is written last
    kept = len(read_manifest(filtered))
    if kept == 0:
        return [], f"no tile of {name} scores >= {threshold} under the label filter"
    rows = np.random.default_rng(0).choice(len(read_manifest(train)), size=kept, replace=False)
    control = write_subset(train, sorted(rows.tolist()), work / f"paper_{name}_random_train.parquet")
    return [f"{name}_filtered={filtered}:all", f"{name}_random={control}:all"], ""


def build_paper_sets(
    real: Path,
    work: Path,
    n_train: int | None,
    n_val: int | None,
    size: int = 128,
    log=print,
    filter_threshold: float | None = None,
) -> PaperSets:
    """Specs of the four training sets and their held-out parts (and, with ``filter_threshold``, the filtered and
    size-matched random subsets of the generated-label sets); generate what the checkout can generate."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    sets = PaperSets(train=[f"real={real}:train"], test=[f"real={real}:val"])
    weights = {method: _has_weights(f"rgb-{method}") for method in ("controlnet", "spade")}
    available, reason = rgb_command_available(log) if any(weights.values()) else (False, "")

    def blocker(method: str) -> str:
        """Why a label->RGB method cannot run here ('' when it can)."""
        if not weights[method]:
            return _no_weights(f"rgb-{method}")
        return "" if available else reason

    def generate(name: str, method: str, cond: dict[str, Path]) -> None:
        made = {}
        for part in ("train", "val"):
            made[part], why = _generate_rgb(method, cond[part], f"paper_{name}_{part}", work, log)
            if made[part] is None:
                sets.missing.append({"set": name, "reason": why})
                return
        sets.train.append(f"{name}={made['train']}:all")
        sets.test.append(f"{name}={made['val']}:all")

    cond = {}
    splits = read_manifest(real)["split"].tolist()
    if available:
        for part, n in (("train", n_train), ("val", n_val)):
            rows = [i for i, split in enumerate(splits) if split == part][:n]
            cond[part] = write_subset(real, rows, work / f"cond_real_{part}.parquet")
    for name, method in RGB_METHODS.items():
        if why := blocker(method):
            sets.missing.append({"set": name, "reason": why})
        else:
            generate(name, method, cond)
    methods = [m for m in SYNTHETIC_SETS.values() if not blocker(m)]
    labels, why = {}, blocker("controlnet") or blocker("spade")
    if methods:
        counts = [n or splits.count(part) for part, n in (("train", n_train), ("val", n_val))]  # as many as real
        labels, why = _synthetic_labels(*counts, size, work, log)
    for name, method in SYNTHETIC_SETS.items():
        if labels and method in methods:
            generate(name, method, labels)
        else:
            sets.missing.append({"set": name, "reason": blocker(method) or why})
    if filter_threshold is not None:
        for name in SYNTHETIC_SETS:
            made = work / f"paper_{name}_train.parquet"
            if not any(spec.startswith(f"{name}=") for spec in sets.train):
                continue
            specs, why = _filtered_sets(name, made, filter_threshold, work, log)
            sets.train += specs
            if why:
                sets.missing += [{"set": f"{name}_{kind}", "reason": why} for kind in ("filtered", "random")]
    return sets


def run_paper(config, progress=None, log=print) -> dict:
    """Build the study's sets (what exists), then cross-test them with ``run_validate``; missing sets are reported."""
    from synthgen.validation.crosstest import run_validate

    real = Path(config.paper_real)
    read_manifest(real)
    digest, hashes = generators_fingerprint()
    work = config.out_dir / "paper_data" / f"generators-{digest}"
    work.mkdir(parents=True, exist_ok=True)
    atomic_write(work / "generators.json", json.dumps(hashes, indent=1, sort_keys=True))
    sets = build_paper_sets(
        real,
        work,
        config.paper_train_tiles,
        config.paper_val_tiles,
        config.crop,
        log,
        config.paper_filter,
    )
    config.train = sets.train + list(config.train)
    config.test = sets.test + list(config.test)
    names = [s.split("=")[0] for s in sets.train]
    config.mix_sets = [
        name for name in config.mix_sets if name in names
    ]  # a set that could not be built mixes in nothing
    note = (
        f"the published study (--paper): training sets built here: {', '.join(names)}; "
        f"{len(sets.missing)} of {1 + len(RGB_METHODS) + len(SYNTHETIC_SETS)} missing (see Missing)"
    )
    return run_validate(config, progress, missing=sets.missing, study_note=note)
