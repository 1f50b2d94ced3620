"""Done-markers of ``synthgen dataset`` stages: a stage is complete when its ``stage.json`` (written last) holds the
fingerprint of what the stage would run now and its output is there; otherwise it runs again, and its command
resumes from the shards already written.

The fingerprint covers the resolved command config (but not the keys that do not change a tile: batch size,
writer processes, compile, ranks), the model (file names, sizes and times of its safetensors, or its hub id) and
the sha256 of every input manifest, so a changed upstream stage or retrained weights make a stage run again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from synthgen.config import config_to_dict
from synthgen.engine.options import RUNTIME_KEYS
from synthgen.io.atomic import atomic_write
from synthgen.io.shards import is_done, read_record

NOT_FINGERPRINTED = ("batch_size", *RUNTIME_KEYS)


def model_identity(model: str | Path) -> list | str:
    """A cheap identity of a model: (file, size, mtime) of each safetensors file of a folder, or the hub id."""
    folder = Path(model)
    if not folder.is_dir():
        return str(model)
    files = sorted(folder.rglob("*.safetensors"))
    return [(f.relative_to(folder).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes ('' when it does not exist)."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def fingerprint(config, models: list[str | Path], inputs: list[Path], extra: dict | None = None) -> str:
    """sha256 of what a stage's output depends on (see the module docstring)."""
    data = {
        "config": {k: v for k, v in config_to_dict(config).items() if k not in NOT_FINGERPRINTED},
        "models": [model_identity(m) for m in models],
        "inputs": {str(p): file_sha256(p) for p in inputs},
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def read_state(path: Path) -> dict | None:
    """A stage's ``stage.json``, or None when it is missing or unreadable (the stage then runs)."""
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


def write_state(path: Path, state: dict) -> None:
    """Write ``stage.json`` through a temporary file: the stage's done-marker."""
    atomic_write(path, json.dumps(state, indent=1, default=str))


def manifest_rows(path: Path) -> int | None:
    """Rows of a parquet manifest from its footer, or None when it is missing or unreadable."""
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, ValueError):
        return None


def is_complete(state: dict | None, fp: str, manifest: Path) -> bool:
    """True when a stage's state matches ``fp`` and its manifest holds the tiles the state counts."""
    return bool(state) and state.get("fingerprint") == fp and manifest_rows(manifest) == state.get("tiles")


def tiles_on_disk(shards: Path) -> int:
    """Tiles in the finished shards of a folder (what a resumed stage does not make again)."""
    if not Path(shards).is_dir():
        return 0
    return sum(len(read_record(p)["rows"]) for p in sorted(Path(shards).glob("*.tar")) if is_done(p))
