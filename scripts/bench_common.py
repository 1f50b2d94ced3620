"""What the bench scripts share: the machine, the JSON report, peak RSS, timing of model forwards, runs in child
processes and timing on CUDA. torch is imported only where it is used, so a script's worker processes (which
import the script again) start light.

    from bench_common import machine_info, write_report, timed_forwards, ...
(the scripts put ``scripts/`` on ``sys.path`` by running from it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def command_line() -> str:
    """The command this script was started with (interpreter name and arguments), for the report."""
    return " ".join([Path(sys.executable).name, *sys.argv])


def machine_info() -> dict:
    """CPU count, torch threads, CUDA device name (None without CUDA), platform, torch and Python versions."""
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_report(path: Path | str, report: dict) -> Path:
    """Write ``report`` as indented JSON to ``path`` atomically (its folder created; numpy scalars as floats);
    returns the path."""
    from synthgen.io.atomic import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, json.dumps(report, indent=1, default=float) + "\n")


def add_real_split_arguments(parser: argparse.ArgumentParser, default_pipeline: Path) -> None:
    """``--out`` (the JSON), ``--pipeline`` (the model folder measured), ``--real`` and ``--split`` (the real tiles:
    the Dubai val split by default) for the scripts that measure a model against real tiles."""
    repo = Path(__file__).resolve().parents[1]
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pipeline", type=Path, default=default_pipeline)
    parser.add_argument("--real", type=Path, default=repo / "manifests" / "dubai128.parquet")
    parser.add_argument("--split", default="val")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _resolve(target: str) -> tuple[type, str]:
    """``'module:Class.method'`` -> (class, method name)."""
    module, _, attribute = target.partition(":")
    cls_name, _, method = attribute.rpartition(".")
    return getattr(importlib.import_module(module), cls_name), method


def timed_forwards(*targets: str | tuple[type, str], cuda_sync: bool = False) -> dict:
    """Wrap the given model methods (``'module:Class.method'`` or (class, name)) so their wall time is summed in
    the returned dict's ``seconds``; a call nested in another wrapped call (decode -> forward) counts once.
    ``cuda_sync``: with CUDA, wait for the GPU at the end of each outermost call, so its time is the forward's."""
    import torch

    sync = cuda_sync and torch.cuda.is_available()
    spent = {"seconds": 0.0, "depth": 0}

    def wrap(cls: type, name: str) -> None:
        original = getattr(cls, name)

        def timed(self, *args, **kwargs):
            spent["depth"] += 1
            start = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                spent["depth"] -= 1
                if not spent["depth"]:
                    if sync:
                        torch.cuda.synchronize()
                    spent["seconds"] += time.perf_counter() - start

        setattr(cls, name, timed)

    for target in targets:
        wrap(*(_resolve(target) if isinstance(target, str) else target))
    return spent


def rates(n: int, wall_s: float, forward_s: float) -> dict:
    """Tiles per second and the share of the wall time spent outside model forwards."""
    return {"tiles_per_s": n / wall_s, "share_outside_forwards": 1 - forward_s / wall_s}


def start_json_child(command: list[str], env: dict | None = None) -> subprocess.Popen:
    """Start a child process that prints a JSON object as its last line of stdout (its output goes to temporary
    files, so children run side by side never block on a full pipe)."""
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
    proc.output_files = (out, err)  # type: ignore[attr-defined]
    return proc


def json_child_result(proc: subprocess.Popen, what: str) -> dict:
    """Wait for a child of ``start_json_child`` and return its JSON; a failed child ends this script with one line
    naming ``what`` and the child's last error line."""
    code = proc.wait()
    out, err = proc.output_files  # type: ignore[attr-defined]
    with out, err:
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code:
        last = (stderr.strip().splitlines() or [f"exit code {code}"])[-1]
        sys.exit(f"error: {what} failed: {last}")
    return json.loads(stdout.strip().splitlines()[-1])


def run_json_child(command: list[str], what: str, env: dict | None = None) -> dict:
    """Run a child process that prints a JSON object as its last line of stdout; return that object."""
    return json_child_result(start_json_child(command, env), what)


def add_gpu_arguments(parser: argparse.ArgumentParser, steps: int, batch: int) -> None:
    """The flags of a GPU part: steps, batch, repeats, peak TFLOP/s, no compile, smoke run on CPU."""
    parser.add_argument("--gpu-steps", type=int, default=steps)
    parser.add_argument("--gpu-batch", type=int, default=batch)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--peak", type=float, default=790.0, help="peak dense bf16 TFLOP/s of the GPU")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--smoke-gpu-path-on-cpu", action="store_true", help="run the GPU code path tiny, on CPU")


def gpu_section(run: Callable[[bool], dict], smoke_on_cpu: bool = False) -> dict:
    """``run(tiny=False)`` with CUDA; without it ``run(tiny=True)`` (a smoke run of the GPU code path on CPU) when
    ``smoke_on_cpu``, else a note that the GPU part was skipped."""
    import torch

    if torch.cuda.is_available() or smoke_on_cpu:
        return run(not torch.cuda.is_available())
    return {"skipped": "CUDA is not available on this machine"}


def synced_seconds(fn: Callable[[], object], device: str) -> float:
    """Wall seconds of ``fn()``, with CUDA synchronised before and after on a CUDA device."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start
