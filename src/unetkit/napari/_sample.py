"""Sample data for napari: the demo's synthetic cells (generated, nothing downloaded)."""

from __future__ import annotations

from typing import Any


def sample_cells() -> list[tuple[Any, dict[str, Any], str]]:
    """A 256 x 256 synthetic cell image and its ground-truth mask, as napari layer data.

    Shape:
        image ``(256, 256)`` uint8, labels ``(256, 256)`` uint8 (0 background, 1 cell).
    """
    from unetkit.synthetic import synthetic_cells

    cells = synthetic_cells((256, 256), seed=0)
    return [
        (cells.image, {"name": "cells"}, "image"),
        (cells.mask, {"name": "cells ground truth", "opacity": 0.4}, "labels"),
    ]
