"""Model weight files: safetensors only.

Pickle-based weights (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``) can run any code while they are unpickled,
so a model folder holding such a file where no ``.safetensors`` file lies beside it is refused before any library
opens it (diffusers and transformers would fall back to unpickling it). A folder with both loads the safetensors.
"""

from __future__ import annotations

from pathlib import Path

from synthgen.errors import ConfigError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def pickle_weights(folder: str | Path) -> list[Path]:
    """The pickle weight files under ``folder`` that have no safetensors file beside them (sorted; [] for a path
    that is not a folder, e.g. a hub id)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in PICKLE_SUFFIXES and path.is_file() and not any(path.parent.glob("*.safetensors")):
            found.append(path)
    return found


def refuse_pickle_weights(folder: str | Path) -> None:
    """Raise a one-line ConfigError if ``folder`` would load weights by unpickling (see ``pickle_weights``)."""
    found = pickle_weights(folder)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(
            f"{found[0]}{more}: pickle weights are refused (unpickling can run code); "
            "save the model as safetensors (save_pretrained with safe_serialization=True)"
        )
