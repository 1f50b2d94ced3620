"""Test a model on a tile set: streamed whole tiles, metrics, images/s and a few prediction overlays.

Tiles are batched while they share a size and padded (edge replication) up to a multiple of the model's output
stride; predictions are cropped back, so every pixel is scored at its own resolution and nothing is resized.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthgen.validation.data import IGNORE_INDEX, ClassIndex, TileSet, TileStream
from synthgen.validation.metrics import HeightMetrics, SegmentationMetrics
from synthgen.validation.models import SegHeightModel
from synthgen.validation.plots import write_overlay


@torch.no_grad()
def predict(model: SegHeightModel, rgb: torch.Tensor) -> dict:
    """Class probabilities (B, K, H, W) and heights (B, 1, H, W) or None for rgb of any size."""
    stride = model.output_stride
    h, w = rgb.shape[-2:]
    pad_h, pad_w = -h % stride, -w % stride
    x = F.pad(rgb, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else rgb
    use_bf16 = x.device.type == "cuda"
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_bf16):
        out = model(x)
    probs = out["logits"].float().softmax(1)[..., :h, :w]
    height = out["height"].float()[..., :h, :w].clamp(min=0) if "height" in out else None
    return {"probs": probs, "height": height}


def same_size_batches(stream: TileStream, batch_size: int):
    """Lists of up to ``batch_size`` consecutive samples of ``stream`` that share a size."""
    pending: list[dict] = []
    for sample in stream:
        if pending and (len(pending) == batch_size or sample["rgb"].shape != pending[0]["rgb"].shape):
            yield pending
            pending = []
        pending.append(sample)
    if pending:
        yield pending


def monitor_batches(
    tiles: TileSet, classes: ClassIndex, batch_size: int = 16
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The whole tiles of ``tiles`` as (rgb, class index) batches, read once for a run's validation-loss curve."""
    return [
        (torch.stack([s["rgb"] for s in group]), classes.to_index(torch.stack([s["label"] for s in group])))
        for group in same_size_batches(TileStream(tiles, classes.scheme, train=False), batch_size)
    ]


@torch.no_grad()
def monitor_loss(model: SegHeightModel, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean cross-entropy of ``model`` (put in eval mode) over the labelled pixels of ``monitor_batches``: the
    validation-loss curve that shows whether a training run reached a plateau."""
    model.eval()
    device = next(model.parameters()).device
    total, pixels = 0.0, 0
    for rgb, target in batches:
        log_probs = predict(model, rgb.to(device))["probs"].clamp_min(1e-8).log()
        target = target.to(device)
        total += float(F.nll_loss(log_probs, target, ignore_index=IGNORE_INDEX, reduction="sum"))
        pixels += int((target != IGNORE_INDEX).sum())
    return total / max(pixels, 1)


@torch.no_grad()
def evaluate_model(
    model: SegHeightModel,
    tiles: TileSet,
    classes: ClassIndex,
    *,
    with_seg: bool = True,
    with_height: bool = False,
    batch_size: int = 16,
    overlays: int = 0,
    overlay_path: Path | None = None,
) -> dict:
    """Scores of ``model`` on every tile of ``tiles`` (segmentation and/or height), images/s, overlay path."""
    model.eval()
    device = next(model.parameters()).device
    seg, height = SegmentationMetrics(classes), HeightMetrics()
    picks = set(np.linspace(0, len(tiles) - 1, overlays).round().astype(int).tolist()) if overlays else set()
    shown: list[dict] = []
    stream = TileStream(tiles, classes.scheme, train=False)
    started, index = time.perf_counter(), 0
    for group in same_size_batches(stream, batch_size):
        rgb = torch.stack([s["rgb"] for s in group]).to(device)
        out = predict(model, rgb)
        pred_codes = classes.to_codes(out["probs"].argmax(1)).cpu()
        labels = torch.stack([s["label"] for s in group])
        heights = torch.stack([s["height"] for s in group])
        if with_seg:
            seg.update(pred_codes, labels)
        if with_height and out["height"] is not None:
            height.update(out["height"].cpu(), heights)
        for j, sample in enumerate(group):
            if index + j in picks:
                shown.append(
                    {
                        "key": sample["key"],
                        "rgb": (sample["rgb"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                        "label": sample["label"].numpy().astype(np.uint8),
                        "pred": pred_codes[j].numpy().astype(np.uint8),
                        "height": sample["height"][0].numpy() if with_height else None,
                        "pred_height": out["height"][j, 0].cpu().numpy() if with_height else None,
                    }
                )
        index += len(group)
    seconds = time.perf_counter() - started
    result: dict = {"tiles": index, "seconds": round(seconds, 3), "images_per_s": round(index / seconds, 3)}
    if with_seg:
        result.update(seg.compute())
    if with_height:
        result["height"] = height.compute()
    if shown and overlay_path is not None:
        result["overlay"] = str(write_overlay(overlay_path, shown, classes.scheme))
    return result
