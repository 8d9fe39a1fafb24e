"""Comparison panels: image | truth | prediction | error map, side by side with titles."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from unetkit.errors import DataError
from unetkit.viz._save import figure, figure_png_bytes, save_figure
from unetkit.viz.overlay import FN_COLOUR, FP_COLOUR, WRONG_CLASS_COLOUR, error_map, overlay, to_display

__all__ = ["panel_figure", "panel_png", "save_panel", "worst_slice"]


def worst_slice(pred: np.ndarray, truth: np.ndarray) -> int:
    """Index along axis 0 of the slice of a volume with the most wrong voxels (the middle one if none).

    >>> worst_slice(np.zeros((3, 2, 2)), np.pad(np.ones((1, 2, 2)), ((2, 0), (0, 0), (0, 0))))
    2
    """
    wrong = (np.asarray(pred) != np.asarray(truth)).reshape(pred.shape[0], -1).sum(1)
    return int(np.argmax(wrong)) if wrong.any() else pred.shape[0] // 2


def _to_2d(image: Any | None, truth: np.ndarray, pred: np.ndarray) -> tuple[Any | None, np.ndarray, np.ndarray, str]:
    if truth.ndim == 2:
        return image, truth, pred, ""
    if truth.ndim != 3:
        raise DataError(f"panels show 2D images or 3D volumes; got labels of shape {truth.shape}")
    z = worst_slice(pred, truth)
    img = None
    if image is not None:
        arr = np.asarray(image)
        img = arr[:, z] if arr.ndim == 4 else arr[z]
    return img, truth[z], pred[z], f" (slice {z})"


def panel_figure(
    image: Any | None,
    truth: Any,
    pred: Any,
    *,
    title: str = "",
    colours: Sequence[Sequence[int]] | None = None,
    ignore_index: int | None = None,
    alpha: float = 0.45,
) -> Any:
    """A matplotlib figure: image | truth overlay | prediction overlay | error map.

    3D volumes show the slice (along axis 0) with the most errors.

    Shape:
        ``image (C, *spatial)`` or ``(*spatial)`` or None; ``truth``, ``pred`` ``(*spatial)`` labels.
    """
    t = np.asarray(truth.detach().cpu() if hasattr(truth, "detach") else truth)
    p = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred)
    if t.shape != p.shape:
        raise DataError(f"prediction shape {p.shape} differs from truth shape {t.shape}")
    image, t, p, where = _to_2d(image, t, p)
    base = image if image is not None else np.zeros(t.shape, np.float32)
    t_show = np.where(t == ignore_index, 0, t) if ignore_index is not None else t
    pictures = [
        ("image", to_display(base)),
        ("truth", overlay(base, t_show, alpha=alpha, colours=colours)),
        ("prediction", overlay(base, p, alpha=alpha, colours=colours)),
        ("errors", error_map(p, t, image, ignore_index=ignore_index)),
    ]
    h, w = t.shape
    fig = figure(4 * 3.0, 3.0 * h / w + 0.6)
    axes = fig.subplots(1, 4)
    for ax, (name, rgb) in zip(axes, pictures, strict=True):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    legend = [("false positive", FP_COLOUR), ("false negative", FN_COLOUR), ("wrong class", WRONG_CLASS_COLOUR)]
    for label, colour in legend:
        axes[3].plot([], [], "s", color=np.array(colour) / 255, label=label)
    axes[3].legend(loc="lower center", bbox_to_anchor=(0.5, -0.22), fontsize=6, ncol=3, frameon=False)
    if title or where:
        fig.suptitle(f"{title}{where}", fontsize=10)
    return fig


def panel_png(image: Any | None, truth: Any, pred: Any, **kwargs: Any) -> bytes:
    """:func:`panel_figure` rendered as PNG bytes (for embedding in a report)."""
    return figure_png_bytes(panel_figure(image, truth, pred, **kwargs))


def save_panel(path: str | os.PathLike[str], image: Any | None, truth: Any, pred: Any, **kwargs: Any) -> None:
    """Write :func:`panel_figure` as a PNG, atomically."""
    save_figure(panel_figure(image, truth, pred, **kwargs), path)
