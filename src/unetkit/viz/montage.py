"""Montages: many pictures in one grid image."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from unetkit.errors import DataError
from unetkit.viz._save import save_rgb
from unetkit.viz.overlay import to_display

__all__ = ["montage", "save_montage"]


def _as_rgb(tile: np.ndarray) -> np.ndarray:
    a = np.asarray(tile)
    if a.ndim == 3 and a.shape[-1] == 3 and a.dtype == np.uint8:
        return a
    return to_display(a)


def montage(tiles: Sequence[np.ndarray], ncols: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Arrange pictures in a grid, row by row; smaller ones are centred in their cell.

    Args:
        tiles: ``uint8 (H, W, 3)`` pictures, or images that :func:`unetkit.viz.overlay.to_display` accepts.
        ncols: columns (default: about square).
        pad: pixels between cells.
        fill: grey level of the gaps.

    Shape:
        ``n x (H_i, W_i, 3)`` -> ``uint8 (rows * (H + pad) - pad, ncols * (W + pad) - pad, 3)``.

    >>> montage([np.zeros((2, 3, 3), np.uint8)] * 3, ncols=2, pad=1).shape
    (5, 7, 3)
    """
    if not tiles:
        raise DataError("montage needs at least one picture")
    rgb = [_as_rgb(t) for t in tiles]
    n = len(rgb)
    cols = ncols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h = max(t.shape[0] for t in rgb)
    w = max(t.shape[1] for t in rgb)
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), fill, np.uint8)
    for i, t in enumerate(rgb):
        r, c = divmod(i, cols)
        y = r * (h + pad) + (h - t.shape[0]) // 2
        x = c * (w + pad) + (w - t.shape[1]) // 2
        out[y : y + t.shape[0], x : x + t.shape[1]] = t
    return out


def save_montage(path: str | os.PathLike[str], tiles: Sequence[np.ndarray], **kwargs: int | None) -> None:
    """Write :func:`montage` as a PNG, atomically."""
    save_rgb(path, montage(tiles, **kwargs))  # type: ignore[arg-type]
