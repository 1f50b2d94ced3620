"""Label recovery: does a segmentation model trained on real tiles find the labels an image was rendered from?

The model (a ``SegHeightModel`` folder of ``synthgen validate``, e.g. ``runs/fidelity/models/real-unet-s0-*/model``)
segments the real images and the images rendered from their labels; the report gives both scores and their ratio
(the study's "real→fake" column). A label-faithful renderer keeps the ratio near 1; one that ignores its labels
drives the rendered score down. Fed batch by batch by ``synthgen evaluate rgb --seg-model``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from synthgen.errors import ConfigError
from synthgen.io.weights import refuse_pickle_weights
from synthgen.schema import load_scheme
from synthgen.validation.data import ClassIndex
from synthgen.validation.evaluate import predict
from synthgen.validation.metrics import SegmentationMetrics
from synthgen.validation.models import SegHeightModel


def load_segmentation_model(model_dir: Path) -> tuple[SegHeightModel, ClassIndex]:
    """A ``SegHeightModel`` folder of ``synthgen validate`` in eval mode, with the class index of its scheme; a
    folder that is not one is a one-line error."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"--seg-model {model_dir}: not a model folder of synthgen validate (no config.json)")
    refuse_pickle_weights(model_dir)
    model = SegHeightModel.from_pretrained(model_dir, use_safetensors=True).eval()
    return model, ClassIndex(load_scheme(model.config.scheme))


class LabelRecovery:
    """Segmentation scores of one model on real and on rendered images of the same label maps."""

    def __init__(self, model_dir: Path):
        self.model_dir = Path(model_dir)
        self.model, self.classes = load_segmentation_model(self.model_dir)
        self.real, self.rendered = SegmentationMetrics(self.classes), SegmentationMetrics(self.classes)

    def _segment(self, images: np.ndarray) -> torch.Tensor:
        rgb = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        return self.classes.to_codes(predict(self.model, rgb)["probs"].argmax(1))

    def update(self, rendered: np.ndarray, real: np.ndarray, labels: np.ndarray) -> None:
        """Add uint8 (B, H, W, 3) rendered and real images of the same (B, H, W) label maps (scheme codes)."""
        truth = torch.from_numpy(labels.astype(np.int64))
        self.real.update(self._segment(real), truth)
        self.rendered.update(self._segment(rendered), truth)

    def report(self) -> dict:
        """mIoU and per-class IoU on real and on rendered images, and rendered / real."""
        real, rendered = self.real.compute(), self.rendered.compute()
        keep = ("miou", "overall_accuracy", "iou_per_class")
        ratio = rendered["miou"] / real["miou"] if real["miou"] and rendered["miou"] is not None else None
        return {
            "seg_model": str(self.model_dir),
            "real": {k: real[k] for k in keep},
            "rendered": {k: rendered[k] for k in keep},
            "miou_ratio": None if ratio is None else round(ratio, 4),
        }
