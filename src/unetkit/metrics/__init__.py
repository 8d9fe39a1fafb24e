"""Segmentation metrics from streaming counts: overlap (Dice, IoU), ISBI 2012, surface distances, instances."""

from __future__ import annotations

from unetkit.metrics.confusion import ConfusionMatrix, confusion_matrix, scores_from_matrix

__all__ = ["ConfusionMatrix", "confusion_matrix", "scores_from_matrix"]
