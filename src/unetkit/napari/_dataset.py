"""A training set from napari layers (no napari needed here): one image and the labels painted over it, or
one image and its clean target (or none: Noise2Void) for a restoration."""

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
    if labels.shape != image.shape[1:]:
        raise DataError(f"the labels layer {labels.shape} does not match the image layer {image.shape[1:]}",
                        fix="paint a labels layer of the image's size (Layers > New Labels layer)")  # fmt: skip
    if labels.max() < 1:
        raise DataError("the labels layer is empty", fix="paint at least one class (label 1) over the image")
    dtype = np.uint8 if labels.max() < 256 else np.uint16
    _write_tiles(root, {"images": image, "masks": labels[None].astype(dtype)}, labels.ndim)
    return root


def write_restore_layers(image: np.ndarray, target: np.ndarray | None, root: Path) -> Path:
    """Cut ``image`` (and its clean ``target``) into 2 x 2 tiles as ``root/inputs`` (+ ``root/targets``): a
    restoration dataset (``unetkit train ROOT --task restore``; without a target, Noise2Void's).

    Shape:
        ``image`` ``(C, *S)``, ``target`` ``(C_out, *S)`` or None.
    """
    spatial = image.ndim - 1
    if target is not None and target.shape[1:] != image.shape[1:]:
        raise DataError(f"the target layer {target.shape[1:]} does not match the image layer {image.shape[1:]}",
                        fix="choose the clean image of the same field of view and size")  # fmt: skip
    layers = {"inputs": image, **({"targets": target} if target is not None else {})}
    _write_tiles(root, layers, spatial)
    return root


def _write_tiles(root: Path, layers: dict[str, np.ndarray], spatial: int) -> None:
    """Each ``(C, *S)`` layer's 2 x 2 tiles (Y and X halved) to ``root/<name>/tile_<i>.tif``: four images make
    the default split work (three train, one validates)."""
    from unetkit.data.io import write_image

    h, w = next(iter(layers.values())).shape[-2:]
    if min(h, w) < 64:
        raise DataError(f"the image is {h} x {w}: too small to train on", fix="use an image of at least 64 x 64")
    halves = [
        (ys, xs) for ys in (slice(0, h // 2), slice(h // 2, None)) for xs in (slice(0, w // 2), slice(w // 2, None))
    ]
    for name, array in layers.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, (ys, xs) in enumerate(halves):
            tile = array[..., ys, xs]
            write_image(root / name / f"tile_{i}.tif", tile[0] if name == "masks" else tile, spatial_dims=spatial)
