"""Segmentation metrics, pure functions on arrays: overlap (Dice, IoU) from streaming counts, ISBI 2012, surface
distances, instances. Reading files and writing reports is the evaluate application, :mod:`unetkit.evaluate`.
"""

from __future__ import annotations

from unetkit.metrics.confusion import ConfusionMatrix, confusion_matrix, scores_from_matrix
from unetkit.metrics.instance import DSB_THRESHOLDS, InstanceCounts, instance_iou, instance_scores
from unetkit.metrics.isbi import (
    CHALLENGE_THRESHOLDS,
    ChallengeScores,
    RandScore,
    challenge_scores,
    errors_by_threshold,
    pixel_error,
    rand_error,
    rand_score,
    segments,
    variation_of_information,
    warp_labels,
    warping_error,
)
from unetkit.metrics.restore import nrmse, psnr, restore_scores, scale_matched, ssim
from unetkit.metrics.surface import SurfaceDistances, surface_distances, surface_distances_per_class

__all__ = [
    "CHALLENGE_THRESHOLDS",
    "DSB_THRESHOLDS",
    "ChallengeScores",
    "ConfusionMatrix",
    "InstanceCounts",
    "RandScore",
    "SurfaceDistances",
    "challenge_scores",
    "confusion_matrix",
    "errors_by_threshold",
    "instance_iou",
    "instance_scores",
    "nrmse",
    "pixel_error",
    "psnr",
    "rand_error",
    "rand_score",
    "restore_scores",
    "scale_matched",
    "scores_from_matrix",
    "segments",
    "ssim",
    "surface_distances",
    "surface_distances_per_class",
    "variation_of_information",
    "warp_labels",
    "warping_error",
]
