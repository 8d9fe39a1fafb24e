"""Windows that may run over the image border: the one mirroring rule, and the one window reader.

Whatever lies outside an image is its mirror image about the centres of the border pixels, without
repeating the edge pixel (numpy's ``np.pad(mode="reflect")``: ``... 2 1 | 0 1 2 ... n-1 | n-2 ...``), as
in the U-Net paper's overlap-tile strategy. Training patches (:class:`~unetkit.data.PatchSampler`),
augmentation (``grid_sample`` is called so that it reflects the same way), prediction tiles and Dask
blocks all read through :func:`read_window`, so a network's context at the image border holds the same
pixels when it is trained as when it predicts. See docs/design.md, "Border mirroring".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

import numpy as np

_Index = TypeVar("_Index")


def fold_index(index: _Index, size: int) -> _Index:
    """Fold coordinates (any integers) into ``[0, size)`` by mirroring without repeating the edge.

    The same as ``np.pad(..., mode="reflect")``, however far outside the image a coordinate lies; an axis
    of one pixel maps everything to 0. Works on ints, numpy arrays and torch tensors alike.

    Shape:
        any shape in, the same shape out.

    >>> fold_index(np.arange(-3, 7), 4).tolist()
    [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    >>> fold_index(-1, 1)
    0
    """
    if size < 1:
        raise ValueError(f"cannot fold coordinates into an axis of size {size}")
    value: Any = index
    if size == 1:
        return cast(_Index, value * 0)
    last = size - 1
    return cast(_Index, last - abs(value % (2 * last) - last))


def window_indices(start: int, length: int, size: int) -> np.ndarray:
    """The image indices of the window ``start .. start + length - 1`` along an axis of ``size`` pixels.

    >>> window_indices(-2, 8, 4).tolist()
    [2, 1, 0, 1, 2, 3, 2, 1]
    """
    return fold_index(np.arange(int(start), int(start) + int(length)), int(size))


def read_window(array: Any, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Read the window ``[start, start + size)`` of the trailing ``len(size)`` axes of ``array``, mirrored.

    Leading axes (channels) are read whole. Only the bounding box of the needed pixels is read, with one
    slicing call, so ``array`` may be anything with ``.shape`` and slicing by a tuple of slices: a numpy
    array, a memory map, a zarr array, a dask array or unetkit's lazy readers. A window that lies inside
    the image may come back as a view of ``array`` (copy it before writing to it).

    Args:
        array: ``(..., *S)`` array-like.
        start: the window's first pixel per trailing axis (may be negative).
        size: the window's size per trailing axis.

    Returns:
        The window as a numpy array.

    Shape:
        ``(..., *S) -> (..., *size)``

    >>> read_window(np.arange(5)[None], (-2,), (9,)).tolist()
    [[2, 1, 0, 1, 2, 3, 4, 3, 2]]
    >>> read_window(np.arange(12).reshape(3, 4), (-1, 2), (2, 3)).tolist()
    [[6, 7, 6], [2, 3, 2]]
    """
    shape = tuple(int(s) for s in array.shape)
    n = len(size)
    if len(start) != n or n > len(shape):
        raise ValueError(f"window start {tuple(start)} / size {tuple(size)} do not fit an array of shape {shape}")
    lead = len(shape) - n
    indices = [window_indices(a, b, s) for a, b, s in zip(start, size, shape[lead:], strict=True)]
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)
    block = np.asarray(array[(slice(None),) * lead + box])
    for axis, (i, sl) in enumerate(zip(indices, box, strict=True)):
        local = i - sl.start
        if not (len(local) == block.shape[lead + axis] and np.array_equal(local, np.arange(len(local)))):
            block = np.take(block, local, axis=lead + axis)
    return block
