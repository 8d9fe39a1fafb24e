"""Resampling to a target voxel spacing: images by cubic splines, masks by nearest neighbour or one-hot.

One rule for training and prediction: the shape after resampling is ``round(shape * spacing / target)``
per axis, and an axis whose factor is within 1% of 1 is left alone (no blur for nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: Factors this close to 1 leave an axis as it is.
TOLERANCE = 0.01


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """The spatial shape of an image of ``shape`` and ``spacing`` resampled to ``target``.

    >>> resampled_shape((30, 512, 512), (50.0, 4.0, 4.0), (25.0, 4.0, 4.0))
    (60, 512, 512)
    """
    out = []
    for n, s, t in zip(shape, spacing, target, strict=True):
        f = float(s) / float(t)
        out.append(int(n) if abs(f - 1) <= TOLERANCE else max(1, round(int(n) * f)))
    return tuple(out)


def needs_resampling(spacing: Sequence[float] | None, target: Sequence[float] | None) -> bool:
    """Whether an image of ``spacing`` must be resampled to ``target`` (``None`` on either side: no)."""
    if spacing is None or target is None:
        return False
    return any(abs(float(s) / float(t) - 1) > TOLERANCE for s, t in zip(spacing, target, strict=True))


def _zoom(array: np.ndarray, out_shape: Sequence[int], order: int) -> np.ndarray:
    factors = [o / i for o, i in zip(out_shape, array.shape, strict=True)]
    result = ndimage.zoom(array, factors, order=order, mode="mirror", grid_mode=True, prefilter=order > 1)
    return result


def resample_image(
    image: np.ndarray, spacing: Sequence[float], target: Sequence[float], *, order: int = 3
) -> np.ndarray:
    """Resample a ``(C, *S)`` image to ``target`` spacing (float32).

    Cubic (``order=3``) by default. On a strongly anisotropic axis (factor > 3 between it and the finest) that
    axis is resampled linearly after the others, so no spline ringing is invented between distant slices.

    Shape:
        ``(C, *S) -> (C, *resampled_shape(S, spacing, target))``

    >>> img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> resample_image(img, (2.0, 1.0), (1.0, 1.0)).shape
    (1, 8, 4)
    """
    image = np.asarray(image, dtype=np.float32)
    spatial = image.shape[1:]
    out_shape = resampled_shape(spatial, spacing, target)
    if out_shape == tuple(spatial):
        return image
    sp = np.asarray(spacing, dtype=np.float64)
    coarse = int(np.argmax(sp)) if sp.max() > 3 * sp.min() and len(sp) == 3 else None
    channels = []
    for c in image:
        if coarse is None:
            channels.append(_zoom(c, out_shape, order))
        else:
            first = [out_shape[a] if a != coarse else spatial[coarse] for a in range(len(spatial))]
            c = _zoom(c, first, order) if tuple(first) != tuple(spatial) else c
            channels.append(_zoom(c, out_shape, min(order, 1)) if tuple(first) != out_shape else c)
    return np.stack(channels).astype(np.float32, copy=False)


def resample_mask(
    mask: np.ndarray,
    spacing: Sequence[float],
    target: Sequence[float],
    *,
    num_classes: int | None = None,
    mode: str = "nearest",
) -> np.ndarray:
    """Resample a label mask ``(*S)`` to ``target`` spacing.

    ``mode="nearest"`` copies the nearest label (fast, fine for up-sampling); ``"onehot"`` interpolates each
    class's indicator linearly and takes the arg-max (smoother borders when down-sampling; costs one float
    volume per class). Values outside ``0..num_classes-1`` (an ignore index) survive either way.

    >>> m = np.array([[0, 1], [1, 1]])
    >>> resample_mask(m, (1.0, 1.0), (0.5, 0.5)).tolist()[0]
    [0, 0, 1, 1]
    """
    mask = np.asarray(mask)
    out_shape = resampled_shape(mask.shape, spacing, target)
    if out_shape == tuple(mask.shape):
        return mask
    if mode == "nearest":
        return _zoom(mask, out_shape, 0).astype(mask.dtype, copy=False)
    if mode != "onehot":
        raise ValueError(f"mode must be 'nearest' or 'onehot', got {mode!r}")
    values = np.unique(mask)
    best = np.full(out_shape, -np.inf, np.float32)
    result = np.zeros(out_shape, mask.dtype)
    for v in values:
        score = _zoom((mask == v).astype(np.float32), out_shape, 1)
        take = score > best
        best[take], result[take] = score[take], v
    return result


def resample_probabilities(proba: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample ``(K, *S)`` class probabilities to ``shape`` linearly (prediction back on the input grid).

    Shape:
        ``(K, *S) -> (K, *shape)``
    """
    if tuple(proba.shape[1:]) == tuple(shape):
        return proba
    return np.stack([_zoom(p, shape, 1) for p in proba]).astype(np.float32, copy=False)
