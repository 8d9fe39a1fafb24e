"""The tests' small dataset: synthetic touching cells as ``root/images/imK.tif`` + ``root/masks/imK.tif``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unetkit.data.io import write_image
from unetkit.synthetic import synthetic_cells


def write_cells(root: Path, n: int = 4, shape: tuple[int, ...] = (48, 48), *, instances: bool = False) -> Path:
    """Write ``n`` images of cells (radius 6 px) and their masks: binary uint8 foreground, or uint16
    instance labels with ``instances=True``. Returns ``root``."""
    for i in range(n):
        s = synthetic_cells(shape, seed=i, cell_radius=6)
        write_image(root / "images" / f"im{i}.tif", s.image)
        mask = s.instances.astype(np.uint16) if instances else (s.instances > 0).astype(np.uint8)
        write_image(root / "masks" / f"im{i}.tif", mask)
    return root
