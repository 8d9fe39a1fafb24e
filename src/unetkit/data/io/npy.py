"""``.npy``: read through a memory map (never pickles), written whole or header-first for streaming."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import IO, Any

import numpy as np

from unetkit.data.io.common import BadFile, check_declared_size
from unetkit.data.io.lazy import LazyImage, guess_axes, layout_from_axes
from unetkit.utils import atomic_path

log = logging.getLogger(__name__)

BAD_NPY = BadFile("npy", (ValueError, OSError, EOFError))
"""numpy raises ``ValueError`` for a damaged header (or an object array, which is never unpickled) and for a
file shorter than its header says; ``OSError``/``EOFError`` for read failures."""


def open_npy(path: Path, spatial_dims: int | None) -> LazyImage:
    """Memory-map the array; its axes are guessed (:func:`~unetkit.data.io.lazy.guess_axes`).

    The header's shape is checked against the file's size first
    (:func:`~unetkit.data.io.common.check_declared_size`): a header claiming more data than the file holds is
    refused before anything is mapped.
    """
    with BAD_NPY.guard(path):
        shape, dtype = npy_header(path)
    check_declared_size(path, shape, dtype, compressed=False)
    with BAD_NPY.guard(path):
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    layout = layout_from_axes(arr.shape, guess_axes(arr.shape, spatial_dims), spatial_dims, path)
    return LazyImage(arr, layout, path, dtype=arr.dtype, bad_file=BAD_NPY)


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype a ``.npy`` header declares (nothing else is read)."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        # 3.0 differs from 2.0 only in the encoding of structured field names, which images do not have
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(f)
    return tuple(int(n) for n in shape), np.dtype(dtype)


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
