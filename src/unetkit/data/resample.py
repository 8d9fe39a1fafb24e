"""Resampling to a target voxel spacing: images by cubic splines, masks by nearest neighbour or one-hot.

One rule for training and prediction: the shape after resampling is ``round(shape * spacing / target)``
per axis, and an axis whose factor is within 1% of 1 is left alone (no blur for nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from unetkit.data.windows import fold_index

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
    from scipy import ndimage  # here, not at import: a prediction that resamples nothing skips 0.3 s of start-up

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


# ------------------------------------------------------------------------------------------ region by region
# The same resampling, one region at a time (prediction of images too large to resample whole). It is
# separable: a tensor-product spline interpolates one axis after another, each pass a 1D spline along that axis
# at the coordinates ``ndimage.zoom(grid_mode=True)`` uses, with its mirror boundary (numpy ``reflect``).

#: Extra input samples read on each side of a region for the cubic spline's prefilter (its influence decays
#: as 0.268 per sample: 8 samples leave < 3e-5 of a border artefact at a region's inner edges).
SPLINE_MARGIN = 8


def axis_coordinates(n_in: int, n_out: int, start: int, stop: int) -> np.ndarray:
    """Input coordinates of output samples ``[start, stop)`` when an axis of ``n_in`` samples becomes ``n_out``.

    >>> axis_coordinates(4, 8, 0, 3).tolist()
    [-0.25, 0.25, 0.75]
    """
    return (np.arange(start, stop, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def axis_orders(spacing: Sequence[float]) -> list[int]:
    """The interpolation order per axis: cubic, but linear on a strongly anisotropic axis of a 3D image (the
    rule of :func:`resample_image`: no spline ringing between distant slices)."""
    sp = np.asarray(spacing, dtype=np.float64)
    coarse = int(np.argmax(sp)) if sp.max() > 3 * sp.min() and len(sp) == 3 else None
    return [1 if a == coarse else 3 for a in range(len(sp))]


def interpolate_axis(
    values: np.ndarray, axis: int, coords: np.ndarray, order: int, offset: int, size: int
) -> np.ndarray:
    """Interpolate ``values`` along ``axis`` at image coordinates ``coords`` (cubic B-spline or linear).

    Args:
        values: a part of an image: index 0 along ``axis`` is image index ``offset``; it must hold every
            sample the interpolation taps (the caller reads a margin).
        axis: the axis to interpolate along.
        coords: image coordinates to sample at.
        order: 3 (cubic spline, prefiltered) or 1 (linear).
        offset: the image index of ``values``' first sample along ``axis``.
        size: the image's length along ``axis`` (taps past its ends are mirrored, as ``reflect``).

    Shape:
        ``values`` with ``len(coords)`` samples along ``axis``, float64.
    """
    data = np.asarray(values, dtype=np.float64)
    if order == 3:
        from scipy import ndimage

        data = ndimage.spline_filter1d(data, 3, axis=axis, mode="mirror")
        base = np.floor(coords).astype(np.int64)
        t = coords - base
        weights = [(1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6]
        taps = range(-1, 3)
    elif order == 1:
        base = np.floor(coords).astype(np.int64)
        t = coords - base
        weights, taps = [1 - t, t], range(2)
    else:
        raise ValueError(f"order must be 1 or 3, got {order}")
    shape = [1] * data.ndim
    shape[axis] = len(coords)
    out = np.zeros((*data.shape[:axis], len(coords), *data.shape[axis + 1 :]), np.float64)
    for w, k in zip(weights, taps, strict=True):
        idx = fold_index(base + k, size) - offset
        if idx.size and (idx.min() < 0 or idx.max() >= data.shape[axis]):
            raise ValueError("interpolate_axis: the values do not hold every tapped sample; read a wider region")
        out += np.take(data, idx, axis=axis) * w.reshape(shape)
    return out


class ResampledImage:
    """An image seen at another voxel spacing: slicing resamples only the region asked for.

    It resamples as :func:`resample_image` does (cubic; linear along a strongly anisotropic axis), reading
    the region's source samples plus :data:`SPLINE_MARGIN` on each side, so a tile costs O(tile) however
    large the image. Away from a region's inner edges it equals whole-image resampling to ~1e-5.

    Args:
        image: ``(C, *S)`` array-like (numpy, memory map, a lazy reader).
        spacing: the image's spacing; target: the spacing to see it at.

    Shape:
        ``(C, *resampled_shape(S, spacing, target))``, float32.

    Example:
        >>> img = np.random.default_rng(0).random((1, 40, 30)).astype(np.float32)
        >>> view = ResampledImage(img, (2.0, 1.0), (1.0, 1.0))
        >>> whole = resample_image(img, (2.0, 1.0), (1.0, 1.0))
        >>> view.shape == whole.shape, bool(np.abs(view[:, 30:50, 5:20] - whole[:, 30:50, 5:20]).max() < 1e-4)
        (True, True)
    """

    def __init__(self, image: Any, spacing: Sequence[float], target: Sequence[float]) -> None:
        self.image = image
        self.source_shape = tuple(int(n) for n in image.shape[1:])
        self.spatial = resampled_shape(self.source_shape, spacing, target)
        self.shape: tuple[int, ...] = (int(image.shape[0]), *self.spatial)
        self.dtype = np.dtype(np.float32)
        self.orders = axis_orders(spacing)
        self.spacing = tuple(float(t) for t in target)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        if any(not isinstance(k, slice) or k.step not in (None, 1) for k in key):
            raise TypeError("ResampledImage reads regions: index it with slices (no steps)")
        ranges = [k.indices(n)[:2] for k, n in zip(key[1:], self.spatial, strict=True)]
        plan: list[tuple[np.ndarray, int, int, int] | None] = []
        src: list[slice] = [key[0]]
        for (o0, o1), n_in, n_out, order in zip(ranges, self.source_shape, self.spatial, self.orders, strict=True):
            if n_in == n_out:
                plan.append(None)
                src.append(slice(o0, o1))
                continue
            coords = axis_coordinates(n_in, n_out, o0, o1)
            margin = 2 + (SPLINE_MARGIN if order == 3 else 0)
            lo = max(0, int(np.floor(coords.min())) - margin) if len(coords) else 0
            hi = min(n_in, int(np.floor(coords.max())) + margin + 1) if len(coords) else 0
            plan.append((coords, order, lo, n_in))
            src.append(slice(lo, hi))
        values: np.ndarray = np.asarray(self.image[tuple(src)], dtype=np.float64)
        for axis, step in enumerate(plan):
            if step is not None:
                coords, order, lo, n_in = step
                values = interpolate_axis(values, axis + 1, coords, order, lo, n_in)
        return values.astype(np.float32)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[(slice(None),) * self.ndim]
        return whole if dtype is None else whole.astype(dtype, copy=False)
