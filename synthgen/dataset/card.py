"""The data card of a dataset folder: ``README.md`` in the Hugging Face dataset-card format (``synthgen card``, and
the last step of ``synthgen dataset``).

The YAML header has the licence, task categories, size category, tags and one ``configs`` entry per stage whose
``data_files`` are the stage's tar shards, so ``datasets.load_dataset(folder, stage)`` loads it (its webdataset
builder reads the shards; the stage with the most rgb + label tiles is the default). The body says what the folder
holds, what made it (generators, models, weights and config hashes, the configs), the class shares, the contact
sheets, the validation and filter tables of the dataset's report, how to load it, and its known limits.
Regenerating keeps the licence of an existing card unless one is given.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from synthgen.dataset.card_text import known_limits, loaders_section, validation_section
from synthgen.dataset.folder import DEFAULT_LICENSE, card_license, stage_manifests
from synthgen.evaluation.summary import summarize_manifest
from synthgen.io.atomic import atomic_write
from synthgen.io.manifest import read_manifest

SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def size_category(tiles: int) -> str:
    """The Hugging Face size category of a dataset of ``tiles`` samples."""
    return next((name for limit, name in SIZE_CATEGORIES if tiles < limit), "1M<n<10M")


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _stages(root: Path) -> dict[str, dict]:
    """Per stage: its manifest summary, the generators and models of its rows and its preview sheet."""
    out = {}
    for stage, manifest in stage_manifests(root).items():
        df = read_manifest(manifest)
        models = df.groupby(["generator", "model_id", "weights_hash", "config_hash"], sort=True).size()
        preview = root / "previews" / f"{stage}.png"
        out[stage] = {
            "manifest": manifest.relative_to(root).as_posix(),
            "summary": summarize_manifest(manifest),
            "models": [dict(zip(models.index.names, k, strict=True), tiles=int(n)) for k, n in models.items()],
            "versions": sorted(set(df["generator_version"])),
            "preview": preview.relative_to(root).as_posix() if preview.is_file() else None,
        }
    return out


def _header(root: Path, stages: dict, license_fields: dict) -> dict:
    paired = {s: i["summary"]["rasters"] for s, i in stages.items()}
    default = max(stages, key=lambda s: (min(paired[s]["rgb"], paired[s]["label"]), paired[s]["label"]))
    tasks = ["image-segmentation"]
    if any(r["height"] for r in paired.values()):
        tasks.append("depth-estimation")
    if any(r["rgb"] and not r["label"] for r in paired.values()):
        tasks.append("text-to-image")
    configs = [
        {
            "config_name": stage,
            "data_files": [{"split": "train", "path": f"{stage}/shards/*.tar"}],
            **({"default": True} if stage == default else {}),
        }
        for stage in stages
    ]
    return {
        **license_fields,
        "pretty_name": f"synthgen dataset {root.resolve().name}",
        "task_categories": tasks,
        "task_ids": ["semantic-segmentation"],
        "size_categories": [size_category(sum(i["summary"]["tiles"] for i in stages.values()))],
        "tags": ["remote-sensing", "earth-observation", "synthetic", "land-cover", "geospatial", "webdataset"],
        "configs": configs,
    }


def _contents(stages: dict) -> list[str]:
    lines = ["| stage | tiles | rasters | shards | size | manifest |", "|---|---|---|---|---|---|"]
    for stage, info in stages.items():
        s = info["summary"]
        rasters = ", ".join(k for k, n in s["rasters"].items() if n)
        lines.append(
            f"| {stage} | {s['tiles']} | {rasters} | {s['shards']} (`{stage}/shards/*.tar`) | "
            f"{s['shard_bytes'] / 2**20:.1f} MiB | `{info['manifest']}` |"
        )
    return lines


def _short(digest: str) -> str:
    return f"`{digest[:16]}…`" if digest else "–"


def _provenance(root: Path, stages: dict) -> list[str]:
    lines = [
        "| stage | generator | model | weights sha256 | config sha256 | tiles |",
        "|---|---|---|---|---|---|",
    ]
    for stage, info in stages.items():
        for m in info["models"]:
            lines.append(
                f"| {stage} | {m['generator']} {', '.join(info['versions'])} | `{m['model_id'] or '(none)'}` | "
                f"{_short(m['weights_hash'])} | {_short(m['config_hash'])} | {m['tiles']} |"
            )
    configs = [f"`{p.relative_to(root).as_posix()}`" for p in sorted(root.glob("*/shards/config.yaml"))]
    lines += [
        "",
        "Hashes are shortened here; every tile's full hashes, seed and parent tiles are columns of its stage's "
        "manifest and properties of its STAC item.",
    ]
    if (root / "dataset.yaml").is_file():
        lines.append(
            "The resolved dataset config: `dataset.yaml`"
            + (f"; each stage's command config: {', '.join(configs)}." if configs else ".")
        )
    return lines


def _class_shares(stages: dict) -> list[str]:
    labelled = {s: i["summary"]["classes"] for s, i in stages.items() if i["summary"]["classes"]}
    if not labelled:
        return ["No stage has label rasters."]
    names: list[str] = []
    for classes in labelled.values():
        for info in classes.values():
            names += [n for n in info["fractions"] if n not in names]
    header = "| class | " + " | ".join(labelled) + " |"
    lines = [header, "|---|" + "---|" * len(labelled)]
    for name in names:
        cells = []
        for classes in labelled.values():
            frac = next((info["fractions"][name] for info in classes.values() if name in info["fractions"]), None)
            cells.append("–" if frac is None else f"{100 * frac:.1f} %")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return ["Share of labelled pixels per class (nodata excluded):", "", *lines]


def card_markdown(root: Path, license: str | None = None) -> str:
    """The data card of dataset folder ``root``: YAML header and markdown body."""
    root = Path(root)
    stages = _stages(root)
    fields = {"license": license} if license else card_license(root / "README.md") or {"license": DEFAULT_LICENSE}
    if fields.get("license") == "other":
        fields.setdefault("license_name", "unspecified")
    header = _header(root, stages, fields)
    filtered, validation = _read_record(root / "filter" / "stage.json"), _read_record(root / "validate" / "stage.json")
    name = root.resolve().name
    body = [
        f"# {header['pretty_name']}",
        "",
        "Synthetic remote-sensing tiles made by synthgen (`synthgen dataset`): land-cover "
        "label maps with height (nDSM) maps and RGB images rendered from them. Each tile is up to three "
        "cloud-optimized GeoTIFFs (`rgb` uint8 × 3, `label` uint8 class codes with 0 = nodata, `height` float32 "
        "metres with NaN = nodata) in WebDataset tar shards (`<key>.rgb.tif`, `<key>.label.tif`, "
        "`<key>.height.tif`, `<key>.json`), listed one row per tile in a parquet manifest per stage. "
        + ("A STAC catalog of every tile is `catalog.json`. " if (root / "catalog.json").is_file() else "")
        + f"Licence: `{fields['license']}`"
        + (
            " (not set by the dataset's maker yet: `synthgen card DIR --license SPDX-ID`)."
            if fields["license"] == "other"
            else "."
        ),
        "",
        "## Contents",
        "",
        *_contents(stages),
        "",
        "## How it was made",
        "",
        *_provenance(root, stages),
        "",
        "## Class shares",
        "",
        *_class_shares(stages),
        "",
        "## Contact sheets",
        "",
    ]
    for stage, info in stages.items():
        body += [f"### {stage}", "", f"![{stage}]({info['preview']})" if info["preview"] else "(no preview sheet)", ""]
    body += [
        *validation_section(filtered, validation),
        *loaders_section(name, stages, header),
        *known_limits(stages, validation),
    ]
    text = "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body)
    return text.rstrip() + "\n"


def write_card(root: Path, license: str | None = None) -> Path:
    """Write (or rewrite) ``README.md``, the data card of dataset folder ``root``; returns its path."""
    return atomic_write(Path(root) / "README.md", card_markdown(root, license))
