"""Restoration panels: input | output | target (where given), and below them the same zoomed crop.

:func:`restore_panel` writes one PNG (prediction ``--overlay``, ``unetkit evaluate --task restore``, the run
folder's ``panels/`` at each validation), :func:`restore_panel_png` returns the bytes (the HTML report).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from unetkit.utils import atomic_path
from unetkit.viz._save import figure, figure_png_bytes

__all__ = ["restore_panel", "restore_panel_png"]


def _display(x: Any) -> np.ndarray:
    """A ``(C, *S)`` image as a 2D (or RGB) float array in [0, 1] (middle slice of a volume, percentiles 1-99)."""
    a = np.asarray(x, np.float64)
    if a.ndim == 4:
        a = a[:, a.shape[1] // 2]
    a = a[0] if a.shape[0] != 3 else np.moveaxis(a, 0, -1)
    lo, hi = np.percentile(a, [1, 99])
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)


def restore_panel(
    path: str | os.PathLike[str],
    image: Any,
    output: Any,
    target: Any | None = None,
    *,
    titles: tuple[str, ...] = ("input", "output", "target"),
    scores: dict[str, float] | None = None,
) -> None:
    """Write the panel PNG (atomically): input | output | target, each with a zoomed crop (a quarter of the
    side) below.

    Shape:
        ``(C, *S)`` each (a 3D volume shows its middle slice).
    """
    png = restore_panel_png(image, output, target, titles=titles, scores=scores)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)


def restore_panel_png(
    image: Any,
    output: Any,
    target: Any | None = None,
    *,
    titles: tuple[str, ...] = ("input", "output", "target"),
    scores: dict[str, float] | None = None,
) -> bytes:
    """:func:`restore_panel`'s picture as PNG bytes."""
    shown = [_display(a) for a in (image, output, target) if a is not None]
    h, w = shown[0].shape[:2]
    ch, cw = max(8, h // 4), max(8, w // 4)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    fig = figure(3.2 * len(shown), 6.6)
    for i, (a, title) in enumerate(zip(shown, titles, strict=False)):
        ax = fig.add_subplot(2, len(shown), i + 1)
        ax.imshow(a, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        label = (
            title
            if not (scores and title == "output")
            else f"{title} ({', '.join(f'{k} {v:.3g}' for k, v in scores.items())})"
        )
        ax.set_title(label, fontsize=9)
        ax.add_patch(_rect(fig, x0, y0, cw, ch))
        ax.axis("off")
        zoom = fig.add_subplot(2, len(shown), len(shown) + i + 1)
        zoom.imshow(a[y0 : y0 + ch, x0 : x0 + cw], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        zoom.set_title(f"{title}, zoomed", fontsize=9)
        zoom.axis("off")
    return figure_png_bytes(fig)


def _rect(fig: Any, x: int, y: int, w: int, h: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="yellow", linewidth=1)
