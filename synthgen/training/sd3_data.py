"""Training data of the SD3 climate models: RGB tiles with their sites, cached latents and text embeddings.

``ClimateTiles`` reads the RGB tiles of ingested manifests (one split, held-back dates left out), resampled to the
training size, and the site of each tile (``synthgen.climate.sites.sites_from_manifest``: place, date, land cover,
climate normals). ``TimeSeriesPairs`` pairs the tiles of one place at an earlier and a later date. Batches are pure
functions of ``(seed, step, micro)``, so a resumed run sees exactly the batches an uninterrupted one would.

As in diffusers' SD3 examples (``--cache_latents``, precomputed prompt embeddings), the frozen VAE's posterior of
every tile (and of its mirror image) and the frozen text encoders' embeddings of every prompt variant are computed
once; a step samples the posterior with its own generator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthgen.climate.lookup import ClimateNormals
from synthgen.climate.prompts import PromptSpec, SitePrompts, build_prompts, sd3_prompt_kwargs
from synthgen.climate.sites import sites_from_manifest
from synthgen.errors import ManifestError, allowed
from synthgen.io.manifest import iter_samples, read_manifest
from synthgen.training.tiles import mirrored_draw


def resample(rgb: np.ndarray, size: int) -> torch.Tensor:
    """HxWx3 uint8 → 3 x size x size float in [-1, 1] (area average when shrinking)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        mode = "area" if x.shape[-1] >= size and x.shape[-2] >= size else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode)
    return x[0].clamp(-1, 1)


def _read_split(manifest: Path, split: str, holdout: set[str]):
    df = read_manifest(manifest)
    splits = sorted(df["split"].unique())
    if split not in splits:
        raise ManifestError(f"{manifest}: no tiles in split '{split}' (splits present: {allowed(splits)})")
    keep = df["split"] == split
    if holdout:
        dates = df["meta"].map(lambda m: json.loads(m).get("date", "") if m else "")
        keep &= ~dates.isin(holdout)
    rgb_rows = df["members"].map(lambda ms: any(m.endswith(".rgb.tif") for m in ms))
    if not (keep & rgb_rows).any():
        raise ManifestError(f"{manifest}: no rgb tiles in split '{split}' outside the held-back dates")
    sub = df[keep & rgb_rows].reset_index(drop=True)
    sub.attrs["manifest_path"] = df.attrs["manifest_path"]
    return sub


class ClimateTiles:
    """The RGB tiles of a split of several manifests, at ``size`` px, each with its site dict."""

    def __init__(
        self,
        manifests: list[str | Path],
        split: str,
        size: int,
        normals: ClimateNormals | None,
        places: dict | None = None,
        holdout_dates: list[str] | None = None,
        normals_max_km: float = 200.0,
    ):
        images, sites, footprints = [], [], []
        holdout = set(holdout_dates or [])
        for manifest in manifests:
            manifest = Path(manifest)
            df = _read_split(manifest, split, holdout)
            place = (places or {}).get(manifest.stem)
            sites += sites_from_manifest(manifest, normals, place, normals_max_km, df=df)
            rgb = {s["key"]: s["rgb"] for s in iter_samples(df)}
            images += [resample(rgb[key], size) for key in df["key"]]
            footprints += [(manifest.stem, crs, tuple(t)) for crs, t in zip(df["crs"], df["transform"], strict=True)]
        self.images = torch.stack(images)
        self.sites = sites
        self.footprints = footprints  # (manifest, crs, transform): tiles of one place share it
        self.size = size

    @classmethod
    def from_config(cls, config, manifests: list[str | Path]) -> ClimateTiles:
        """The tiles of ``manifests`` as a flow-matching training config selects them: its split, size, climate
        normals (``config.normals``, matched within ``normals_max_km``), places and held-back dates."""
        normals = ClimateNormals.load(config.normals) if config.normals else None
        return cls(
            manifests, config.split, config.size, normals, config.places, config.holdout_dates, config.normals_max_km
        )

    def __len__(self) -> int:
        return len(self.sites)

    def batch(self, seed: int, step: int, micro: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Tile indices and mirror flags of this step's micro-batch."""
        return mirrored_draw(seed, step, micro, len(self), batch_size)


@dataclass
class Pair:
    """A place at an earlier date (control) and a later one (target), as indices into ``ClimateTiles``."""

    control: int
    target: int


class TimeSeriesPairs:
    """Pairs (earlier → later) of tiles of the same place (same manifest, CRS and transform) in ``tiles``."""

    def __init__(self, tiles: ClimateTiles, mode: str = "consecutive"):
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(tiles.footprints):
            if "date" in tiles.sites[i]:
                groups.setdefault(key, []).append(i)
        pairs = []
        for members in groups.values():
            members.sort(key=lambda i: tiles.sites[i]["date"])
            for a in range(len(members)):
                later = members[a + 1 : a + 2] if mode == "consecutive" else members[a + 1 :]
                pairs += [Pair(members[a], b) for b in later]
        if not pairs:
            raise ManifestError("no time series: no place has tiles at two dates (need a dated, georeferenced series)")
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, seed: int, step: int, micro: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Pair indices and mirror flags of this step's micro-batch."""
        return mirrored_draw(seed, step, micro, len(self), batch_size)


def prompt_variants(sites: list[dict], spec: PromptSpec, n: int, seed: int) -> list[list[SitePrompts]]:
    """``n`` prompt variants per site: variant 0 is the full prompt, the others apply the spec's dropout."""
    out = []
    for i, site in enumerate(sites):
        variants = [build_prompts(site, spec)]
        variants += [build_prompts(site, spec, np.random.default_rng([seed, i, v])) for v in range(1, n)]
        out.append(variants)
    return out


class TextEmbeddings:
    """Prompt embeddings of frozen text encoders, computed once per distinct prompt text."""

    def __init__(self, pipe, variants: list[list[SitePrompts]], spec: PromptSpec, with_t5: bool, msl: int, batch=64):
        keyed: dict[tuple, int] = {}
        order: list[SitePrompts] = []
        self.index = np.zeros((len(variants), len(variants[0])), dtype=np.int64)
        for i, vs in enumerate(variants):
            for v, p in enumerate(vs):
                kw = sd3_prompt_kwargs([p], spec, with_t5)
                key = (kw["prompt"][0], kw["prompt_3"][0])
                if key not in keyed:
                    keyed[key] = len(order)
                    order.append(p)
                self.index[i, v] = keyed[key]
        embeds, pooled = [], []
        device = pipe.transformer.device
        with torch.no_grad():
            for start in range(0, len(order), batch):
                kw = sd3_prompt_kwargs(order[start : start + batch], spec, with_t5)
                e, _, p, _ = pipe.encode_prompt(
                    **kw, device=device, do_classifier_free_guidance=False, max_sequence_length=msl
                )
                embeds.append(e.float().cpu())
                pooled.append(p.float().cpu())
        self.embeds = torch.cat(embeds)
        self.pooled = torch.cat(pooled)
        self.texts = [sd3_prompt_kwargs([p], spec, with_t5)["prompt"][0] for p in order]
        limit = pipe.tokenizer.model_max_length
        self.truncated = sum(len(pipe.tokenizer(t).input_ids) > limit for t in self.texts)  # cut by the encoders

    def get(self, items: np.ndarray, variants: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_embeds, pooled) for items (site indices) at the given variant indices."""
        idx = torch.from_numpy(self.index[items, variants])
        return self.embeds[idx], self.pooled[idx]


class LatentCache:
    """The VAE posterior (mean, std) of each image and of its mirror image, sampled per step."""

    def __init__(self, vae, images: torch.Tensor, batch: int = 32):
        means, stds = [], []
        with torch.no_grad():
            for flip in (False, True):
                m_all, s_all = [], []
                for start in range(0, len(images), batch):
                    x = images[start : start + batch]
                    x = torch.flip(x, dims=[-1]) if flip else x
                    dist = vae.encode(x.to(vae.device, vae.dtype)).latent_dist
                    m_all.append(dist.mean.float().cpu())
                    s_all.append(dist.std.float().cpu())
                means.append(torch.cat(m_all))
                stds.append(torch.cat(s_all))
        self.mean = torch.stack(means, 1)  # (N, 2, C, h, w)
        self.std = torch.stack(stds, 1)
        self.shift = float(vae.config.shift_factor or 0.0)
        self.scale = float(vae.config.scaling_factor)

    def sample(self, items: np.ndarray, flips: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        """Scaled latents ``(z - shift) * scale`` of the items, drawn from their posteriors."""
        mean = self.mean[items, flips]
        std = self.std[items, flips]
        z = mean + std * torch.randn(mean.shape, generator=generator)
        return (z - self.shift) * self.scale


def fit_latent_scaling(vae, images: torch.Tensor, batch: int = 32) -> tuple[float, float]:
    """(shift_factor, scaling_factor) that give the VAE's latents of ``images`` mean 0 and std 1 (as SD3's VAE
    config holds for its training data)."""
    with torch.no_grad():
        zs = [vae.encode(images[s : s + batch].to(vae.device, vae.dtype)).latent_dist.mean.float() for s in
              range(0, len(images), batch)]  # fmt: skip
    z = torch.cat(zs)
    std = float(z.std())
    return float(z.mean()), (1.0 / std if std > 1e-6 else 1.0)
