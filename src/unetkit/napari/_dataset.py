"""A training set from one image and the labels painted over it in napari (no napari needed here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unetkit.errors import DataError


def write_painted_dataset(image: np.ndarray, labels: np.ndarray, root: Path) -> Path:
    """Cut ``image`` and its painted ``labels`` into 2 x 2 tiles (Y and X halved) as ``root/images`` + ``root/masks``.

    Four images make the default split work (three train, one validates: ``data.val_fraction`` 0.2 of 4
    rounds to one). Label values are the classes, 0 (unpainted) is the background class.

    Shape:
        ``image`` ``(C, *S)``, ``labels`` ``(*S)``; each tile ``(C, *S[:-2], S[-2] // 2, S[-1] // 2)``.

    Example:
        >>> import tempfile
        >>> root = write_painted_dataset(np.zeros((1, 64, 80)), np.ones((64, 80), np.int32), Path(tempfile.mkdtemp()))
        >>> sorted(p.name for p in (root / "masks").iterdir())
        ['tile_0.tif', 'tile_1.tif', 'tile_2.tif', 'tile_3.tif']
    """
    from unetkit.data.io import write_image

    if labels.shape != image.shape[1:]:
        raise DataError(f"the labels layer {labels.shape} does not match the image layer {image.shape[1:]}",
                        fix="paint a labels layer of the image's size (Layers > New Labels layer)")  # fmt: skip
    if labels.max() < 1:
        raise DataError("the labels layer is empty", fix="paint at least one class (label 1) over the image")
    h, w = labels.shape[-2:]
    if min(h, w) < 64:
        raise DataError(f"the image is {h} x {w}: too small to train on", fix="use an image of at least 64 x 64")
    dtype = np.uint8 if labels.max() < 256 else np.uint16
    spatial = labels.ndim
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (ys, xs) in enumerate(
        (ys, xs) for ys in (slice(0, h // 2), slice(h // 2, None)) for xs in (slice(0, w // 2), slice(w // 2, None))
    ):
        write_image(root / "images" / f"tile_{i}.tif", image[..., ys, xs], spatial_dims=spatial)
        write_image(root / "masks" / f"tile_{i}.tif", labels[..., ys, xs].astype(dtype), spatial_dims=spatial)
    return root
