"""NIfTI (``.nii``, ``.nii.gz``) through nibabel: lazy reads through its array proxy.

NIfTI stores ``(X, Y, Z[, C])``; unetkit's spatial order is ``(Z, Y, X)``, so the axes (and the spacing)
are reversed on reading and restored on writing. The spacing is the header's zooms, and the affine
written is the diagonal of the spacing.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from unetkit.data.io.common import BadFile, check_declared_size, check_whole_read
from unetkit.data.io.lazy import LazyImage, layout_from_axes
from unetkit.data.io.regions import BlockGrid
from unetkit.errors import DataError
from unetkit.utils import atomic_path


@functools.cache
def bad_nifti() -> BadFile:
    """What nibabel raises for a damaged file: ``ImageFileError`` when it cannot tell the type,
    ``HeaderDataError``/``ValueError`` for a bad header, ``OSError`` ("Expected N bytes") for short data,
    and gzip's ``BadGzipFile``/``EOFError``/``zlib.error`` for a damaged ``.nii.gz``."""
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    errors = (ImageFileError, HeaderDataError, ValueError, OSError, EOFError, zlib.error, struct.error)
    return BadFile("nifti", errors)


def open_nifti(path: Path, spatial_dims: int | None) -> LazyImage:
    """Open the volume for region reads; a single-slice file is a 2D image."""
    import nibabel as nib

    bad = bad_nifti()
    with bad.guard(path):
        img = nib.load(path, mmap=True)
        shape = tuple(int(s) for s in img.shape)  # type: ignore[attr-defined]
        zooms = tuple(float(z) for z in img.header.get_zooms())  # type: ignore[attr-defined]
        source = img.dataobj  # type: ignore[attr-defined]
        dtype = np.dtype(img.get_data_dtype())  # type: ignore[attr-defined]
    gz = str(path).lower().endswith(".gz")
    check_declared_size(path, shape, dtype, compressed=gz)  # the header's dims against the file, before a read
    if gz:  # gzip cannot seek: decode it once, as one cached block
        proxy, scaled = source, _scaled_dtype(source, dtype)
        nbytes = math.prod(shape) * scaled.itemsize

        def decode(idx: object) -> list[np.ndarray]:
            check_whole_read(path, nbytes, f"a gzip-compressed NIfTI of {' x '.join(map(str, shape))} voxels")
            return [np.asarray(proxy)]

        source = BlockGrid(shape, shape, scaled, decode)
    axes = {2: "XY", 3: "XYZ", 4: "XYZC", 5: "XYZQC"}.get(len(shape))
    if spatial_dims is None and len(shape) >= 3 and shape[2] == 1:
        spatial_dims = 2  # a single-slice NIfTI is a 2D image
    if axes is None:
        raise DataError(f"NIfTI image with {len(shape)} axes", file=path, fix="save it as (X, Y[, Z[, C]])")
    layout = layout_from_axes(shape, axes, spatial_dims, path)
    spacing = tuple(zooms[i] for i in layout.spatial) if len(zooms) >= len(layout.spatial) else None
    return LazyImage(source, layout, path, spacing=spacing, bad_file=bad)


def write_nifti(path: Path, arr: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    """Write ``(C, *spatial)`` atomically; the spacing goes to the zooms and the affine."""
    import nibabel as nib

    spatial = arr.shape[1:]
    data = np.moveaxis(arr, 0, -1)[..., 0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    # (Z, Y, X[, C]) -> (X, Y, Z[, C]); a 2D multi-channel image gets a size-1 Z so C stays the 4th axis
    data = np.transpose(data, [*range(len(spatial))][::-1] + list(range(len(spatial), data.ndim)))
    if len(spatial) == 2 and arr.shape[0] > 1:
        data = data[:, :, None, :]
    zooms = list(spacing[::-1]) if spacing is not None else [1.0] * len(spatial)
    affine = np.diag([*zooms, *([1.0] * (3 - len(zooms))), 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_zooms(tuple(zooms) + (1.0,) * (data.ndim - len(zooms)))
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def _scaled_dtype(proxy: object, dtype: np.dtype) -> np.dtype:  # type: ignore[type-arg]
    """The dtype nibabel's proxy returns (float where the header scales the values)."""
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    return np.dtype(np.float64) if (slope, inter) != (1.0, 0.0) else dtype
