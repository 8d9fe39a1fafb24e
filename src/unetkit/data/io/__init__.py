"""Read and write images and masks: PNG, JPEG, BMP, TIFF/BigTIFF, NIfTI, zarr and ``.npy``.

Everything comes back channels-first, ``(C, *spatial)``, in the file's own dtype, with the voxel spacing
where the format stores one. :func:`open_image` reads lazily: indexing reads only the requested region
(TIFF strips and tiles and zarr chunks through one bounded block cache, uncompressed TIFF, ``.nii`` and ``.npy`` through
a memory map), so a tiler can work through an image larger than memory. PNG/JPEG/BMP are read whole.

Spatial axes are ordered ``(Z, Y, X)`` for every format; NIfTI's ``(X, Y, Z)`` is reversed on reading and
restored on writing, and so is its spacing.

A palette image (mode ``P``) is an image to :func:`open_image` and :func:`read_image` (its colours, RGB(A)) and
a mask to :func:`open_mask` and :func:`read_mask` (its indices): the label PNGs ``unetkit predict`` writes
are palette images (``write_image(..., palette=colours)``), coloured in any viewer, class indices to a mask reader.

One module per format (:mod:`.pil`, :mod:`.tiff`, :mod:`.nifti`, :mod:`.zarrio`, :mod:`.npy`), each with its
reader, its writer and its rules (TIFF: BigTIFF and metadata; zarr: chunks, names, spacing); what they
share is in :mod:`.common` (suffixes, the bad-file rule) and :mod:`.lazy` (axis layouts, lazy regions).
A damaged file gives a :class:`~unetkit.errors.DataError`; any other exception is a bug and propagates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io.common import (
    IMAGE_SUFFIXES,
    ImageData,
    as_channels_first,
    check_file,
    check_spatial_dims,
    image_format,
    is_image_file,
    is_zarr_dir,
    strip_suffix,
)
from unetkit.data.io.lazy import Layout, LazyImage
from unetkit.data.io.nifti import open_nifti, write_nifti
from unetkit.data.io.npy import open_npy, write_npy
from unetkit.data.io.pil import open_pil, write_pil
from unetkit.data.io.pil import read_palette as _pil_palette
from unetkit.data.io.tiff import open_tiff, write_tiff
from unetkit.data.io.zarrio import open_zarr, write_zarr
from unetkit.errors import DataError


def open_image(path: str | os.PathLike[str], spatial_dims: int | None = None) -> LazyImage:
    """Open an image for region reads without loading it.

    Args:
        path: an image file (or ``.zarr`` directory).
        spatial_dims: 2 or 3 to force the reading (e.g. a 3-slice volume), ``None`` to decide from the file.

    Returns:
        A :class:`~unetkit.data.io.lazy.LazyImage`; ``img[:, y0:y1, x0:x1]`` reads just that region.

    Shape:
        ``(C, *spatial)``.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "vol.tif"
        >>> write_image(p, np.arange(2 * 4 * 6 * 8, dtype=np.uint16).reshape(2, 4, 6, 8), spacing=(2.0, 0.5, 0.5))
        >>> img = open_image(p)
        >>> img.shape, img.spacing, img[:, 1, 0:2, 0:3].shape
        ((2, 4, 6, 8), (2.0, 0.5, 0.5), (2, 2, 3))
    """
    return _open(Path(path), spatial_dims, mask=False)


def open_mask(path: str | os.PathLike[str], spatial_dims: int | None = None) -> LazyImage:
    """Open a mask for region reads, as :func:`open_image` does an image, but a palette image (mode ``P``,
    e.g. a label PNG ``unetkit predict`` wrote) gives its palette indices, not its colours.

    Shape:
        ``(C, *spatial)`` (``C = 1`` for a palette image).
    """
    return _open(Path(path), spatial_dims, mask=True)


def read_image(path: str | os.PathLike[str], spatial_dims: int | None = None) -> ImageData:
    """Read a whole image channels-first.

    A grey PNG becomes ``(1, H, W)``, an RGB(A) one ``(3|4, H, W)``, a multi-page TIFF or a NIfTI volume
    ``(C, Z, Y, X)``.

    Args:
        path: an image file (or ``.zarr`` directory).
        spatial_dims: 2 or 3 to force the reading, ``None`` to decide from the file.

    Returns:
        :class:`ImageData` with the array in the file's dtype and the spacing, if the file has one.

    Shape:
        ``array`` is ``(C, *spatial)``.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "rgb.png"
        >>> write_image(p, np.zeros((3, 5, 7), np.uint8))
        >>> read_image(p).array.shape
        (3, 5, 7)
    """
    with _open(Path(path), spatial_dims, mask=False) as img:
        return ImageData(array=np.ascontiguousarray(img.read()), spacing=img.spacing, path=Path(path))


def read_mask(path: str | os.PathLike[str], spatial_dims: int | None = None) -> np.ndarray:
    """Read a mask's raw values, without any mapping.

    A single-channel mask (or an RGB one whose channels are equal) comes back as ``(*spatial)``; a colour
    (palette) mask as ``(*spatial, 3)``. A palette PNG (mode ``P``) gives its palette indices.

    Shape:
        ``(*spatial)`` or ``(*spatial, 3)``.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.png"
        >>> write_image(p, np.array([[0, 255], [255, 0]], np.uint8))
        >>> read_mask(p).tolist()
        [[0, 255], [255, 0]]
    """
    with _open(Path(path), spatial_dims, mask=True) as img:
        arr = img.read()
    c = arr.shape[0]
    if c == 1:
        return arr[0]
    if c in (3, 4):
        rgb = arr[:3]
        if (rgb == rgb[:1]).all():
            return rgb[0]
        return np.ascontiguousarray(np.moveaxis(rgb, 0, -1))
    if c == 2:  # grey + alpha
        return arr[0]
    raise DataError(
        f"mask has {c} channels", file=path, fix="masks must be single-channel class indices or an RGB palette image"
    )


def _open(path: Path, spatial_dims: int | None, *, mask: bool) -> LazyImage:
    check_spatial_dims(spatial_dims)
    fmt = image_format(path)
    check_file(path, fmt)
    if fmt == "pil":
        return open_pil(path, spatial_dims, mask)
    if fmt == "tiff":
        return open_tiff(path, spatial_dims)
    if fmt == "nifti":
        return open_nifti(path, spatial_dims)
    if fmt == "zarr":
        return open_zarr(path, spatial_dims)
    return open_npy(path, spatial_dims)


# ----------------------------------------------------------------------------------------------- writing


def write_image(
    path: str | os.PathLike[str],
    array: Any,
    spacing: tuple[float, ...] | list[float] | None = None,
    spatial_dims: int | None = None,
    palette: Sequence[Sequence[int]] | None = None,
) -> None:
    """Write a whole array atomically; the format comes from the suffix.

    Args:
        path: destination (.png .jpg .bmp .tif/.tiff .nii/.nii.gz .zarr .npy).
        array: ``(C, *spatial)`` or ``(*spatial)`` (one channel). A 3-axis array is ``(C, H, W)`` when its
            first axis is 4 or shorter, else ``(Z, Y, X)``; ``spatial_dims`` or ``spacing`` settle it.
        spacing: voxel size per spatial axis, ``(Z, Y, X)`` order; stored by TIFF, NIfTI and zarr.
        spatial_dims: 2 or 3 when the array's layout is ambiguous.
        palette: label colours, one RGB per label value: a one-channel ``uint8`` PNG is then written as a
            palette image (the pixels stay the labels; viewers show the colours; :func:`read_mask` gives the
            labels back). Labels beyond 255 and other formats ignore it.

    Shape:
        ``(C, *spatial)`` or ``(*spatial)``.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.nii.gz"
        >>> write_image(p, np.ones((1, 3, 4, 5), np.float32), spacing=(3.0, 1.0, 0.5))
        >>> d = read_image(p); d.array.shape, d.spacing
        ((1, 3, 4, 5), (3.0, 1.0, 0.5))
    """
    check_spatial_dims(spatial_dims)
    path = Path(path)
    fmt = image_format(path)
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if spacing is not None and len(spacing) not in (2, 3):
        raise DataError(f"spacing {tuple(spacing)} must have 2 or 3 values, one per spatial axis", file=path)
    if spatial_dims is None and spacing is not None:
        spatial_dims = len(spacing)
    arr = as_channels_first(arr, spatial_dims, path)
    if spacing is not None and len(spacing) != arr.ndim - 1:
        raise DataError(
            f"spacing {tuple(spacing)} has {len(spacing)} values for {arr.ndim - 1} spatial axes", file=path
        )
    spacing_ = tuple(float(s) for s in spacing) if spacing is not None else None
    if fmt == "pil":
        write_pil(path, arr, spacing_, palette=palette)
        return
    writer = {"tiff": write_tiff, "nifti": write_nifti, "zarr": write_zarr, "npy": write_npy}
    writer[fmt](path, arr, spacing_)


def read_palette(path: str | os.PathLike[str]) -> list[tuple[int, int, int]] | None:
    """The colours of a palette image (a PNG or BMP in mode ``P``), one RGB per index; ``None`` for any
    other image or format.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels.png"
        >>> write_image(p, np.array([[0, 1]], np.uint8), palette=[(0, 0, 0), (0, 255, 0)])
        >>> read_palette(p), read_mask(p).tolist()
        ([(0, 0, 0), (0, 255, 0)], [[0, 1]])
    """
    path = Path(path)
    if image_format(path) != "pil":
        return None
    check_file(path, "pil")
    return _pil_palette(path)


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageData",
    "Layout",
    "LazyImage",
    "image_format",
    "is_image_file",
    "is_zarr_dir",
    "open_image",
    "open_mask",
    "read_image",
    "read_mask",
    "read_palette",
    "strip_suffix",
    "write_image",
]
