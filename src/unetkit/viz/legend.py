"""A legend strip under a picture: one line per entry, with a swatch where something was painted.

A swatch is a small region painted by the overlays' own rule (:func:`unetkit.viz.overlay.paint`): the fill
at the overlay's alpha over mid grey, and the opaque outline, so its colours are the ones in the picture.
An entry without a colour (the unpainted background, a class absent from the picture, a count) is text only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from unetkit.classes import RGB
from unetkit.viz.overlay import paint

__all__ = ["PAD", "ROW", "SWATCH", "LegendEntry", "add_legend", "swatch"]

SWATCH = 14
"""Side of a legend swatch, in pixels."""
ROW, PAD = 18, 6
"""Height of a legend line and the margin above the first line and left of the swatches, in pixels."""
_GAP = 8
_WHITE, _GREY = 255.0, 128.0


class LegendEntry(NamedTuple):
    """One legend line: its text, and the colour painted for it (``None``: nothing painted, no swatch)."""

    text: str
    colour: RGB | None = None


def swatch(colour: Sequence[int], alpha: float, size: int = SWATCH) -> np.ndarray:
    """A square region of ``colour`` painted as an overlay paints one: filled at ``alpha`` over mid grey,
    outlined opaque; a one-pixel white margin around it.

    Shape:
        ``uint8 (size, size, 3)``.

    >>> s = swatch((255, 0, 0), alpha=0.5)
    >>> s[0, 0].tolist(), s[1, 1].tolist(), s[7, 7].tolist()
    ([255, 255, 255], [255, 0, 0], [192, 64, 64])
    """
    labels = np.zeros((size, size), np.uint8)
    labels[1:-1, 1:-1] = 1
    base = np.full((size, size, 3), _WHITE, np.float32)
    base[1:-1, 1:-1] = _GREY
    return paint(base, labels, [(0, 0, 0), tuple(int(c) for c in colour)], alpha=alpha, contours=True)


def add_legend(picture: Any, entries: Sequence[LegendEntry], *, alpha: float) -> np.ndarray:
    """``picture`` with a white strip under it: one line per entry, a :func:`swatch` (at ``alpha``) before
    the text of each entry that has a colour. The strip is widened to fit the longest text.

    Shape:
        ``(H, W, 3)`` -> ``uint8 (H + 6 + 18 * len(entries), max(W, text width), 3)``.
    """
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8))
    text_x = PAD + SWATCH + _GAP
    widest = max((ImageDraw.Draw(img).textlength(e.text) for e in entries), default=0.0)
    width = max(img.width, text_x + int(np.ceil(widest)) + PAD)
    canvas = Image.new("RGB", (width, img.height + PAD + ROW * len(entries)), (255, 255, 255))
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, entry in enumerate(entries):
        y = img.height + PAD + k * ROW
        if entry.colour is not None:
            canvas.paste(Image.fromarray(swatch(entry.colour, alpha)), (PAD, y))
        ink = (0, 0, 0) if entry.colour is not None else (90, 90, 90)
        draw.text((text_x, y + 1), entry.text, fill=ink)
    return np.asarray(canvas)
