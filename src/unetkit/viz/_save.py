"""Atomic writers for pictures: RGB arrays and matplotlib figures (Agg canvas, no global pyplot state)."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from unetkit.utils import atomic_path

__all__ = ["figure", "figure_png_bytes", "png_bytes", "save_figure", "save_rgb"]


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an ``uint8 (H, W, 3)`` (or ``(H, W)``) array as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return buf.getvalue()


def save_rgb(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write an ``uint8`` RGB array as a PNG, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(png_bytes(rgb))


def figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` on an Agg canvas (safe without a display and in threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def figure_png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 100) -> None:
    """Write a figure as a PNG, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(figure_png_bytes(fig, dpi))
