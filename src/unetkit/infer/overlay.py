"""A colour overlay PNG of 2D class labels over the image, with a legend that matches what is painted.

Every class but the background (class 0) is filled in its colour and outlined opaque in it (the overlays'
one rule, :func:`unetkit.viz.overlay.paint`). The legend lists every class: the background as not painted,
each class present with a swatch painted by the same rule and its share of the image, each absent class
as absent. Huge images are shown downsampled (longest side at most ``max_side``): labels are subsampled as
the slabs stream past, and the image is read back in strided row blocks
(:func:`unetkit.viz.downsample.grey_preview`), so memory stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.classes import RGB
from unetkit.viz._save import save_rgb
from unetkit.viz.downsample import MAX_SIDE, grey_preview, preview_step
from unetkit.viz.legend import LegendEntry, add_legend
from unetkit.viz.overlay import paint

BACKGROUND = 0
"""The class left unpainted (:mod:`unetkit.classes`: class 0 is the background)."""


class OverlayTarget:
    """Collects subsampled labels slab by slab; :meth:`commit` draws the overlay and writes the PNG.

    Args:
        path: the ``.png`` to write.
        image: the input ``(C, H, W)`` array-like (read again, strided, at the end).
        class_names: one name per class (class 0 is background and is left uncoloured), as the model
            file has them (:mod:`unetkit.classes`).
        class_colours: one RGB triple per class.
        max_side: longest side of the written overlay.
        alpha: opacity of the class colours' fill (outlines are opaque).
    """

    def __init__(
        self,
        path: Path,
        image: Any,
        class_names: Sequence[str],
        class_colours: Sequence[Sequence[int]],
        max_side: int = MAX_SIDE,
        alpha: float = 0.45,
    ) -> None:
        self.path, self.image = Path(path), image
        self.names = list(class_names)
        self.colours: list[RGB] = [(int(c[0]), int(c[1]), int(c[2])) for c in class_colours]
        h, w = (int(s) for s in image.shape[1:])
        self.step = preview_step((h, w), max_side)
        self.labels = np.zeros((-(-h // self.step), -(-w // self.step)), np.uint16)
        self.alpha = alpha

    def legend(self) -> list[LegendEntry]:
        """The legend's entries, one per class: ``"0: <name> (not painted)"`` for the background,
        ``"<k>: <name>, <share>% of the image"`` with the painted colour for a class present in the overlay,
        ``"<k>: <name> (absent)"`` without a colour for one that is not."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.names))
        total = max(int(self.labels.size), 1)
        entries = []
        for k, name in enumerate(self.names):
            if k == BACKGROUND:
                entries.append(LegendEntry(f"{k}: {name} (not painted)"))
            elif counts[k]:
                share = f"{100 * counts[k] / total:.3g}%"
                entries.append(LegendEntry(f"{k}: {name}, {share} of the image", self.colours[k]))
            else:
                entries.append(LegendEntry(f"{k}: {name} (absent)"))
        return entries

    def write(self, start: int, labels: np.ndarray) -> None:
        """Keep every ``step``-th row and column of a labels slab ``(rows, W)``."""
        first = (-start) % self.step
        rows = labels[first :: self.step, :: self.step]
        r0 = (start + first) // self.step
        self.labels[r0 : r0 + rows.shape[0]] = rows

    def picture(self) -> np.ndarray:
        """The overlay without its legend: the grey image with the classes painted.

        Shape:
            ``uint8 (ceil(H / step), ceil(W / step), 3)``.
        """
        grey = grey_preview(self.image, self.step)
        return paint(grey, self.labels, self.colours, alpha=self.alpha, contours=True, background=BACKGROUND)

    def commit(self) -> Path:
        """Draw image, colours, outlines and legend; write the PNG atomically."""
        save_rgb(self.path, add_legend(self.picture(), self.legend(), alpha=self.alpha))
        return self.path

    def abort(self) -> None:
        """Nothing was written yet."""
