"""Validation: whole images through the tiler, Dice and IoU per class from streaming confusion counts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from unetkit.data.datasets import Sample
from unetkit.infer import Predictor
from unetkit.metrics import ConfusionMatrix
from unetkit.models.base import SegmentationModel


def validate(
    model: SegmentationModel,
    samples: list[Sample],
    *,
    num_classes: int,
    tile: list[int] | None,
    device: torch.device,
    ignore_index: int | None = None,
    tta: bool = False,
) -> tuple[ConfusionMatrix, float, int]:
    """Predict every (already normalised) sample whole and accumulate confusion counts and the NLL.

    Returns:
        ``(confusion, summed negative log-likelihood, counted pixels)``; reduce across processes, then
        call :func:`scores`.
    """
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    nll, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        predictor = Predictor(model, normalization={"kind": "none"}, device=device, tile=tile, tta=tta)
        for s in samples:
            proba = predictor.predict_proba(s.image)
            pred = proba.argmax(0)
            mask = np.asarray(s.mask)  # a streamed mask is read whole here, one image at a time
            cm.update(pred, mask)
            valid = mask != ignore_index if ignore_index is not None else np.ones(mask.shape, bool)
            target = np.where(valid, mask, 0)
            p = np.take_along_axis(proba, target[None].astype(np.int64), 0)[0]
            nll += float(-np.log(np.clip(p[valid], 1e-7, 1.0)).sum())
            count += int(valid.sum())
    finally:
        model.train(was_training)
    return cm, nll, count


def scores(cm: ConfusionMatrix, nll: float, count: int, class_names: list[str]) -> dict[str, Any]:
    """Row entries: ``val_loss``, ``val_dice``/``val_iou`` (mean over foreground classes) and per class."""
    dice, iou = cm.dice(), cm.iou()
    fg = slice(1, None) if len(dice) > 1 else slice(None)
    row: dict[str, Any] = {
        "val_loss": nll / max(count, 1),
        "val_dice": float(np.nanmean(dice[fg])) if not np.all(np.isnan(dice[fg])) else math.nan,
        "val_iou": float(np.nanmean(iou[fg])) if not np.all(np.isnan(iou[fg])) else math.nan,
    }
    for name, d, i in zip(class_names, dice, iou, strict=True):
        row[f"dice_{name}"] = float(d)
        row[f"iou_{name}"] = float(i)
    return row
