"""Label overlays on images (:func:`paint`, the one painting rule: fill at alpha, opaque contours) and error
maps (false positives / negatives)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from unetkit.classes import palette
from unetkit.errors import DataError

__all__ = ["FN_COLOUR", "FP_COLOUR", "WRONG_CLASS_COLOUR", "colourise", "error_map", "overlay", "paint", "to_display"]

FP_COLOUR = (255, 0, 255)
"""False positives (predicted foreground on true background): magenta."""
FN_COLOUR = (0, 200, 255)
"""False negatives (true foreground predicted as background): cyan."""
WRONG_CLASS_COLOUR = (255, 230, 0)
"""Foreground given the wrong foreground class: yellow."""


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def to_display(image: Any, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """An image as ``uint8 (H, W, 3)`` for display: contrast stretched between two percentiles.

    Accepts ``(H, W)``, ``(1, H, W)``, ``(3, H, W)`` (channels first) or ``(H, W, 3)``; other channel counts
    show the first channel.

    Shape:
        ``(C, H, W)`` or ``(H, W)`` -> ``uint8 (H, W, 3)``.

    >>> to_display(np.array([[0.0, 1.0]])).tolist()
    [[[0, 0, 0], [255, 255, 255]]]
    """
    a = _np(image).astype(np.float32)
    if a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] not in (1, 3):
        a = np.moveaxis(a[..., :3], -1, 0)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise DataError(f"cannot display an image of shape {a.shape}; pass (C, H, W) or (H, W)")
    a = a[:3] if a.shape[0] == 3 else a[:1]
    lo, hi = np.percentile(a, percentiles)
    scaled = np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(a)
    rgb = np.repeat(scaled, 3 // scaled.shape[0], axis=0)
    return (np.moveaxis(rgb, 0, -1) * 255 + 0.5).astype(np.uint8)


def colourise(labels: Any, colours: Sequence[Sequence[int]] | np.ndarray | None = None) -> np.ndarray:
    """Class labels as an RGB picture, one colour per class (default :func:`unetkit.classes.palette`).

    Shape:
        ``(H, W)`` -> ``uint8 (H, W, 3)``.

    >>> colourise(np.array([[0, 1]])).tolist()
    [[[0, 0, 0], [255, 179, 0]]]
    """
    lab = _np(labels).astype(np.int64)
    n = int(lab.max(initial=0)) + 1
    lut = np.array(list(colours) if colours is not None else palette(n), dtype=np.uint8).reshape(-1, 3)
    if lut.shape[0] < n:
        lut = np.concatenate([lut, np.array(palette(n), np.uint8)[lut.shape[0] :]])
    return lut[np.clip(lab, 0, None)]


def _boundaries(labels: np.ndarray) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    return find_boundaries(labels, mode="inner")


def paint(
    picture: Any,
    labels: Any,
    colours: Sequence[Sequence[int]] | np.ndarray | None = None,
    *,
    alpha: float = 0.4,
    contours: bool = True,
    background: int | None = 0,
) -> np.ndarray:
    """Paint labels on an RGB picture: THE painting rule of every overlay (classes, instances, legend swatches).

    Every label but ``background`` is blended with its colour at ``alpha``; with ``contours``, each region's
    boundary pixels (its own pixels touching another label, :func:`skimage.segmentation.find_boundaries`
    ``mode="inner"``) are drawn opaque in its colour. ``background`` pixels keep the picture.

    Args:
        picture: ``(H, W, 3)`` RGB, 0..255.
        labels: ``(H, W)`` integer labels.
        colours: one RGB per label value (default and beyond its end: :func:`unetkit.classes.palette`).
        alpha: opacity of the fill.
        contours: draw region boundaries opaque.
        background: the label left unpainted (``None`` paints every label).

    Shape:
        ``picture (H, W, 3)``, ``labels (H, W)`` -> ``uint8 (H, W, 3)``.

    >>> lab = np.array([[0, 1]])
    >>> paint(np.zeros((1, 2, 3)), lab, [(0, 0, 0), (200, 100, 0)], alpha=0.5, contours=False)[0].tolist()
    [[0, 0, 0], [100, 50, 0]]
    """
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"alpha={alpha} must lie in [0, 1]")
    base = np.asarray(picture, np.float32)
    lab = _np(labels)
    if lab.shape != base.shape[:2]:
        raise DataError(f"labels shape {lab.shape} differs from the image's {base.shape[:2]}")
    colour = colourise(lab, colours)
    fg = np.ones(lab.shape, bool) if background is None else lab != background
    out = base.copy()
    out[fg] = (1 - alpha) * base[fg] + alpha * colour[fg].astype(np.float32)
    if contours:
        edge = _boundaries(lab) & fg
        out[edge] = colour[edge]
    return (np.clip(out, 0, 255) + 0.5).astype(np.uint8)


def overlay(
    image: Any,
    labels: Any,
    *,
    alpha: float = 0.4,
    contours: bool = True,
    colours: Sequence[Sequence[int]] | None = None,
    background: int | None = 0,
) -> np.ndarray:
    """Blend class colours over an image; optionally draw each region's contour in full colour (:func:`paint`).

    Args:
        image: the image (see :func:`to_display`).
        labels: class (or instance) labels, same spatial shape.
        alpha: opacity of the fill (0 = contours only).
        contours: draw region boundaries opaque.
        colours: one RGB per label (default: the unetkit palette).
        background: label left uncoloured (None colours every label).

    Shape:
        ``image (C, H, W)``, ``labels (H, W)`` -> ``uint8 (H, W, 3)``.

    >>> overlay(np.zeros((2, 2)), np.array([[0, 1], [0, 0]]), alpha=1.0)[0, 1].tolist()
    [255, 179, 0]
    """
    return paint(to_display(image), labels, colours, alpha=alpha, contours=contours, background=background)


def error_map(pred: Any, truth: Any, image: Any | None = None, *, ignore_index: int | None = None) -> np.ndarray:
    """Where the prediction is wrong: FP magenta, FN cyan, wrong foreground class yellow, on a dimmed image.

    Correct pixels show the (dimmed) image, or black without one; ``ignore_index`` pixels stay dark grey.

    Shape:
        ``(H, W)`` labels -> ``uint8 (H, W, 3)``.

    >>> error_map(np.array([[1, 0, 2]]), np.array([[0, 1, 1]])).tolist()
    [[[255, 0, 255], [0, 200, 255], [255, 230, 0]]]
    """
    p, t = _np(pred), _np(truth)
    if p.shape != t.shape:
        raise DataError(f"prediction shape {p.shape} differs from truth shape {t.shape}")
    out = (
        (to_display(image).astype(np.float32) * 0.5).astype(np.uint8)
        if image is not None
        else np.zeros((*t.shape, 3), np.uint8)
    )
    valid = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    out[(p != 0) & (t == 0) & valid] = FP_COLOUR
    out[(p == 0) & (t != 0) & valid] = FN_COLOUR
    out[(p != 0) & (t != 0) & (p != t) & valid] = WRONG_CLASS_COLOUR
    out[~valid] = (64, 64, 64)
    return out
