"""TIFF and BigTIFF: lazy region reads through tifffile's zarr store; the rules for every TIFF unetkit writes.

Reading: the first series, level 0; its axes come from tifffile (``YXS``, ``QYX``, ImageJ hyperstacks).
Spacing comes from unetkit's own ``spacing`` metadata, else ImageJ's z spacing and the X/Y resolution tags
(an inch unit is a print DPI, not a voxel size, and is ignored).

Writing (:func:`write_tiff` here and the streaming prediction writer): :func:`tiff_write_options` is the one
place that decides the axes metadata, how spacing is stored, and whether the file is BigTIFF
(:func:`needs_bigtiff`).
"""

from __future__ import annotations

import functools
import math
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io.common import BadFile
from unetkit.data.io.lazy import LazyImage, layout_from_axes
from unetkit.errors import DataError
from unetkit.utils import atomic_path

BIGTIFF_BYTES = 2**31 - 2**25
"""Pixel data above this many bytes go to a BigTIFF: 2 GiB less 32 MiB of headroom for tags and metadata,
so every offset of a classic TIFF stays below 2**31 (readers that take offsets as signed 32-bit integers)."""


def needs_bigtiff(nbytes: int) -> bool:
    """Whether a TIFF holding ``nbytes`` of pixel data is written as BigTIFF (see :data:`BIGTIFF_BYTES`).

    Example:
        >>> needs_bigtiff(2**20), needs_bigtiff(2**31)
        (False, True)
    """
    return nbytes > BIGTIFF_BYTES


def tiff_write_options(
    shape: tuple[int, ...], dtype: Any, spacing: tuple[float, ...] | None, lead: int = 1
) -> dict[str, Any]:
    """Keyword arguments to ``tifffile.imwrite`` for an array ``(*lead_axes, *spatial)``.

    Leading axes are channels (``C``); spacing is stored twice: in unetkit's JSON metadata (all axes, read
    back exactly) and as X/Y resolution tags without a unit (for other readers).

    Example:
        >>> opts = tiff_write_options((2, 5, 6), "uint8", (0.5, 0.25))
        >>> opts["metadata"], opts["resolution"], opts["bigtiff"]
        ({'axes': 'CYX', 'spacing': [0.5, 0.25]}, (4.0, 2.0), False)
    """
    spatial = shape[lead:]
    meta: dict[str, Any] = {"axes": "C" * lead + ("YX" if len(spatial) == 2 else "ZYX")}
    opts: dict[str, Any] = {
        "photometric": "minisblack",
        "metadata": meta,
        "bigtiff": needs_bigtiff(math.prod(shape) * np.dtype(dtype).itemsize),
    }
    if spacing is not None:
        meta["spacing"] = [float(s) for s in spacing]
        opts["resolution"] = (1.0 / spacing[-1], 1.0 / spacing[-2])
        opts["resolutionunit"] = "NONE"
    return opts


def write_tiff(path: Path, arr: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    """Write ``(C, *spatial)`` as an uncompressed TIFF, atomically."""
    import tifffile

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, arr, **tiff_write_options(arr.shape, arr.dtype, spacing))


# ----------------------------------------------------------------------------------------------- reading


def _missing_codec(path: Path, exc: BaseException) -> DataError | None:
    """tifffile decodes LZW, JPEG, zstd, PackBits, ... only with the optional ``imagecodecs`` package."""
    text = str(exc)
    if "imagecodecs" not in text:
        return None
    fix = "pip install imagecodecs, or re-save the image uncompressed (or with deflate)"
    m = re.search(r"(COMPRESSION|PREDICTOR)\.(\w+)", text)
    if m is None:
        return DataError(f"reading this TIFF needs the 'imagecodecs' package ({text})", file=path, fix=fix)
    what = f"compressed with {m.group(2)}" if m.group(1) == "COMPRESSION" else f"uses the {m.group(2)} predictor"
    return DataError(
        f"the TIFF is {what}, which tifffile decodes only with the 'imagecodecs' package", file=path, fix=fix
    )


@functools.cache
def bad_tiff() -> BadFile:
    """What tifffile raises for a damaged TIFF.

    Its parser reports most damage as ``TiffFileError`` (a ``ValueError``), but flipped bytes in tags and
    offsets also surface as the other types listed here (seen by corrupting files byte by byte); only calls
    into tifffile and reads through its store are guarded, so the breadth stays inside the reader.
    """
    import tifffile

    errors: tuple[type[BaseException], ...] = (
        tifffile.TiffFileError,
        ValueError,
        OSError,
        EOFError,
        struct.error,
        zlib.error,
        KeyError,
        IndexError,
        TypeError,
        ZeroDivisionError,
        RuntimeError,
        AssertionError,
        NotImplementedError,
    )
    return BadFile("tiff", errors, _missing_codec)


def open_tiff(path: Path, spatial_dims: int | None) -> LazyImage:
    """Open the TIFF's first series for region reads."""
    import tifffile
    import zarr

    bad = bad_tiff()
    with bad.guard(path):
        tif = tifffile.TiffFile(path)
    try:
        with bad.guard(path):
            if not tif.series:
                raise DataError("the TIFF holds no image", file=path, fix="re-export it")
            series = tif.series[0]
            shape, axes, dtype = tuple(int(s) for s in series.shape), str(series.axes), series.dtype
            source = zarr.open(series.aszarr(level=0), mode="r")
            meta = _spacing_metadata(tif)
        layout = layout_from_axes(shape, axes, spatial_dims, path)
        spacing = tiff_spacing(meta, len(layout.spatial), path)
        return LazyImage(source, layout, path, spacing=spacing, dtype=dtype, on_close=tif.close, bad_file=bad)  # type: ignore[arg-type]
    except BaseException:
        tif.close()
        raise


def _spacing_metadata(tif: Any) -> dict[str, Any]:
    """The raw metadata spacing may come from (read by tifffile, so inside the reader's guard)."""
    page = tif.pages.first
    tags = {name: page.tags.get(name) for name in ("XResolution", "YResolution", "ResolutionUnit")}
    return {
        "shaped": list(tif.shaped_metadata or ()),
        "imagej": tif.imagej_metadata or {},
        **{name: (tag.value if tag is not None else None) for name, tag in tags.items()},
    }


def tiff_spacing(meta: dict[str, Any], ndim: int, path: Path) -> tuple[float, ...] | None:
    """Spacing from unetkit's own metadata, else ImageJ's z spacing and the X/Y resolution tags.

    Example:
        >>> tiff_spacing({"shaped": [{"spacing": [2, 0.5]}], "imagej": {}}, 2, Path("x.tif"))
        (2.0, 0.5)
        >>> tiff_spacing({"shaped": [], "imagej": {"spacing": 3.0}, "XResolution": (2, 1),
        ...               "YResolution": (4, 1), "ResolutionUnit": 1}, 3, Path("x.tif"))
        (3.0, 0.25, 0.5)
    """
    try:
        for item in meta["shaped"]:
            if isinstance(item, dict) and item.get("spacing") is not None and len(item["spacing"]) == ndim:
                return tuple(float(s) for s in item["spacing"])
        xres, yres, unit = meta.get("XResolution"), meta.get("YResolution"), meta.get("ResolutionUnit")
        if xres is None or yres is None or (unit is not None and int(unit) == 2):  # inch: a print DPI
            return None
        sy, sx = (float(r[1]) / float(r[0]) if r[0] else 1.0 for r in (yres, xres))
        if ndim == 2:
            return (sy, sx) if (sy, sx) != (1.0, 1.0) else None
        sz = float(meta["imagej"].get("spacing", 1.0))
        return (sz, sy, sx) if (sz, sy, sx) != (1.0, 1.0, 1.0) else None
    except (TypeError, ValueError, IndexError, AttributeError) as exc:  # malformed values in the file's tags
        raise DataError(
            f"malformed spacing metadata ({type(exc).__name__}: {exc})",
            file=path,
            fix="re-save the image with a valid resolution (or without one)",
        ) from exc
