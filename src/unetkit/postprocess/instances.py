"""Instance separation: turn a foreground mask (or probability) into one label per object.

``components`` labels connected components; touching objects stay merged. ``distance`` runs a watershed on
the (spacing-aware) distance transform from one marker per object centre, the classic way to split touching
round objects; ``probability`` runs it on the foreground probability from markers where the network is
confident, which follows the network's own evidence for the gap between two objects. ``boundary`` reads the
output of a network trained on interior/boundary classes (:mod:`unetkit.data.targets`): the interiors'
connected components seed a watershed that grows them over the boundary pixels, so objects that touch
come out separate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from unetkit.errors import DataError

__all__ = ["INSTANCE_METHODS", "instances_from_boundary", "label_components", "separate_instances"]

INSTANCE_METHODS = ("components", "distance", "probability", "boundary")


def label_components(mask: Any, connectivity: int = 1) -> np.ndarray:
    """Connected components of a mask's non-zero pixels, ``int32``, 0 = background.

    Shape:
        ``(*spatial)`` -> ``int32 (*spatial)``.

    >>> label_components(np.array([[1, 1, 0, 1]])).tolist()
    [[1, 1, 0, 2]]
    """
    m = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask) != 0
    labels, _ = ndimage.label(m, structure=ndimage.generate_binary_structure(m.ndim, connectivity))
    return labels.astype(np.int32, copy=False)


def instances_from_boundary(
    prediction: Any, *, threshold: float = 0.5, min_size: int = 0, connectivity: int = 1
) -> np.ndarray:
    """Instances from an interior/boundary prediction: seeded watershed from the interiors.

    Args:
        prediction: class labels ``(*S)`` in {0 background, 1 interior, 2 boundary}, or class probabilities
            ``(3, *S)`` in that order.
        threshold: probability of "not background" above which a pixel belongs to an object, and of
            "interior" above which it seeds one.
        min_size: objects smaller than this many pixels are dropped.
        connectivity: neighbourhood of seeds and watershed.

    Shape:
        ``(*S)`` or ``(3, *S)`` -> ``int32 (*S)``

    >>> lab = np.zeros((5, 8), int); lab[1:4, 1:7] = 2; lab[2, 2] = 1; lab[2, 5] = 1
    >>> instances_from_boundary(lab).max()
    np.int32(2)
    """
    from skimage.segmentation import watershed

    arr = np.asarray(prediction.detach().cpu() if hasattr(prediction, "detach") else prediction)
    if arr.dtype.kind == "f":
        if arr.shape[0] != 3:
            raise DataError(f"boundary instances need 3 class probabilities (K, *S), got shape {arr.shape}")
        objects = arr[0] < 1 - threshold
        interior = arr[1] > threshold
        height = -arr[1]
    else:
        objects, interior = arr > 0, arr == 1
        height = -np.asarray(ndimage.distance_transform_edt(objects), np.float32)
    structure = ndimage.generate_binary_structure(objects.ndim, connectivity)
    seeds, _ = ndimage.label(interior & objects, structure=structure)
    labels = watershed(height, seeds, mask=objects, connectivity=connectivity)
    rest, _ = ndimage.label(objects & (labels == 0), structure=structure)  # objects with no interior left
    labels = np.where(rest > 0, rest + labels.max(), labels).astype(np.int32, copy=False)
    if min_size > 0:
        sizes = np.bincount(labels.reshape(-1))
        labels = np.where(sizes[labels] < min_size, 0, labels).astype(np.int32)
    return _relabel(labels)


def separate_instances(
    foreground: Any,
    method: Literal["components", "distance", "probability", "boundary"] = "distance",
    *,
    threshold: float = 0.5,
    min_distance: float = 3.0,
    seed_threshold: float = 0.9,
    spacing: Sequence[float] | None = None,
    min_size: int = 0,
    connectivity: int = 1,
) -> np.ndarray:
    """Split a foreground into instances.

    Args:
        foreground: a binary mask (non-zero = object) or, for ``method="probability"`` (and allowed for the
            others), a foreground probability map in ``[0, 1]``, 2D or 3D.
        method: ``"components"``, ``"distance"``, ``"probability"`` or ``"boundary"`` (see the module
            docstring; ``boundary`` takes interior/boundary labels or probabilities, see
            :func:`instances_from_boundary`).
        threshold: probability above which a pixel is foreground.
        min_distance: for ``"distance"``, the smallest distance between two object centres (physical units
            with ``spacing``); larger values merge more.
        seed_threshold: for ``"probability"``, the probability above which connected cores seed objects.
        spacing: voxel size per axis for the distance transform.
        min_size: components smaller than this many pixels are dropped at the end.
        connectivity: neighbourhood for components and watershed.

    Shape:
        ``(*spatial)`` -> ``int32 (*spatial)`` instance ids (0 = background).

    >>> two = np.zeros((9, 17), bool)
    >>> yy, xx = np.mgrid[:9, :17]
    >>> two |= (yy - 4) ** 2 + (xx - 4) ** 2 <= 16; two |= (yy - 4) ** 2 + (xx - 11) ** 2 <= 16
    >>> int(label_components(two).max()), int(separate_instances(two, "distance").max())
    (1, 2)
    """
    from skimage.segmentation import watershed

    if method not in INSTANCE_METHODS:
        raise DataError(f"instance method {method!r} is unknown; use one of {', '.join(INSTANCE_METHODS)}")
    if method == "boundary":
        return instances_from_boundary(foreground, threshold=threshold, min_size=min_size, connectivity=connectivity)
    arr = np.asarray(foreground.detach().cpu() if hasattr(foreground, "detach") else foreground)
    if arr.ndim < 2:
        raise DataError(f"foreground has shape {arr.shape}; pass a 2D image or a 3D volume")
    prob = arr.astype(np.float32) if arr.dtype.kind == "f" else (arr != 0).astype(np.float32)
    mask = prob > threshold
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    if method == "components":
        labels = label_components(mask, connectivity)
    elif method == "distance":
        sp = None if spacing is None else tuple(float(s) for s in spacing)
        dist = np.asarray(ndimage.distance_transform_edt(mask, sampling=sp))
        step = np.array(sp if sp is not None else (1.0,) * mask.ndim)
        size = tuple(int(2 * np.ceil(min_distance / s) + 1) for s in step)
        # plateaus of the local maximum are merged into one marker by labelling them
        peaks = (dist == ndimage.maximum_filter(dist, size=size)) & mask
        markers, _ = ndimage.label(peaks, structure=np.ones((3,) * mask.ndim, bool))
        labels = watershed(-dist, markers, mask=mask, connectivity=connectivity)
    else:
        seeds, _ = ndimage.label(prob > max(seed_threshold, threshold), structure=structure)
        labels = watershed(-prob, seeds, mask=mask, connectivity=connectivity)
        # objects without a confident core still count as objects
        rest, _ = ndimage.label(mask & (labels == 0), structure=structure)
        labels = np.where(rest > 0, rest + labels.max(), labels)
    labels = labels.astype(np.int32, copy=False)
    if min_size > 0:
        sizes = np.bincount(labels.reshape(-1))
        labels = np.where(sizes[labels] < min_size, 0, labels).astype(np.int32)
    return _relabel(labels)


def _relabel(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids != 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[labels]
