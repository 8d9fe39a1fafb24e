"""Surface distances with voxel spacing: Hausdorff distance (95th percentile) and mean surface distance.

The surface of a mask is its set of foreground voxels with a background face neighbour. Distances from
each surface voxel of one mask to the nearest surface voxel of the other come from a Euclidean distance
transform with the voxel ``spacing`` (scipy), so results are in physical units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

from unetkit.errors import DataError

__all__ = ["SurfaceDistances", "surface_distances", "surface_distances_per_class"]


class SurfaceDistances(NamedTuple):
    """``hd95``: max of the two directed 95th-percentile distances (as MONAI's ``percentile=95``);
    ``hd``: the Hausdorff distance (max); ``msd``: mean of all surface-to-surface distances, both directions
    (the symmetric average surface distance). 0 when both masks are empty, ``inf`` when only one is."""

    hd95: float
    hd: float
    msd: float


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or any(not np.isfinite(s) or s <= 0 for s in sp):
        raise DataError(f"spacing {spacing} does not fit a {ndim}D mask; give {ndim} positive numbers, e.g. 1.0")
    return sp


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def _directed(from_surface: np.ndarray, to_surface: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    dist = ndimage.distance_transform_edt(~to_surface, sampling=spacing)
    return np.asarray(dist)[from_surface]


def surface_distances(pred: Any, truth: Any, spacing: Sequence[float] | None = None) -> SurfaceDistances:
    """Hausdorff 95, Hausdorff and mean surface distance between two binary masks (non-zero = object).

    Args:
        pred: predicted mask, 2D or 3D.
        truth: true mask, same shape.
        spacing: physical size of a voxel per axis (default 1 per axis, i.e. pixels).

    Shape:
        ``(*spatial)``; spacing has ``len(spatial)`` entries.

    >>> a = np.zeros((1, 8), int); a[0, 1] = 1
    >>> b = np.zeros((1, 8), int); b[0, 4] = 1
    >>> surface_distances(a, b, spacing=(1.0, 0.5))
    SurfaceDistances(hd95=1.5, hd=1.5, msd=1.5)
    """
    p = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred) != 0
    t = np.asarray(truth.detach().cpu() if hasattr(truth, "detach") else truth) != 0
    if p.shape != t.shape:
        raise DataError(f"prediction shape {p.shape} differs from truth shape {t.shape}; they must be equal")
    sp = _spacing(spacing, p.ndim)
    if not p.any() and not t.any():
        return SurfaceDistances(0.0, 0.0, 0.0)
    if not p.any() or not t.any():
        return SurfaceDistances(float("inf"), float("inf"), float("inf"))
    sp_surface, st_surface = _surface(p), _surface(t)
    d_pt = _directed(sp_surface, st_surface, sp)
    d_tp = _directed(st_surface, sp_surface, sp)
    hd95 = max(float(np.percentile(d_pt, 95)), float(np.percentile(d_tp, 95)))
    hd = max(float(d_pt.max()), float(d_tp.max()))
    msd = float(np.concatenate([d_pt, d_tp]).mean())
    return SurfaceDistances(hd95, hd, msd)


def surface_distances_per_class(
    pred: Any, truth: Any, num_classes: int, spacing: Sequence[float] | None = None, ignore_index: int | None = None
) -> list[SurfaceDistances]:
    """:func:`surface_distances` of each class ``k`` (masks ``== k``) of two label images; index = class.

    Pixels where the truth is ``ignore_index`` are set to background in both masks.

    Shape:
        ``(*spatial)`` label images -> a list of ``num_classes`` results.

    >>> lab = np.array([[0, 1, 1, 2]])
    >>> [round(d.msd, 2) for d in surface_distances_per_class(lab, lab, 3)]
    [0.0, 0.0, 0.0]
    """
    p = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred)
    t = np.asarray(truth.detach().cpu() if hasattr(truth, "detach") else truth)
    valid = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    return [surface_distances((p == k) & valid, (t == k) & valid, spacing) for k in range(num_classes)]
