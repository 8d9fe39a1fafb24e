"""A colour overlay PNG of 2D labels over the image, with a legend of class names and colours.

Huge images are shown downsampled (longest side at most ``max_side``): labels are subsampled as the
slabs stream past, and the image is read back in strided row blocks, so memory stays small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io import write_image


class OverlayTarget:
    """Collects subsampled labels slab by slab; :meth:`commit` draws the overlay and writes the PNG.

    Args:
        path: the ``.png`` to write.
        image: the input ``(C, H, W)`` array-like (read again, strided, at the end).
        class_names: one name per class (class 0 is background and is left uncoloured), as the model
            file has them (:mod:`unetkit.classes`).
        class_colours: one RGB triple per class.
        max_side: longest side of the written overlay.
        alpha: opacity of the class colours.
    """

    def __init__(
        self,
        path: Path,
        image: Any,
        class_names: Sequence[str],
        class_colours: Sequence[Sequence[int]],
        max_side: int = 2048,
        alpha: float = 0.45,
    ) -> None:
        self.path, self.image = Path(path), image
        self.names, self.colours = list(class_names), np.asarray(class_colours, np.uint8)
        h, w = (int(s) for s in image.shape[1:])
        self.step = max(1, math.ceil(max(h, w) / max_side))
        self.labels = np.zeros((math.ceil(h / self.step), math.ceil(w / self.step)), np.uint16)
        self.alpha = alpha

    def legend(self) -> list[tuple[str, tuple[int, int, int]]]:
        """The legend's entries, one per class: ``("<k>: <name>", colour)``."""
        return [(f"{k}: {name}", tuple(int(c) for c in self.colours[k])) for k, name in enumerate(self.names)]  # type: ignore[misc]

    def write(self, start: int, labels: np.ndarray) -> None:
        """Keep every ``step``-th row and column of a labels slab ``(rows, W)``."""
        first = (-start) % self.step
        rows = labels[first :: self.step, :: self.step]
        r0 = (start + first) // self.step
        self.labels[r0 : r0 + rows.shape[0]] = rows

    def _grey(self) -> np.ndarray:
        h = int(self.image.shape[1])
        block = max(self.step, (4096 // self.step) * self.step)
        parts = []
        for r in range(0, h, block):
            tile = np.asarray(self.image[:, r : min(h, r + block), :])[:, :: self.step, :: self.step]
            parts.append(tile.astype(np.float32).mean(axis=0) if tile.shape[0] != 3 else _luma(tile))
        grey = np.concatenate(parts, axis=0)
        lo, hi = np.percentile(grey, (1, 99.5)) if grey.size else (0.0, 1.0)
        return np.clip((grey - lo) / max(float(hi - lo), 1e-12), 0, 1)

    def commit(self) -> Path:
        """Draw image, colours and legend; write the PNG atomically."""
        from PIL import Image, ImageDraw

        grey = self._grey()[..., None] * 255.0
        colour = self.colours[np.minimum(self.labels, len(self.colours) - 1)].astype(np.float32)
        a = np.where(self.labels[..., None] > 0, self.alpha, 0.0)
        rgb = (grey * (1 - a) + colour * a).astype(np.uint8)
        img = Image.fromarray(rgb)
        # Legend: a strip under the image, one swatch and name per class.
        row_h, pad = 18, 6
        legend_h = pad + row_h * len(self.names)
        canvas = Image.new("RGB", (max(img.width, 200), img.height + legend_h), (255, 255, 255))
        canvas.paste(img, (0, 0))
        draw = ImageDraw.Draw(canvas)
        for k, (text, swatch) in enumerate(self.legend()):
            y = img.height + pad + k * row_h
            draw.rectangle((pad, y, pad + 12, y + 12), fill=swatch, outline=(0, 0, 0))
            draw.text((pad + 20, y), text, fill=(0, 0, 0))
        write_image(self.path, np.moveaxis(np.asarray(canvas), -1, 0))
        return self.path

    def abort(self) -> None:
        """Nothing was written yet."""


def _luma(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[i].astype(np.float32) for i in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b
