"""Object-level metrics: matched-instance precision, recall, F1 and the Data Science Bowl 2018 AP.

Two instance label images (0 = background, each object its own id) are compared through the IoU of every
pair of objects. At an IoU threshold ``t`` a true and a predicted object match when their IoU exceeds ``t``;
for ``t >= 0.5`` such a match is unique, below it a maximum one-to-one matching is taken (Hungarian).
The 2018 Data Science Bowl score of one image is ``TP / (TP + FP + FN)`` averaged over
``t = 0.5, 0.55, ..., 0.95``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unetkit.errors import DataError

__all__ = ["DSB_THRESHOLDS", "InstanceCounts", "instance_iou", "instance_scores", "match_instances"]

DSB_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _labels(a: Any, name: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    if arr.dtype.kind not in "iub":
        raise DataError(
            f"{name} instance labels have dtype {arr.dtype}", fix="pass integer object ids (0 = background)"
        )
    if arr.size and arr.min() < 0:
        raise DataError(f"{name} instance labels contain negative ids", fix="use 0 for background, 1.. for objects")
    return arr


def instance_iou(pred: Any, truth: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every (true object, predicted object) pair.

    Returns:
        ``(iou [n_true, n_pred], true_ids, pred_ids)``; ids are the non-zero labels present, sorted.

    Shape:
        ``pred``, ``truth``: ``(*spatial)`` instance labels, 2D or 3D.

    >>> iou, t, p = instance_iou(np.array([[1, 1, 0, 2]]), np.array([[1, 1, 1, 0]]))
    >>> iou.round(3).tolist(), t.tolist(), p.tolist()
    ([[0.667, 0.0]], [1], [1, 2])
    """
    p = _labels(pred, "prediction").reshape(-1)
    t = _labels(truth, "truth").reshape(-1)
    if p.shape != t.shape:
        raise DataError(f"prediction size {p.size} differs from truth size {t.size}; the shapes must be equal")
    t_ids, t_inv = np.unique(t, return_inverse=True)
    p_ids, p_inv = np.unique(p, return_inverse=True)
    inter = np.bincount(t_inv * p_ids.size + p_inv, minlength=t_ids.size * p_ids.size).reshape(t_ids.size, -1)
    t_area = inter.sum(axis=1)
    p_area = inter.sum(axis=0)
    # drop background rows/columns (id 0 sorts first when present)
    t_sl = slice(1, None) if t_ids.size and t_ids[0] == 0 else slice(None)
    p_sl = slice(1, None) if p_ids.size and p_ids[0] == 0 else slice(None)
    inter = inter[t_sl, p_sl].astype(np.float64)
    union = t_area[t_sl, None] + p_area[None, p_sl] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou, t_ids[t_sl], p_ids[p_sl]


def match_instances(iou: np.ndarray, threshold: float) -> int:
    """Number of one-to-one matches with IoU above ``threshold`` (the true positives).

    >>> match_instances(np.array([[0.9, 0.0], [0.1, 0.4]]), 0.5)
    1
    >>> match_instances(np.array([[0.45, 0.3], [0.45, 0.0]]), 0.25)
    2
    """
    hits = iou > threshold
    if not hits.any():
        return 0
    if threshold >= 0.5:  # an object can overlap more than half of at most one other object
        return int(hits.sum())
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(hits, maximize=True)
    return int(hits[rows, cols].sum())


@dataclass
class InstanceCounts:
    """TP/FP/FN per IoU threshold, summed over images (``update``) and per-image DSB scores.

    ``precision``/``recall``/``f1`` come from the summed counts (pooled over images); ``ap`` is the Data
    Science Bowl score ``TP / (TP + FP + FN)`` per threshold from the summed counts; ``mean_image_ap`` is the
    Bowl's leaderboard number: each image's score averaged over thresholds, then over images.

    >>> c = InstanceCounts().update(np.array([[1, 1, 0, 2]]), np.array([[1, 1, 0, 2]]))
    >>> c.mean_image_ap()
    1.0
    """

    thresholds: tuple[float, ...] = DSB_THRESHOLDS
    tp: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    fp: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    fn: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    image_ap: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.thresholds or any(not 0.0 <= t < 1.0 for t in self.thresholds):
            raise DataError(f"IoU thresholds {self.thresholds} must be non-empty and lie in [0, 1)")
        n = len(self.thresholds)
        if self.tp.size == 0:
            self.tp, self.fp, self.fn = (np.zeros(n, np.int64) for _ in range(3))

    def update(self, pred: Any, truth: Any) -> InstanceCounts:
        """Add one image's (or volume's) instance labels; returns ``self``."""
        iou, t_ids, p_ids = instance_iou(pred, truth)
        tp = np.array([match_instances(iou, t) for t in self.thresholds], np.int64)
        fp, fn = p_ids.size - tp, t_ids.size - tp
        self.tp += tp
        self.fp += fp
        self.fn += fn
        denom = tp + fp + fn
        self.image_ap.append(float(np.mean(np.where(denom > 0, tp / np.maximum(denom, 1), 1.0))))
        return self

    def _ratio(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1), np.nan)

    def precision(self) -> np.ndarray:
        """``TP / (TP + FP)`` per threshold."""
        return self._ratio(self.tp, self.tp + self.fp)

    def recall(self) -> np.ndarray:
        """``TP / (TP + FN)`` per threshold."""
        return self._ratio(self.tp, self.tp + self.fn)

    def f1(self) -> np.ndarray:
        """``2TP / (2TP + FP + FN)`` per threshold."""
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def ap(self) -> np.ndarray:
        """``TP / (TP + FP + FN)`` per threshold, pooled over images."""
        return self._ratio(self.tp, self.tp + self.fp + self.fn)

    def mean_image_ap(self) -> float:
        """The Data Science Bowl 2018 score: per-image AP averaged over thresholds, then over images."""
        return float(np.mean(self.image_ap)) if self.image_ap else float("nan")


def instance_scores(
    pred: Any, truth: Any, thresholds: Sequence[float] = DSB_THRESHOLDS, *, at: float = 0.5
) -> dict[str, float]:
    """Instance scores of one image: ``precision``, ``recall``, ``f1`` at IoU ``at`` and ``ap`` (DSB 2018).

    Shape:
        ``pred``, ``truth``: ``(*spatial)`` instance labels (0 = background).

    >>> truth = np.array([[1, 1, 0, 2, 2]])
    >>> instance_scores(np.array([[1, 1, 0, 0, 0]]), truth)["recall"]
    0.5
    """
    ts = tuple(thresholds)
    counts = InstanceCounts(thresholds=ts if at in ts else (*ts, at)).update(pred, truth)
    i = counts.thresholds.index(at)
    sel = [counts.thresholds.index(t) for t in ts]
    tp, fp, fn = counts.tp[sel], counts.fp[sel], counts.fn[sel]
    denom = tp + fp + fn
    ap = float(np.mean(np.where(denom > 0, tp / np.maximum(denom, 1), 1.0)))
    return {
        "precision": float(counts.precision()[i]),
        "recall": float(counts.recall()[i]),
        "f1": float(counts.f1()[i]),
        "ap": ap,
    }
