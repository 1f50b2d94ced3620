"""``synthgen evaluate climate``: generated images against real images of the same place and date.

Each generated tile is matched to the real tile (of a real manifest, e.g. ``manifests/naip.parquet``) whose
footprint holds the generated tile's centre and whose date (``meta.date``) is the generated tile's date; with
several, the one whose centre is nearest. The real image is area-resampled to the generated size, then SSIM and
PSNR (torchmetrics, images in [0, 1]) are computed per pair and averaged. Use dates held back from training
(``holdout_dates`` of the training configs) so the real images were never seen.

CLIP score (generated image vs its prompt) and FID (generated vs matched real) need model weights; they are
computed only when given locally (``clip_model``: a CLIP folder; ``inception``: torch-fidelity's Inception
weights file), otherwise the report says they were skipped and why.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthgen.errors import ManifestError
from synthgen.io.manifest import iter_samples, read_manifest


def _centre(crs: str, transform, width: int, height: int) -> tuple[float, float]:
    a, b, c, d, e, f = list(transform)[:6]
    return c + a * width / 2 + b * height / 2, f + d * width / 2 + e * height / 2


def _date(meta: str) -> str:
    return json.loads(meta).get("date", "") if meta else ""


def match_tiles(generated, real) -> list[tuple[str, str | None]]:
    """(generated key, real key or None) for every generated tile: same date, real footprint holding the centre."""
    from rasterio.warp import transform as warp

    real = real.assign(_date=real["meta"].map(_date))
    by_date = {d: g for d, g in real.groupby("_date")}
    pairs = []
    for row in generated.itertuples(index=False):
        date = _date(row.meta)
        candidates = by_date.get(date)
        best = None
        if date and candidates is not None:
            x, y = _centre(row.crs, row.transform, row.width_px, row.height_px)
            best_d = None
            for cand in candidates.itertuples(index=False):
                cx, cy = (x, y) if cand.crs == row.crs else (v[0] for v in warp(row.crs, cand.crs, [x], [y]))
                a, _, c, _, e, f = list(cand.transform)[:6]
                inside = c <= cx <= c + a * cand.width_px and f + e * cand.height_px <= cy <= f
                if inside:
                    rx, ry = _centre(cand.crs, cand.transform, cand.width_px, cand.height_px)
                    dist = (rx - cx) ** 2 + (ry - cy) ** 2
                    if best_d is None or dist < best_d:
                        best, best_d = cand.key, dist
        pairs.append((row.key, best))
    return pairs


def _to_tensor(rgb: np.ndarray, size: int | None = None) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
    if size is not None and (x.shape[-1] != size or x.shape[-2] != size):
        x = F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear")
    return x.clamp(0, 1)


def _clip_score(images: list[torch.Tensor], prompts: list[str], clip_model: str | None) -> dict:
    if not clip_model:
        return {"skipped": "no local CLIP weights given (--clip-model DIR); no model hub is used"}
    if not Path(clip_model).exists():
        return {"skipped": f"{clip_model}: not found (CLIP score needs a local CLIP folder)"}
    try:
        from torchmetrics.multimodal.clip_score import CLIPScore

        metric = CLIPScore(model_name_or_path=str(clip_model))
        for im, text in zip(images, prompts, strict=True):
            metric.update((im * 255).to(torch.uint8), [text])
        return {"value": float(metric.compute()), "model": str(clip_model)}
    except Exception as exc:  # transformers raises many types for a folder that is not a CLIP model
        return {"skipped": f"{clip_model}: cannot compute CLIP score ({str(exc).splitlines()[0][:160]})"}


def _fid(generated: list[torch.Tensor], real: list[torch.Tensor], inception: str | None) -> dict:
    if not inception:
        return {"skipped": "no local Inception weights given (--inception FILE, torch-fidelity's pt_inception)"}
    if not Path(inception).is_file():
        return {"skipped": f"{inception}: not found (FID needs torch-fidelity's Inception weights file)"}
    if len(generated) < 2:
        return {"skipped": f"FID needs at least 2 matched pairs, got {len(generated)}"}
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        metric = FrechetInceptionDistance(normalize=True, feature_extractor_weights_path=str(inception))
        metric.update(torch.cat(real), real=True)
        metric.update(torch.cat(generated), real=False)
        return {"value": float(metric.compute()), "weights": str(inception), "pairs": len(generated)}
    except Exception as exc:  # torch-fidelity raises many types for a wrong weights file
        return {"skipped": f"{inception}: cannot compute FID ({str(exc).splitlines()[0][:160]})"}


def evaluate_climate(
    generated: str | Path,
    real: str | Path,
    clip_model: str | None = None,
    inception: str | None = None,
) -> dict:
    """SSIM / PSNR of generated vs real tiles of the same place and date, and CLIP score / FID when possible."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    gen_df, real_df = read_manifest(Path(generated)), read_manifest(Path(real))
    pairs = match_tiles(gen_df, real_df)
    matched = [(g, r) for g, r in pairs if r is not None]
    if not matched:
        dates = sorted({_date(m) for m in gen_df["meta"]})
        raise ManifestError(
            f"{generated}: no generated tile has a real tile of the same place and date in {real} "
            f"(generated dates: {', '.join(d or '-' for d in dates[:5])})"
        )
    gen_rgb = {s["key"]: s["rgb"] for s in iter_samples(gen_df[gen_df["key"].isin({g for g, _ in matched})])}
    real_sub = real_df[real_df["key"].isin({r for _, r in matched})].reset_index(drop=True)
    real_sub.attrs["manifest_path"] = real_df.attrs["manifest_path"]
    real_rgb = {s["key"]: s["rgb"] for s in iter_samples(real_sub)}
    prompts = dict(zip(gen_df["key"], gen_df["prompt"], strict=True))
    rows, gens, reals = [], [], []
    for g, r in matched:
        x = _to_tensor(gen_rgb[g])
        y = _to_tensor(real_rgb[r], x.shape[-1])
        ssim = float(structural_similarity_index_measure(x, y, data_range=1.0))
        psnr = float(peak_signal_noise_ratio(x, y, data_range=1.0))
        rows.append({"generated": g, "real": r, "ssim": ssim, "psnr": psnr})
        gens.append(x)
        reals.append(y)
    ssims, psnrs = np.array([r["ssim"] for r in rows]), np.array([r["psnr"] for r in rows])
    return {
        "generated": str(generated),
        "real": str(real),
        "pairs": len(rows),
        "unmatched": len(pairs) - len(rows),
        "ssim": {"mean": float(ssims.mean()), "std": float(ssims.std())},
        "psnr": {"mean": float(psnrs.mean()), "std": float(psnrs.std())},
        "clip_score": _clip_score(gens, [prompts[g] for g, _ in matched], clip_model),
        "fid": _fid(gens, reals, inception),
        "per_tile": rows,
    }


def format_climate_report(report: dict) -> str:
    """The report as a few lines of text."""
    lines = [
        f"generated   {report['generated']}",
        f"real        {report['real']}",
        f"pairs       {report['pairs']} (same place and date; {report['unmatched']} generated tiles unmatched)",
        f"SSIM        {report['ssim']['mean']:.4f} ± {report['ssim']['std']:.4f}",
        f"PSNR        {report['psnr']['mean']:.2f} ± {report['psnr']['std']:.2f} dB",
    ]
    for name in ("clip_score", "fid"):
        item = report[name]
        label = "CLIP score" if name == "clip_score" else "FID"
        lines.append(
            f"{label:11s} {item['value']:.4f}" if "value" in item else f"{label:11s} skipped: {item['skipped']}"
        )
    return "\n".join(lines)
