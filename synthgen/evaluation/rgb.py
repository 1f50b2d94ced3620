"""RGB fidelity: render RGB from the real label maps of a split and compare it with the real RGB of the same tiles.

Per tile: SSIM and PSNR (torchmetrics, data range 1 on images in [0, 1]; PSNR of an identical pair is infinite, so
it is counted in ``psnr.identical_tiles`` and as ``PSNR_CAP_DB`` in the mean). Per class of the scheme, over the
pixels of that class: RGB mean and standard deviation of real and rendered images, and a texture statistic, the
mean gradient magnitude of the grey image (central differences), with the gaps between the two. FID and KID
(torchmetrics, the standard 2015 Inception weights) only when a local weights file is given, else the report says
they were skipped. Tiles stream through in batches; nothing holds a split in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from synthgen.errors import ConfigError, ManifestError, allowed
from synthgen.io.geotiff import decode_array
from synthgen.io.manifest import read_manifest, read_member, shard_path
from synthgen.io.shards import ShardReader
from synthgen.schema import ClassScheme, load_scheme

PSNR_CAP_DB = 100.0
FID_SKIPPED = "skipped: no local Inception weights (--inception-weights PATH)"
GREY = np.array([0.299, 0.587, 0.114], np.float64)


def ssim_psnr(fake: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image SSIM and PSNR (dB, inf for identical images) of uint8 (B, H, W, 3) pairs."""
    f = torch.from_numpy(fake).permute(0, 3, 1, 2).double() / 255.0
    r = torch.from_numpy(real).permute(0, 3, 1, 2).double() / 255.0
    ssim = structural_similarity_index_measure(f, r, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(f, r, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return ssim.reshape(-1).numpy(), psnr.reshape(-1).numpy()


def gradient_magnitude(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel gradient magnitude of the grey image of a uint8 (H, W, 3) tile, in grey levels per pixel."""
    grey = rgb.astype(np.float64) @ GREY
    gy, gx = np.gradient(grey)
    return np.hypot(gx, gy)


class ClassStats:
    """Running per-class sums over tiles: pixel count, RGB sum and sum of squares, gradient-magnitude sum."""

    def __init__(self, codes: list[int]):
        self.codes = codes
        k = len(codes)
        self.count = np.zeros(k, np.int64)
        self.sum = np.zeros((k, 3))
        self.sq = np.zeros((k, 3))
        self.grad = np.zeros(k)

    def add(self, rgb: np.ndarray, label: np.ndarray) -> None:
        """Add one uint8 (H, W, 3) tile with its (H, W) label map."""
        values = rgb.reshape(-1, 3).astype(np.float64)
        grad = gradient_magnitude(rgb).reshape(-1)
        flat = label.reshape(-1)
        for i, code in enumerate(self.codes):
            mask = flat == code
            n = int(mask.sum())
            if n:
                self.count[i] += n
                self.sum[i] += values[mask].sum(0)
                self.sq[i] += (values[mask] ** 2).sum(0)
                self.grad[i] += grad[mask].sum()

    def summary(self) -> dict[int, dict]:
        """Per class code with pixels: ``pixels``, ``rgb_mean``, ``rgb_std`` (per channel), ``gradient_mean``."""
        out = {}
        for i, code in enumerate(self.codes):
            n = self.count[i]
            if n:
                mean = self.sum[i] / n
                std = np.sqrt(np.maximum(self.sq[i] / n - mean**2, 0.0))
                out[code] = {
                    "pixels": int(n),
                    "rgb_mean": [round(float(v), 3) for v in mean],
                    "rgb_std": [round(float(v), 3) for v in std],
                    "gradient_mean": round(float(self.grad[i] / n), 4),
                }
        return out


def compare_class_stats(real: ClassStats, fake: ClassStats, scheme: ClassScheme) -> dict:
    """Per class: real and rendered statistics side by side, with the mean absolute gaps."""
    r, f = real.summary(), fake.summary()
    names = scheme.names
    per_class = {}
    for code in r:
        if code not in f:
            continue
        per_class[names[code]] = {
            "code": code,
            "pixels": r[code]["pixels"],
            "real": {k: v for k, v in r[code].items() if k != "pixels"},
            "rendered": {k: v for k, v in f[code].items() if k != "pixels"},
            "rgb_mean_abs_gap": round(float(np.mean(np.abs(np.subtract(r[code]["rgb_mean"], f[code]["rgb_mean"])))), 3),
            "rgb_std_abs_gap": round(float(np.mean(np.abs(np.subtract(r[code]["rgb_std"], f[code]["rgb_std"])))), 3),
            "gradient_ratio": round(f[code]["gradient_mean"] / r[code]["gradient_mean"], 4)
            if r[code]["gradient_mean"] > 0
            else None,
        }
    return per_class


class _FeaturesOnce(torch.nn.Module):
    """Wraps the Inception feature extractor so that FID and KID, fed the same tensor in turn, run it once."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The features of ``images``, reused when called again with the very same tensor."""
        if self._last is None or self._last[0] is not images:
            self._last = (images, self.inner(images))
        return self._last[1]


class InceptionScores:
    """FID and KID from torchmetrics over uint8 images, with the Inception weights of a local file."""

    def __init__(self, weights: Path, device: str = "cpu"):
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

        if not Path(weights).is_file():
            raise ConfigError(f"--inception-weights {weights}: file not found")
        if not _TORCH_FIDELITY_AVAILABLE:
            raise ConfigError("--inception-weights needs the torch-fidelity package (pip install torch-fidelity)")
        kwargs = {"feature_extractor_weights_path": str(weights)}
        try:
            self.fid = FrechetInceptionDistance(feature=2048, **kwargs).to(device)
            self.fid.inception = _FeaturesOnce(self.fid.inception)
            self.kid = KernelInceptionDistance(feature=self.fid.inception, subset_size=2).to(device)
        except (RuntimeError, KeyError, OSError) as exc:
            message = str(exc).strip().splitlines()[0][:200]
            raise ConfigError(
                f"--inception-weights {weights}: not Inception weights torchmetrics can load ({message})"
            ) from None
        self.n = 0

    def update(self, fake: np.ndarray, real: np.ndarray) -> None:
        """Add a batch of uint8 (B, H, W, 3) rendered and real images."""
        f = torch.from_numpy(fake).permute(0, 3, 1, 2).contiguous()
        r = torch.from_numpy(real).permute(0, 3, 1, 2).contiguous()
        for images, real_side in ((r, True), (f, False)):
            images = images.to(self.fid.device)
            self.fid.update(images, real=real_side)  # the same tensor twice: Inception runs once
            self.kid.update(images, real=real_side)
        self.n += len(fake)

    def compute(self) -> dict:
        """FID, and KID mean/std over subsets of min(1000, n) images."""
        if self.n < 2:
            return {"fid": "skipped: needs at least 2 tiles", "kid": "skipped: needs at least 2 tiles"}
        self.kid.subset_size = min(1000, self.n)
        self.kid.subsets = 100 if self.n > self.kid.subset_size else 1
        kid_mean, kid_std = self.kid.compute()
        return {"fid": float(self.fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


def iter_real_batches(manifest: Path, split: str | None, batch_size: int, max_tiles: int | None) -> Iterator[dict]:
    """Batches of real tiles (``keys``, ``rgb`` uint8 (B, H, W, 3), ``labels`` uint8, ``heights`` float or None).

    Only tiles with both rgb and label rasters are used; reads one shard at a time.
    """
    df = read_manifest(manifest)
    if split is not None:
        splits = sorted(set(df["split"]))
        if split not in splits:
            raise ManifestError(f"{manifest}: no tiles in split '{split}' (splits present: {allowed(splits)})")
        df = df[df["split"] == split]
    paired = [{f"{k}.rgb.tif", f"{k}.label.tif"} <= set(m) for k, m in zip(df["key"], df["members"], strict=True)]
    df = df[paired]
    if df.empty:
        raise ManifestError(f"{manifest}: no tile of split '{split}' has both an rgb and a label raster")
    if max_tiles is not None:
        df = df.iloc[np.linspace(0, len(df) - 1, min(max_tiles, len(df))).round().astype(int)]
    df.attrs["manifest_path"] = str(Path(manifest).resolve())
    reader, batch = None, []
    try:
        for _, row in df.iterrows():
            path = shard_path(df, row["shard"])
            if reader is None or reader.path != path:
                if reader is not None:
                    reader.close()
                reader = ShardReader(path)
            tile = {"key": row["key"], "scheme": row["scheme"], "height": None}
            for kind in ("rgb", "label", "height"):
                name = f"{row['key']}.{kind}.tif"
                if name in set(row["members"]):
                    tile[kind] = decode_array(read_member(reader, row, name), kind, f"{path}:{name}")
            batch.append(tile)
            if len(batch) == batch_size:
                yield _stack(batch)
                batch = []
        if batch:
            yield _stack(batch)
    finally:
        if reader is not None:
            reader.close()


def _stack(tiles: list[dict]) -> dict:
    heights = None
    if any(t["height"] is not None for t in tiles):
        nan = np.full(tiles[0]["label"].shape, np.nan, np.float32)
        heights = np.stack([nan if t["height"] is None else t["height"] for t in tiles]).astype(np.float32)
    return {
        "keys": [t["key"] for t in tiles],
        "schemes": sorted({t["scheme"] for t in tiles}),
        "rgb": np.stack([t["rgb"] for t in tiles]),
        "labels": np.stack([t["label"] for t in tiles]),
        "heights": heights,
    }


class RGBFidelity:
    """Accumulates the comparison of rendered and real images batch by batch; ``report()`` gives the numbers."""

    def __init__(self, scheme: ClassScheme, inception_weights: Path | None = None):
        self.scheme = scheme
        codes = [c.code for c in scheme.valid_classes]
        self.real, self.fake = ClassStats(codes), ClassStats(codes)
        self.ssim: list[float] = []
        self.psnr: list[float] = []
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.inception = InceptionScores(inception_weights, device) if inception_weights else None

    def update(self, fake: np.ndarray, real: np.ndarray, labels: np.ndarray) -> None:
        """Add uint8 (B, H, W, 3) rendered and real images of the same (B, H, W) label maps."""
        if fake.shape != real.shape or fake.dtype != np.uint8 or real.dtype != np.uint8:
            raise ConfigError(
                f"rendered {fake.dtype} {fake.shape} and real {real.dtype} {real.shape} must match, uint8"
            )
        ssim, psnr = ssim_psnr(fake, real)
        self.ssim.extend(ssim.tolist())
        self.psnr.extend(psnr.tolist())
        for f, r, lab in zip(fake, real, labels, strict=True):
            self.real.add(r, lab)
            self.fake.add(f, lab)
        if self.inception is not None:
            self.inception.update(fake, real)

    def report(self) -> dict:
        """The metrics so far, JSON-able (no inf or NaN)."""
        psnr = np.array(self.psnr)
        identical = int(np.isinf(psnr).sum())
        capped = np.minimum(psnr, PSNR_CAP_DB)
        out = {
            "tiles": len(self.ssim),
            "ssim": {"mean": round(float(np.mean(self.ssim)), 5), "median": round(float(np.median(self.ssim)), 5)},
            "psnr_db": {
                "mean": round(float(capped.mean()), 4),
                "median": round(float(np.median(capped)), 4),
                "identical_tiles": identical,
                "note": f"identical tiles count as {PSNR_CAP_DB:g} dB",
            },
            "per_class": compare_class_stats(self.real, self.fake, self.scheme),
        }
        if self.inception is None:
            out.update(fid=FID_SKIPPED, kid=FID_SKIPPED)
        else:
            out.update(self.inception.compute())
        return out


def evaluate_rgb(
    real: Path,
    method: str,
    model: str | None = None,
    split: str | None = "val",
    inception_weights: Path | None = None,
    batch_size: int = 8,
    seed: int = 0,
    steps: int = 20,
    guidance: float | None = None,
    max_tiles: int | None = None,
    progress: Callable[[int], None] | None = None,
    observers: dict | None = None,
    conditioning_scale: float | None = None,
) -> dict:
    """Render RGB from the real labels of ``split`` with a method's pipeline and compare it with the real RGB.

    Tile ``j`` of the split (in manifest order) is rendered with seed ``tile_seed(seed, j)``, as ``synthgen rgb``
    would render it. ``observers`` (name -> object with ``update(rendered, real, labels)`` and ``report()``) see
    every batch too; their reports go into the report under their names. Returns the report (see the module
    docstring).
    """
    from synthgen.engine.job import tile_seed
    from synthgen.jobs.rgb import get_method, load_rgb_pipeline, render, resolve_sampling
    from synthgen.pipelines.loading import recorded_model_id

    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size} must be >= 1")
    if max_tiles is not None and max_tiles < 1:
        raise ConfigError(f"--max-tiles {max_tiles} must be >= 1")
    start = time.perf_counter()
    pipe, _ = load_rgb_pipeline(method, model)
    guidance, conditioning_scale = resolve_sampling(pipe, guidance, conditioning_scale)
    scheme = load_scheme(pipe.config.scheme)
    fidelity = RGBFidelity(scheme, inception_weights)
    done = 0
    for batch in iter_real_batches(Path(real), split, batch_size, max_tiles):
        if batch["schemes"] != [scheme.name]:
            raise ManifestError(
                f"{real}: labels are in scheme(s) {', '.join(batch['schemes'])}, the model was trained on "
                f"'{scheme.name}' (allowed: {scheme.name})"
            )
        seeds = [tile_seed(seed, done + j) for j in range(len(batch["keys"]))]
        images, _ = render(pipe, method, batch["labels"], batch["heights"], seeds, steps, guidance, conditioning_scale)
        if np.issubdtype(images.dtype, np.floating):
            if np.isnan(images).any():
                raise ConfigError(f"{real}: the {method} model rendered NaN for a tile of {batch['keys']}")
            images = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
        fidelity.update(images, batch["rgb"], batch["labels"])
        for observer in (observers or {}).values():
            observer.update(images, batch["rgb"], batch["labels"])
        done += len(batch["keys"])
        if progress:
            progress(len(batch["keys"]))
    report = {
        "real": str(real),
        "split": split,
        "method": method,
        "model": recorded_model_id(model, get_method(method).default_weights),
        "seed": seed,
        **(
            {
                "steps": steps,
                "guidance": guidance,
                "conditioning_scale": conditioning_scale,
            }
            if method == "controlnet"
            else {}
        ),
        **fidelity.report(),
        **{name: observer.report() for name, observer in (observers or {}).items()},
    }
    report["elapsed_s"] = round(time.perf_counter() - start, 3)
    return report


def format_rgb_report(report: dict) -> str:
    """The headline numbers of an RGB report as a few lines of text."""
    lines = [
        f"{report['method']} ({report['model']}) on {report['real']} [{report['split']}]: {report['tiles']} tiles",
        f"SSIM mean {report['ssim']['mean']:.4f}  PSNR mean {report['psnr_db']['mean']:.2f} dB",
    ]
    fid = report.get("fid")
    lines.append(f"FID {fid:.3f}  KID {report['kid_mean']:.5f}" if isinstance(fid, float) else f"FID/KID {fid}")
    for name, c in report["per_class"].items():
        ratio = "-" if c["gradient_ratio"] is None else f"{c['gradient_ratio']:.2f}"
        lines.append(f"  {name:18s} colour gap {c['rgb_mean_abs_gap']:6.2f}  texture ratio {ratio}")
    recovery = report.get("label_recovery")
    if recovery:
        real, rendered = recovery["real"]["miou"], recovery["rendered"]["miou"]
        lines.append(
            f"label recovery ({recovery['seg_model']}): mIoU real {real:.3f}, rendered {rendered:.3f}, "
            f"ratio {recovery['miou_ratio']:.3f}"
        )
    return "\n".join(lines)
