"""The sections of the data card (``synthgen.dataset.card``) that are prose around the dataset's records: the
validation and filter tables, how to load the data with each of the four loaders, and the known limits."""

from __future__ import annotations


def _num(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def validation_section(filtered: dict | None, validation: dict | None) -> list[str]:
    """The filter's kept counts and the validation stage's mIoU table (train on each set, test on real or held-out
    tiles), from their ``stage.json`` records; a line saying there is none otherwise."""
    lines = ["## Validation", ""]
    if validation is None:
        lines += ["This folder has no validation stage: no model was trained on these tiles here.", ""]
    else:
        lines.append(
            f"- {validation['note']}; profile `{validation['profile']}`, {validation['steps']} steps per model."
        )
        if validation.get("converged_runs", 0) < validation["runs"]:
            lines.append(
                f"- {validation['runs'] - validation.get('converged_runs', 0)} of {validation['runs']} models did not "
                "reach a plateau of their validation loss: the numbers show that the data trains a model, they do "
                "not rank the sets."
            )
        lines += [f"- {m['set']}: {m['reason']}" for m in validation.get("missing", [])]
        if validation.get("table"):
            lines += ["", "mIoU (rows: training set × architecture; columns: test sets):", "", *validation["table"]]
        lines += ["", f"Every score: [`{validation['report']}`]({validation['report']}).", ""]
    if filtered:
        lines += [
            "### Label-consistency filter",
            "",
            f"Per-tile mIoU between a tile's label and what {filtered['model']} segments in its image; kept: score "
            f">= {filtered['threshold']}.",
            "",
            "| set | tiles | kept | score p10 / p50 / p90 | kept tiles |",
            "|---|---|---|---|---|",
        ]
        for stage, s in filtered["sets"].items():
            quantiles = " / ".join(_num(q) for q in s["score_p10_p50_p90"])
            lines.append(f"| {stage} | {s['tiles']} | {s['kept']} | {quantiles} | `{s['filtered']}` |")
        lines.append("")
    return lines


def loaders_section(name: str, stages: dict, header: dict) -> list[str]:
    """How to load the tiles: synthgen's TileDataset, a webdataset pipeline, Hugging Face datasets by folder and
    torchgeo on extracted tiles (docs/publish.md explains each)."""
    default = next(c["config_name"] for c in header["configs"] if c.get("default"))
    return [
        "## Loading",
        "",
        "```python",
        f'DATASET = "path/to/{name}"  # this folder',
        "",
        "# plain PyTorch: sample dicts (rgb, label, height, crs, transform, prompt, meta); split= where the manifest "
        "has splits",
        "from synthgen.data import TileDataset",
        f'tiles = TileDataset(f"{{DATASET}}/{default}/manifest.parquet")',
        "",
        "# webdataset pipeline: the same sample dicts, streamed from the shards",
        "import glob, webdataset as wds",
        "from synthgen.data import wds_decode, wds_sample",
        f'pipe = wds.WebDataset(sorted(glob.glob(f"{{DATASET}}/{default}/shards/*.tar")), shardshuffle=False)'
        ".decode(wds_decode).map(wds_sample)",
        "",
        "# Hugging Face datasets, by folder: one config per stage (columns rgb.tif, label.tif, height.tif as images, "
        "json)",
        "from datasets import load_dataset",
        f'hf = load_dataset(DATASET, "{default}", split="train")',
        "",
        "# torchgeo, on loose tiles (synthgen stac DATASET --extract writes <stage>/tiles/)",
        "from synthgen.data import torchgeo_dataset",
        f'loose = f"{{DATASET}}/{default}/tiles"',
        'geo = torchgeo_dataset(loose, "rgb") & torchgeo_dataset(loose, "label")  # samples: image, mask, crs, bounds',
        "```",
        "",
        f"Stages (configs): {', '.join(f'`{s}`' for s in stages)}. The STAC catalog (`catalog.json`) opens in any STAC "
        "client; its assets point into the shards with GDAL's `/vsitar/` paths, or at the loose files after "
        "`synthgen stac --extract` (each label tile then has a QGIS style `.qml` and GDAL category names "
        "`.aux.xml` beside it).",
        "",
    ]


def known_limits(stages: dict, validation: dict | None) -> list[str]:
    """What a user of the tiles should know before training on them, from the stages' summaries and records."""
    lines = ["## Known limits", ""]
    summaries = {s: i["summary"] for s, i in stages.items()}
    if any(s["synthetic_georef"] for s in summaries.values()):
        lines.append(
            "- The georeference is synthetic: generated tiles sit on a documented grid in EPSG:3857 near Null "
            "Island (open ocean), one tile after another; their coordinates are no place on Earth (STAC items say "
            "so in `synthgen:georef`)."
        )
    if all(set(s["splits"]) == {""} for s in summaries.values()):
        lines.append(
            "- Generated tiles have no train/val split; an RGB tile and its label map share a parent key, so split "
            "by `parent_keys` to keep a layout out of both sides."
        )
    embedded = sorted({s for s, i in stages.items() for m in i["models"] if m["model_id"].startswith("synthgen/")})
    if embedded:
        lines.append(
            f"- Stages {', '.join(embedded)} used synthgen's embedded default models: small models trained on CPU on "
            "one real area; their tiles are coarser and less varied than a full-size model's."
        )
    if validation is None or validation.get("converged_runs", 0) < validation.get("runs", 0):
        lines.append("- The worth of these tiles for training is not established here (see Validation).")
    if validation is not None and validation.get("tested_on") != "real":
        lines.append("- Validation tested on held-out generated tiles, not on real imagery.")
    for stage, s in summaries.items():
        if s["quality_flags"]:
            flags = ", ".join(f"{k} {v}" for k, v in s["quality_flags"].items())
            lines.append(f"- {stage}: tiles with quality flags ({flags}); the manifest's `quality_flags` lists them.")
    lines.append(
        "- Hugging Face `datasets` decodes the rasters as PIL images, without their georeference; synthgen's "
        "loaders and torchgeo keep the CRS and transform."
    )
    return lines
