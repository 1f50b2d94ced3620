"""Validation metrics on hand-made cases with known answers; the model registry and its save/load round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthgen.errors import ConfigError
from synthgen.schema import load_scheme
from synthgen.validation.data import ClassIndex
from synthgen.validation.metrics import HeightMetrics, SegmentationMetrics, scores_from_confusion
from synthgen.validation.models import ARCHITECTURES, SegHeightModel, architecture, check_encoder

OEM8 = load_scheme("oem8")


def _seg(pred: list[list[int]], true: list[list[int]]) -> dict:
    metrics = SegmentationMetrics(ClassIndex(OEM8))
    metrics.update(torch.tensor([pred]), torch.tensor([true]))
    return metrics.compute()


def test_perfect_prediction_gives_iou_one_and_ignores_nodata():
    true = [[1, 1, 5, 5], [8, 8, 0, 0]]
    pred = [[1, 1, 5, 5], [8, 8, 6, 3]]  # the two nodata pixels are predicted as anything: ignored
    scores = _seg(pred, true)
    assert scores["miou"] == 1.0 and scores["overall_accuracy"] == 1.0 and scores["f1"] == 1.0
    assert scores["pixels"] == 6
    iou = scores["iou_per_class"]
    assert iou["bareland"] == iou["tree"] == iou["building"] == 1.0
    assert iou["water"] is None and iou["road"] is None  # in neither truth nor prediction: left out of the mean


def test_known_confusion_gives_known_iou_accuracy_and_f1():
    true = [[1, 1, 1, 1, 8, 8, 8, 8]]
    pred = [[1, 1, 1, 8, 8, 8, 8, 8]]
    scores = _seg(pred, true)
    # bareland: tp 3, fn 1 -> IoU 3/4, F1 6/7; building: tp 4, fp 1 -> IoU 4/5, F1 8/9
    assert scores["iou_per_class"]["bareland"] == pytest.approx(0.75)
    assert scores["iou_per_class"]["building"] == pytest.approx(0.8)
    assert scores["miou"] == pytest.approx((0.75 + 0.8) / 2)
    assert scores["overall_accuracy"] == pytest.approx(7 / 8)
    assert scores["f1"] == pytest.approx((6 / 7 + 8 / 9) / 2)
    # a class predicted but absent from the truth counts as IoU 0
    scores = _seg([[1, 6]], [[1, 1]])
    assert scores["iou_per_class"]["water"] == 0.0 and scores["miou"] == pytest.approx((0.5 + 0.0) / 2)


def test_scores_from_confusion_matches_hand_computation():
    confusion = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    scores = scores_from_confusion(confusion, ["a", "b", "c"])
    assert scores["iou_per_class"] == {"a": pytest.approx(5 / 8), "b": pytest.approx(3 / 6), "c": None}
    assert scores["overall_accuracy"] == pytest.approx(8 / 11)


def test_known_height_errors_give_known_mae_rmse_and_delta():
    metrics = HeightMetrics()
    true = torch.tensor([[0.0, 10.0, 20.0, float("nan")]])
    pred = torch.tensor([[0.0, 12.0, 10.0, 99.0]])  # the NaN pixel has no height: ignored
    metrics.update(pred, true)
    result = metrics.compute()
    assert result["pixels"] == 3
    assert result["mae"] == pytest.approx((0 + 2 + 10) / 3)
    assert result["rmse"] == pytest.approx(math.sqrt((0 + 4 + 100) / 3))
    # 0 vs 0 (both floored at 0.1 m): ratio 1, hit; 12/10 = 1.2 < 1.25, hit; 20/10 = 2, miss
    assert result["delta1"] == pytest.approx(2 / 3)
    assert HeightMetrics().compute()["mae"] is None


def test_model_registry_lists_valid_keys():
    assert set(ARCHITECTURES) == {"unet", "unetplusplus", "deeplabv3plus"}
    with pytest.raises(ConfigError, match="allowed: deeplabv3plus, unet, unetplusplus"):
        architecture("segformer")
    with pytest.raises(ConfigError, match="did you mean .*resnet18"):
        check_encoder("resnet19")
    with pytest.raises(ConfigError, match="no timm model"):
        check_encoder("tu-not_a_model_at_all")
    check_encoder("tu-mobilenetv3_small_050")


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_model_save_load_round_trip_with_height_head(arch, tmp_path):
    torch.manual_seed(0)
    decoder = [16] if arch == "deeplabv3plus" else [16] * 5
    model = SegHeightModel(
        arch=arch, encoder="tu-mobilenetv3_small_050", num_classes=8, with_height=True, decoder_channels=decoder
    ).eval()
    x = torch.rand(1, 3, 32, 32)
    out = model(x)
    assert out["logits"].shape == (1, 8, 32, 32) and out["height"].shape == (1, 1, 32, 32)
    model.save_pretrained(tmp_path / arch)
    loaded = SegHeightModel.from_pretrained(tmp_path / arch).eval()
    assert loaded.config.arch == arch
    torch.testing.assert_close(loaded(x)["logits"], out["logits"])
    torch.testing.assert_close(loaded(x)["height"], out["height"])
