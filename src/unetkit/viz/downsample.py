"""Pictures of images of any size: the stride that fits a longest side, and the grey picture read strided.

An overlay of a huge image is drawn on a subsampled copy (every ``step``-th row and column, longest side at
most ``max_side``); the image is read back in strided row blocks, so memory holds the small picture and one
block, never the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["MAX_SIDE", "grey_preview", "preview_step"]

MAX_SIDE = 2048
"""Longest side of the overlays ``unetkit predict`` writes."""


def preview_step(spatial: Sequence[int], max_side: int = MAX_SIDE) -> int:
    """The stride that brings the longest side of ``spatial`` to at most ``max_side``.

    >>> preview_step((5000, 300)), preview_step((100, 80))
    (3, 1)
    """
    return max(1, math.ceil(max(int(s) for s in spatial) / max_side))


def grey_preview(image: Any, step: int) -> np.ndarray:
    """Every ``step``-th pixel of an image as a grey display picture: the channels' mean (luma for 3
    channels), stretched between its 1st and 99.5th percentiles.

    Args:
        image: a ``(C, H, W)`` array-like (a lazy image is read in strided blocks of rows).
        step: the stride (:func:`preview_step`).

    Shape:
        ``(C, H, W)`` -> ``uint8 (ceil(H / step), ceil(W / step), 3)``.

    >>> grey_preview(np.array([[[0.0, 1.0, 2.0]]]), 2)[..., 0].tolist()
    [[0, 255]]
    """
    h = int(image.shape[1])
    block = max(step, (4096 // step) * step)
    parts = []
    for r in range(0, h, block):
        tile = np.asarray(image[:, r : min(h, r + block), :])[:, ::step, ::step]
        parts.append(tile.astype(np.float32).mean(axis=0) if tile.shape[0] != 3 else _luma(tile))
    grey = np.concatenate(parts, axis=0)
    lo, hi = np.percentile(grey, (1, 99.5)) if grey.size else (0.0, 1.0)
    scaled = np.clip((grey - lo) / max(float(hi - lo), 1e-12), 0, 1)
    return np.repeat((scaled * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=-1)


def _luma(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[i].astype(np.float32) for i in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b
