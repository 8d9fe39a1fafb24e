"""Flip test-time augmentation: run every flip of the tile, flip the answers back, average probabilities.

Opt-in because it costs ``2**spatial_dims`` network passes per tile (4 in 2D, 8 in 3D).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def flip_sets(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes (as axes of a ``(B, C, *S)`` batch), the empty one first.

    >>> flip_sets(2)
    [(), (2,), (3,), (2, 3)]
    >>> len(flip_sets(3))
    8
    """
    axes = range(2, 2 + spatial_dims)
    return [c for r in range(spatial_dims + 1) for c in itertools.combinations(axes, r)]


def flip_average(forward: Callable[[T], T], x: T, spatial_dims: int, flip: Callable[[T, tuple[int, ...]], T]) -> T:
    """The mean of ``flip(forward(flip(x, axes)), axes)`` over every flip; ``forward`` returns probabilities.

    Works for any array type: ``flip`` is ``torch.flip`` or ``numpy.flip`` (called as ``flip(x, axes)``).

    Shape:
        ``x (B, C, *S) -> (B, K, *S_out)``

    >>> import numpy as np
    >>> x = np.arange(6.0).reshape(1, 1, 2, 3)
    >>> bool((flip_average(lambda t: t * 2, x, 2, lambda t, a: np.flip(t, a) if a else t) == 2 * x).all())
    True
    """
    sets = flip_sets(spatial_dims)
    total = forward(x)
    for axes in sets[1:]:
        total = total + flip(forward(flip(x, axes)), axes)  # type: ignore[operator]
    return total / len(sets)  # type: ignore[operator, no-any-return, return-value]
