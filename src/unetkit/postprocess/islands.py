"""Clean a label image per class: remove small islands, fill small holes, keep the largest component.

Every function works on 2D and 3D label images alike and takes sizes in pixels/voxels, or in physical units
(µm², mm³, ...) when ``spacing`` is given. Pixels taken from a class get the label of the nearest pixel that
was kept (for a binary mask: the surrounding background), so multi-class images stay consistent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from unetkit.errors import DataError

__all__ = ["fill_holes", "keep_largest_component", "remove_small_islands", "size_in_pixels"]


def _as_labels(labels: Any) -> np.ndarray:
    arr = labels.detach().cpu().numpy() if hasattr(labels, "detach") else np.asarray(labels)
    if arr.dtype.kind not in "iub":
        raise DataError(f"labels have dtype {arr.dtype}; pass integer class labels (argmax the probabilities)")
    if arr.ndim < 2:
        raise DataError(f"labels have shape {arr.shape}; pass a 2D image or a 3D volume")
    return arr


def size_in_pixels(size: float, spacing: Sequence[float] | None, ndim: int) -> float:
    """Convert a size to pixels: unchanged without ``spacing``, else divided by the voxel volume.

    >>> size_in_pixels(10.0, (0.5, 0.5), 2)
    40.0
    """
    if size < 0:
        raise DataError(f"size {size} is negative; give a size >= 0")
    if spacing is None:
        return float(size)
    if len(spacing) != ndim or any(s <= 0 for s in spacing):
        raise DataError(f"spacing {tuple(spacing)} does not fit {ndim}D labels; give {ndim} positive numbers")
    return float(size / np.prod(spacing))


def _classes(arr: np.ndarray, classes: Iterable[int] | None, background: int) -> list[int]:
    if classes is None:
        return [int(c) for c in np.unique(arr) if c != background]
    return [int(c) for c in classes]


def _fill_from_nearest(arr: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Give every removed pixel the label of the nearest pixel that was not removed."""
    if not removed.any():
        return arr
    if removed.all():
        return np.zeros_like(arr)
    _, idx = ndimage.distance_transform_edt(removed, return_indices=True)
    return arr[tuple(idx)]


def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    labels, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, connectivity))
    sizes = np.bincount(labels.reshape(-1), minlength=n + 1)
    return labels, sizes


def remove_small_islands(
    labels: Any,
    min_size: float,
    *,
    classes: Iterable[int] | None = None,
    spacing: Sequence[float] | None = None,
    connectivity: int = 1,
    background: int = 0,
) -> np.ndarray:
    """Remove connected components smaller than ``min_size`` of each class.

    Args:
        labels: integer class labels, 2D or 3D.
        min_size: smallest size kept, in pixels (or physical units with ``spacing``).
        classes: classes to clean (default: every class present except ``background``).
        spacing: voxel size per axis; makes ``min_size`` physical.
        connectivity: 1 = face neighbours, ``ndim`` = all neighbours.
        background: the label that is never cleaned itself.

    Shape:
        ``(*spatial)`` -> ``(*spatial)``, same dtype.

    >>> lab = np.zeros((4, 6), int); lab[0, 0] = 1; lab[1:4, 2:6] = 1
    >>> remove_small_islands(lab, 2)[0, 0], remove_small_islands(lab, 2).sum()
    (np.int64(0), np.int64(12))
    """
    arr = _as_labels(labels)
    threshold = size_in_pixels(min_size, spacing, arr.ndim)
    removed = np.zeros(arr.shape, bool)
    for k in _classes(arr, classes, background):
        comp, sizes = _components(arr == k, connectivity)
        small = sizes < threshold
        small[0] = False
        removed |= small[comp]
    return _fill_from_nearest(arr, removed)


def keep_largest_component(
    labels: Any, *, classes: Iterable[int] | None = None, connectivity: int = 1, background: int = 0
) -> np.ndarray:
    """Keep only the largest connected component of each class (e.g. one organ per scan).

    Shape:
        ``(*spatial)`` -> ``(*spatial)``.

    >>> lab = np.array([[1, 0, 1, 1]])
    >>> keep_largest_component(lab).tolist()
    [[0, 0, 1, 1]]
    """
    arr = _as_labels(labels)
    removed = np.zeros(arr.shape, bool)
    for k in _classes(arr, classes, background):
        comp, sizes = _components(arr == k, connectivity)
        if sizes.size > 2:
            sizes[0] = 0
            removed |= (comp > 0) & (comp != int(np.argmax(sizes)))
    return _fill_from_nearest(arr, removed)


def fill_holes(
    labels: Any,
    max_size: float | None = None,
    *,
    classes: Iterable[int] | None = None,
    spacing: Sequence[float] | None = None,
    connectivity: int = 1,
    background: int = 0,
) -> np.ndarray:
    """Fill the holes of each class up to ``max_size`` (all holes when ``None``).

    A hole of class ``k`` is a connected region of other labels that ``k`` encloses: it does not touch the
    image border. Classes are processed in increasing order, so a later class can fill over an earlier one.

    Shape:
        ``(*spatial)`` -> ``(*spatial)``.

    >>> lab = np.ones((5, 5), int); lab[2, 2] = 0; lab[0, 0] = 0
    >>> out = fill_holes(lab, 1)
    >>> int(out[2, 2]), int(out[0, 0])
    (1, 0)
    """
    arr = _as_labels(labels).copy()
    threshold = np.inf if max_size is None else size_in_pixels(max_size, spacing, arr.ndim)
    for k in _classes(arr, classes, background):
        comp, sizes = _components(arr != k, connectivity)
        border = np.zeros(arr.shape, bool)
        for axis in range(arr.ndim):
            border[(slice(None),) * axis + (0,)] = True
            border[(slice(None),) * axis + (-1,)] = True
        fill = sizes <= threshold
        fill[0] = False
        fill[np.unique(comp[border])] = False
        arr[fill[comp]] = k
    return arr
