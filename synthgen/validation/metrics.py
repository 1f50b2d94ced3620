"""Segmentation and height metrics on streamed batches, with torchmetrics.

Segmentation: a torchmetrics confusion matrix over the scheme's valid classes (nodata pixels, code 0 in oem8, are
left out); from it per-class IoU ``tp / (tp + fp + fn)``, mIoU and macro F1 over the classes present in the truth
or the prediction, and overall accuracy ``trace / total``. Height, on pixels whose true height is finite: MAE and
RMSE (torchmetrics) and δ<1.25, the share of pixels with ``max(p / h, h / p) < 1.25``, where both heights are first
raised to at least ``DELTA_FLOOR`` metres so that bare ground (0 m) predicted as 0 m counts as right.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric
from torchmetrics.classification import MulticlassConfusionMatrix

from synthgen.validation.data import IGNORE_INDEX, ClassIndex

DELTA_FLOOR = 0.1
DELTA_THRESHOLD = 1.25


def scores_from_confusion(confusion: np.ndarray, names: list[str]) -> dict:
    """mIoU, per-class IoU (None where a class is in neither truth nor prediction), overall accuracy, F1."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    fp = confusion.sum(0) - tp
    fn = confusion.sum(1) - tp
    union = tp + fp + fn
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    f1 = np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
    total = confusion.sum()
    return {
        "miou": float(np.nanmean(iou)) if present.any() else None,
        "overall_accuracy": float(tp.sum() / total) if total else None,
        "f1": float(np.nanmean(f1)) if present.any() else None,
        "iou_per_class": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou, strict=True)},
        "f1_per_class": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, f1, strict=True)},
        "pixels": int(total),
    }


class SegmentationMetrics:
    """Confusion-based scores; ``update`` takes predicted and true label maps in scheme codes."""

    def __init__(self, classes: ClassIndex):
        self.classes = classes
        self.confusion = MulticlassConfusionMatrix(num_classes=len(classes), ignore_index=IGNORE_INDEX)

    def update(self, pred_codes: torch.Tensor, true_codes: torch.Tensor) -> None:
        """Add a batch of (B, H, W) code maps; pixels whose true code is nodata are ignored."""
        target = self.classes.to_index(true_codes.cpu())
        pred = self.classes.to_index(pred_codes.cpu())
        pred = torch.where(pred == IGNORE_INDEX, torch.zeros_like(pred), pred)
        self.confusion.update(pred.flatten(), target.flatten())

    def compute(self) -> dict:
        """The scores of everything added so far, plus the confusion matrix (rows: truth)."""
        matrix = self.confusion.compute().numpy()
        return {**scores_from_confusion(matrix, self.classes.names), "confusion": matrix.tolist()}


class DeltaAccuracy(Metric):
    """Share of pixels with ``max(p / h, h / p) < threshold``, both heights floored at ``floor`` metres."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, threshold: float = DELTA_THRESHOLD, floor: float = DELTA_FLOOR, **kwargs):
        super().__init__(**kwargs)
        self.threshold, self.floor = threshold, floor
        self.add_state("hits", default=torch.tensor(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add flat tensors of predicted and true heights (valid pixels only)."""
        p = preds.double().clamp(min=self.floor)
        h = target.double().clamp(min=self.floor)
        self.hits += (torch.maximum(p / h, h / p) < self.threshold).sum()
        self.total += target.numel()

    def compute(self) -> torch.Tensor:
        """The share of hits."""
        return self.hits / self.total


class HeightMetrics:
    """MAE, RMSE and δ<1.25 on the pixels whose true height is finite (NaN = nodata)."""

    def __init__(self):
        self.mae = MeanAbsoluteError()
        self.mse = MeanSquaredError()
        self.delta = DeltaAccuracy()
        self.pixels = 0

    def update(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        """Add a batch of predicted and true height maps in metres (any matching shape)."""
        valid = torch.isfinite(true)
        if not valid.any():
            return
        p, t = pred[valid].double().cpu(), true[valid].double().cpu()
        self.mae.update(p, t)
        self.mse.update(p, t)
        self.delta.update(p, t)
        self.pixels += int(valid.sum())

    def compute(self) -> dict:
        """{mae, rmse, delta1, pixels}; None values when no pixel had a height."""
        if self.pixels == 0:
            return {"mae": None, "rmse": None, "delta1": None, "pixels": 0}
        return {
            "mae": float(self.mae.compute()),
            "rmse": float(self.mse.compute().sqrt()),
            "delta1": float(self.delta.compute()),
            "pixels": self.pixels,
        }
