"""The weights hash of a model folder: what a run's tiles were made with, so a resume never mixes two models.

It covers every file that defines the model, not only the weights: a model is its ``*.safetensors`` and its
configs too (``model_index.json``, each component's ``config.json``, the scheduler's, the height prior's and the
climate encoders' JSON, tokenizer files), and editing any of them changes the tiles. Left out are files that do not
change a tile: hidden files and folders (``.cache``, ``.huggingface``, ``.git``), ``__pycache__``, training previews
and logs, pictures and notes (``NOT_MODEL_SUFFIXES``), and the temporary and lock files of a write in progress.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from synthgen.io.shards import sha256_file

NOT_MODEL_FOLDERS = ("__pycache__", "previews", "logs")
NOT_MODEL_SUFFIXES = (".md", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".log", ".tmp", ".lock")


def model_files(folder: Path) -> list[Path]:
    """The files that define the model in ``folder`` (see the module docstring), sorted by relative name."""
    folder = Path(folder)
    found = []
    for path in folder.rglob("*"):
        parts = path.relative_to(folder).parts
        if any(part.startswith(".") or part in NOT_MODEL_FOLDERS for part in parts):
            continue
        if path.suffix.lower() in NOT_MODEL_SUFFIXES or not path.is_file():
            continue
        found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def weights_hash(folder: Path) -> str:
    """sha256 over the relative names and sha256s of every file that defines the model in ``folder``."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in model_files(folder):
        h.update(f"{path.relative_to(folder).as_posix()}:{sha256_file(path)}\n".encode())
    return h.hexdigest()
