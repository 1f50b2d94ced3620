"""Crash benchmark: a small `synthgen landcover` job killed with SIGKILL at 20 seeded random moments, resumed each
time, then checked against an uninterrupted run of the same job; writes JSON.

What it reports: kills, resumes, tiles (and the expected count), duplicate keys, member hash mismatches (against the
manifest), whether `synthgen verify` passed, whether every file (shards, records, config, manifest) is byte-identical
to the uninterrupted run's, any corrupt finished shard or broken manifest seen right after a kill, the moment and
progress of every kill, and wall times. The model is a tiny land-cover pipeline built here from configs after
``torch.manual_seed(0)`` (random weights: the engine is under test, not the model), or ``--model DIR``.

    python scripts/bench_crash.py --out bench/crash.json [--kills 20] [--n 200] [--seed 0] [--model DIR] [--writers N]

With ``--writers N`` every run encodes in N writer processes (tiles handed over through shared memory), and the
report also counts writer processes of killed runs still running afterwards.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before torch: the runs are forks of this process, compared byte for byte

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.crash_harness import kill_and_resume, landcover_argv, left_behind, preload, writer_processes  # noqa: E402


def build_tiny_model(folder: Path) -> str:
    """Save the tiny land-cover pipeline of the tests (random weights after torch.manual_seed(0)) into ``folder``."""
    from tests.test_landcover import _tiny_pipeline

    _tiny_pipeline().save_pretrained(folder)
    return str(folder)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and every run it waited for (wall time depends on the load)."""
    own, runs = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + runs.ru_utime + runs.ru_stime


def main() -> None:
    """Parse the arguments, run the kills, write the JSON and print its summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "crash.json")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--tiles-per-shard", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--writers", type=int, default=0, help="Writer processes (shared-memory hand-over) per run.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill delays.")
    parser.add_argument("--max-delay-fraction", type=float, default=0.12,
                        help="Kill delay: start-up + uniform [0, this] x the rest of the clean run.")  # fmt: skip
    parser.add_argument("--model", type=str, default=None, help="Land-cover pipeline folder (default: tiny, built).")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the runs (default: a temporary one).")
    args = parser.parse_args()

    start, load = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    preload()
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = args.model or build_tiny_model(work / "model")
        job = functools.partial(landcover_argv, model, args.n, args.tiles_per_shard, size=args.size, steps=args.steps)

        def argv_for(folder: Path) -> list[str]:
            return [*job(folder), *(["--writers", str(args.writers)] if args.writers else [])]

        before = writer_processes()
        report = kill_and_resume(argv_for, work, args.n, args.kills, args.seed, args.max_delay_fraction)
        report["writer_processes_left_behind"] = len(left_behind(before))
    result = {
        "job": {
            "command": "synthgen " + " ".join(argv_for(Path("<out>"))).replace(model, "<model>"),
            "model": "tiny land-cover pipeline (random weights, tests/test_landcover.py)" if not args.model else model,
            "tiles": args.n,
            "tiles_per_shard": args.tiles_per_shard,
        },
        "kill_seed": args.seed,
        "max_delay_fraction": args.max_delay_fraction,
        **{k: v for k, v in report.items() if k != "events"},
        "wall_seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(cpu_seconds(), 2),
        "events": report["events"],
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": load,
        },
        "command": "make bench-crash",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    keys = ("kills", "resumes", "tiles", "duplicate_keys", "hash_mismatches", "identical_to_clean",
            "writer_processes_left_behind", "wall_seconds", "cpu_seconds")  # fmt: skip
    print(json.dumps({k: result[k] for k in keys}))
    print(f"wrote {args.out}")
    ok = (
        result["kills"] == args.kills
        and result["tiles"] == args.n
        and not result["duplicate_keys"]
        and not result["hash_mismatches"]
        and result["identical_to_clean"]
        and result["verify_exit_code"] == 0
        and not result["after_kill_violations"]
        and not result["writer_processes_left_behind"]
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
