"""Streaming confusion counts and the overlap scores computed from them.

Scores are never averaged over tiles or images: counts are summed, then Dice, IoU, precision and recall come
from the summed counts, so a volume evaluated tile by tile gets exactly the score of the whole volume.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unetkit.errors import DataError

__all__ = ["ConfusionMatrix", "confusion_matrix", "scores_from_matrix"]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        return x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_matrix(pred: Any, target: Any, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Count ``(truth, prediction)`` label pairs.

    Args:
        pred: predicted class labels (numpy array or torch tensor of integers), any number of dims.
        target: true class labels, same shape as ``pred``.
        num_classes: number of classes ``K``; labels must lie in ``[0, K)``.
        ignore_index: a truth label whose pixels are left out of the counts (e.g. 255 for "unlabelled").

    Returns:
        ``int64`` array ``[K, K]``: row = truth class, column = predicted class.

    Shape:
        ``pred``, ``target``: ``(*spatial)`` or ``(B, *spatial)``; output ``(K, K)``.

    >>> confusion_matrix(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]), 2)
    array([[1, 1],
           [0, 2]])
    """
    if num_classes < 1:
        raise DataError(f"num_classes={num_classes} is not a class count; pass an integer >= 1")
    if hasattr(pred, "detach") and hasattr(target, "detach") and pred.device == target.device:
        return _confusion_torch(pred, target, num_classes, ignore_index)
    p = _to_numpy(pred)
    t = _to_numpy(target)
    if p.shape != t.shape:
        raise DataError(f"prediction shape {p.shape} differs from truth shape {t.shape}; they must be equal")
    for name, a in (("prediction", p), ("truth", t)):
        if a.dtype.kind not in "iub":
            raise DataError(f"{name} labels have dtype {a.dtype}", fix="pass integer class labels (argmax the scores)")
    p = p.reshape(-1).astype(np.int64, copy=False)
    t = t.reshape(-1).astype(np.int64, copy=False)
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    _check_range(p, t, num_classes, ignore_index)
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _check_range(p: Any, t: Any, num_classes: int, ignore_index: int | None) -> None:
    for name, a in (("prediction", p), ("truth", t)):
        if a.numel() if hasattr(a, "numel") else a.size:
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi >= num_classes:
                hint = f" or set ignore_index={hi}" if name == "truth" and ignore_index is None else ""
                raise DataError(
                    f"{name} labels span [{lo}, {hi}] but num_classes={num_classes} allows [0, {num_classes - 1}]",
                    fix=f"pass the right num_classes{hint}",
                )


def _confusion_torch(pred: Any, target: Any, num_classes: int, ignore_index: int | None) -> np.ndarray:
    import torch

    if pred.shape != target.shape:
        raise DataError(f"prediction shape {tuple(pred.shape)} differs from truth shape {tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise DataError("labels must be integer tensors; argmax the scores before counting")
    p = pred.reshape(-1).long()
    t = target.reshape(-1).long()
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    _check_range(p, t, num_classes, ignore_index)
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


def scores_from_matrix(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``dice``, ``iou``, ``precision``, ``recall`` from a ``[K, K]`` matrix (nan where undefined).

    A class absent from both truth and prediction has an undefined (nan) Dice/IoU, so means with
    :func:`numpy.nanmean` skip it instead of rewarding or punishing an empty class.

    >>> s = scores_from_matrix(np.array([[1, 1], [0, 2]]))
    >>> [round(float(v), 3) for v in s["dice"]]
    [0.667, 0.8]
    """
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    fp = m.sum(axis=0) - tp
    fn = m.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "dice": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
            "iou": np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan),
            "precision": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
            "recall": np.where(tp + fn > 0, tp / (tp + fn), np.nan),
        }


class ConfusionMatrix:
    """Accumulates a ``[K, K]`` confusion matrix over batches, tiles, images or volumes.

    Args:
        num_classes: number of classes ``K``.
        ignore_index: truth label left out of the counts.

    Shape:
        ``update(pred, target)``: two integer label arrays of equal shape ``(*spatial)`` or ``(B, *spatial)``,
        2D or 3D alike; ``matrix``: ``(K, K)``, rows truth, columns prediction.

    Example (2D, then a 3D volume added to the same counts):

    >>> cm = ConfusionMatrix(2)
    >>> _ = cm.update(np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 1]]))
    >>> cm.dice().round(3).tolist()
    [0.667, 0.8]
    >>> _ = cm.update(np.ones((2, 2, 2), int), np.ones((2, 2, 2), int))
    >>> cm.matrix.tolist()
    [[1, 1], [0, 10]]
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if int(num_classes) < 1:
            raise DataError(f"num_classes={num_classes} is not a class count; pass an integer >= 1")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """The accumulated ``int64 [K, K]`` counts (a copy): row = truth, column = prediction."""
        return self._matrix.copy()

    def update(self, pred: Any, target: Any) -> ConfusionMatrix:
        """Add the counts of one prediction/truth pair; returns ``self`` for chaining."""
        self._matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        return self

    def add_matrix(self, matrix: np.ndarray) -> ConfusionMatrix:
        """Add precomputed ``[K, K]`` counts (e.g. gathered from another process)."""
        m = np.asarray(matrix)
        if m.shape != self._matrix.shape:
            raise DataError(f"matrix shape {m.shape} differs from this ConfusionMatrix's {self._matrix.shape}")
        self._matrix += m.astype(np.int64)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (same ``num_classes``); returns ``self``."""
        if other.num_classes != self.num_classes:
            raise DataError(f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one")
        return self.add_matrix(other._matrix)

    def reset(self) -> None:
        """Zero the counts."""
        self._matrix[:] = 0

    @property
    def total(self) -> int:
        """Number of counted (non-ignored) pixels."""
        return int(self._matrix.sum())

    def dice(self) -> np.ndarray:
        """Per-class Dice ``2TP / (2TP + FP + FN)``, ``[K]``, nan for a class absent from truth and prediction."""
        return scores_from_matrix(self._matrix)["dice"]

    def iou(self) -> np.ndarray:
        """Per-class IoU (Jaccard) ``TP / (TP + FP + FN)``, ``[K]``."""
        return scores_from_matrix(self._matrix)["iou"]

    def precision(self) -> np.ndarray:
        """Per-class precision ``TP / (TP + FP)``, ``[K]``, nan where nothing was predicted."""
        return scores_from_matrix(self._matrix)["precision"]

    def recall(self) -> np.ndarray:
        """Per-class recall (sensitivity) ``TP / (TP + FN)``, ``[K]``, nan where the class is absent in truth."""
        return scores_from_matrix(self._matrix)["recall"]

    def accuracy(self) -> float:
        """Fraction of counted pixels labelled correctly (nan when nothing was counted)."""
        total = self._matrix.sum()
        return float(np.trace(self._matrix) / total) if total else float("nan")

    def mean(self, score: str = "dice", include_background: bool = False) -> float:
        """Mean of a per-class score over classes, skipping undefined ones; class 0 left out by default.

        With one class only (``K == 1``) the background is always included.
        """
        values = scores_from_matrix(self._matrix)[score]
        if not include_background and self.num_classes > 1:
            values = values[1:]
        if np.all(np.isnan(values)):
            return float("nan")
        return float(np.nanmean(values))

    def summary(self, include_background: bool = False) -> dict[str, Any]:
        """Dict of mean and per-class scores, JSON-ready (nan kept as float nan)."""
        scores = scores_from_matrix(self._matrix)
        out: dict[str, Any] = {"accuracy": self.accuracy()}
        for name, values in scores.items():
            out[name] = self.mean(name, include_background)
            out[f"{name}_per_class"] = [float(v) for v in values]
        return out

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, total={self.total})"
