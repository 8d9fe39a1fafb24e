"""Views of 3D volumes: orthogonal slices through a point and maximum-intensity projections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from unetkit.errors import DataError
from unetkit.viz.overlay import overlay, to_display

__all__ = ["max_projection", "orthogonal_slices"]


def _volume(volume: Any) -> np.ndarray:
    v = np.asarray(volume.detach().cpu() if hasattr(volume, "detach") else volume)
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4:
        raise DataError(f"expected a volume (Z, Y, X) or (C, Z, Y, X); got shape {v.shape}")
    return v


def _stretch(rgb: np.ndarray, factor: tuple[float, float]) -> np.ndarray:
    """Nearest-neighbour resize of a picture by per-axis factors (to show anisotropic voxels to scale)."""
    ry, rx = (max(1, round(f * n)) for f, n in zip(factor, rgb.shape[:2], strict=True))
    iy = np.minimum((np.arange(ry) / ry * rgb.shape[0]).astype(int), rgb.shape[0] - 1)
    ix = np.minimum((np.arange(rx) / rx * rgb.shape[1]).astype(int), rgb.shape[1] - 1)
    return rgb[iy][:, ix]


def _show(image: np.ndarray, labels: np.ndarray | None, alpha: float) -> np.ndarray:
    return overlay(image, labels, alpha=alpha) if labels is not None else to_display(image)


def orthogonal_slices(
    volume: Any,
    labels: Any | None = None,
    *,
    point: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    alpha: float = 0.4,
    pad: int = 2,
) -> np.ndarray:
    """Three orthogonal slices through ``point`` (default: the centre), laid out as in Fiji's orthogonal views.

    The XY slice sits top left, the ZY slice to its right, the XZ slice below it; with ``spacing`` the side
    views are stretched so that voxels show to scale. Labels, when given, are overlaid.

    Shape:
        ``volume (Z, Y, X)`` or ``(C, Z, Y, X)``, ``labels (Z, Y, X)`` -> ``uint8 (Y + Z' + pad, X + Z' + pad, 3)``.

    >>> orthogonal_slices(np.zeros((4, 6, 8)), pad=1).shape
    (11, 13, 3)
    """
    v = _volume(volume)
    z, y, x = v.shape[1:]
    lab = None if labels is None else np.asarray(labels)
    if lab is not None and lab.shape != (z, y, x):
        raise DataError(f"labels shape {lab.shape} differs from the volume's {(z, y, x)}")
    pz, py, px = point if point is not None else (z // 2, y // 2, x // 2)
    sz, sy, sx = spacing if spacing is not None else (1.0, 1.0, 1.0)
    xy = _show(v[:, pz], None if lab is None else lab[pz], alpha)
    xz = _stretch(_show(v[:, :, py], None if lab is None else lab[:, py], alpha), (sz / sx, 1.0))
    zy = _stretch(
        np.swapaxes(_show(v[:, :, :, px], None if lab is None else lab[:, :, px], alpha), 0, 1), (1.0, sz / sy)
    )
    out = np.full((y + xz.shape[0] + pad, x + zy.shape[1] + pad, 3), 255, np.uint8)
    out[:y, :x] = xy
    out[:y, x + pad :] = zy[:y]
    out[y + pad :, :x] = xz[:, :x]
    return out


def max_projection(volume: Any, labels: Any | None = None, *, axis: int = 0, alpha: float = 0.4) -> np.ndarray:
    """Maximum-intensity projection along a spatial ``axis``; labels are projected by their maximum too.

    Shape:
        ``volume (Z, Y, X)`` or ``(C, Z, Y, X)`` -> ``uint8`` picture of the two other axes.

    >>> v = np.zeros((3, 2, 2)); v[1, 0, 0] = 5
    >>> max_projection(v)[..., 0].tolist()
    [[255, 0], [0, 0]]
    """
    v = _volume(volume)
    if axis not in (0, 1, 2):
        raise DataError(f"axis={axis} is not a spatial axis of a volume; use 0 (Z), 1 (Y) or 2 (X)")
    mip = v.max(axis=axis + 1)
    lab = None if labels is None else np.asarray(labels).max(axis=axis)
    return _show(mip, lab, alpha)
