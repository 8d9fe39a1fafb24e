"""``.npy``: read through a memory map (never pickles), written whole or header-first for streaming."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import IO, Any

import numpy as np

from unetkit.data.io.common import BadFile
from unetkit.data.io.lazy import LazyImage, guess_axes, layout_from_axes
from unetkit.utils import atomic_path

log = logging.getLogger(__name__)

BAD_NPY = BadFile("npy", (ValueError, OSError, EOFError))
"""numpy raises ``ValueError`` for a damaged header (or an object array, which is never unpickled) and for a
file shorter than its header says; ``OSError``/``EOFError`` for read failures."""


def open_npy(path: Path, spatial_dims: int | None) -> LazyImage:
    """Memory-map the array; its axes are guessed (:func:`~unetkit.data.io.lazy.guess_axes`)."""
    with BAD_NPY.guard(path):
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    layout = layout_from_axes(arr.shape, guess_axes(arr.shape, spatial_dims), spatial_dims, path)
    return LazyImage(arr, layout, path, dtype=arr.dtype, bad_file=BAD_NPY)


def write_npy(path: Path, arr: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    """Write ``(C, *spatial)`` atomically; ``.npy`` has no place for spacing (dropped)."""
    if spacing is not None:
        log.debug("%s: .npy does not store spacing; it is dropped", path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def write_npy_header(f: IO[bytes], shape: tuple[int, ...], dtype: Any) -> int:
    """Write a ``.npy`` header for a C-ordered array and size the file for its data; returns the data offset.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
        >>> with open(p, "wb") as f:
        ...     offset = write_npy_header(f, (2, 3), "uint16")
        >>> np.load(p).shape, p.stat().st_size - offset
        ((2, 3), 12)
    """
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_2_0(f, header)  # type: ignore[arg-type]
    offset = f.tell()
    f.truncate(offset + math.prod(shape) * dtype.itemsize)
    return offset
