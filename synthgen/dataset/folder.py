"""What a published dataset folder holds: its stages (each a folder with a manifest) and its data card's licence."""

from __future__ import annotations

from pathlib import Path

import yaml

from synthgen.dataset.config import STAGES
from synthgen.errors import ManifestError

DEFAULT_LICENSE = "other"


def stage_manifests(root: Path) -> dict[str, Path]:
    """The manifest of every stage folder of dataset ``root`` (``<stage>/manifest.parquet``), in data-flow order;
    none is a ManifestError."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: dataset folder not found")
    found = {p.parent.name: p for p in sorted(root.glob("*/manifest.parquet"))}
    if not found:
        raise ManifestError(
            f"{root}: no stage manifests (<stage>/manifest.parquet): not a dataset folder of synthgen dataset"
        )
    order = [s for s in STAGES if s in found] + sorted(set(found) - set(STAGES))
    return {stage: found[stage] for stage in order}


def card_license(readme: Path) -> dict:
    """The licence fields (``license``, ``license_name``, ``license_link``) of an existing card's YAML header."""
    if not readme.is_file():
        return {}
    text = readme.read_text()
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        return {}
    try:
        header = yaml.safe_load(text[4 : text.index("\n---\n", 4)]) or {}
    except yaml.YAMLError:
        return {}
    return {k: header[k] for k in ("license", "license_name", "license_link") if k in header}


def dataset_license(root: Path, given: str | None = None) -> str:
    """The licence to publish dataset folder ``root`` under: ``given``, else its data card's, else ``other``."""
    return given or card_license(Path(root) / "README.md").get("license") or DEFAULT_LICENSE
