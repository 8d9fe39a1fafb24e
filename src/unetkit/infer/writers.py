"""Streaming output targets: arrays written one slab (run of rows along the first spatial axis) at a time.

- TIFF (incl. BigTIFF) and ``.npy``: the header is written first, then each slab goes straight to its
  byte offset with ``os.pwrite``: nothing accumulates in memory (uncompressed, contiguous data that any
  reader, ``tifffile.memmap`` included, opens directly).
- zarr: slabs are assigned into a chunked array on disk.
- PNG/JPEG/BMP and NIfTI cannot be written piecewise; their (small) arrays are gathered in memory and
  written at the end with :func:`unetkit.data.io.write_image`.

Every target writes to a temporary path beside its destination and renames it on :meth:`commit`
(``unetkit.utils.atomic_path``; ``atomic_dir`` for zarr folders); :meth:`abort` leaves the destination
untouched. What goes into the files (TIFF axes, spacing and the BigTIFF switch; zarr chunks, dimension
names and spacing; the ``.npy`` header) is decided by the format layer, :mod:`unetkit.data.io`, exactly as
for :func:`~unetkit.data.io.write_image`.
"""

from __future__ import annotations

import contextlib
import math
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io import image_format, write_image
from unetkit.data.io.npy import write_npy_header
from unetkit.data.io.tiff import tiff_write_options
from unetkit.data.io.zarrio import CHUNK_EDGE, create_zarr
from unetkit.errors import DataError
from unetkit.utils import atomic_dir, atomic_path


class Target:
    """An array of ``shape = (*lead, *spatial)`` on disk, written slab by slab along ``spatial[0]``.

    Args:
        path: destination; the format comes from its suffix.
        shape: the full array shape.
        dtype: its dtype.
        lead: how many leading non-spatial axes ``shape`` has (0 for labels, 1 for probabilities).
        spacing: voxel size, stored where the format can.
    """

    def __init__(
        self, path: Path, shape: tuple[int, ...], dtype: Any, lead: int = 0, spacing: tuple[float, ...] | None = None
    ) -> None:
        self.path, self.shape, self.dtype, self.lead = Path(path), tuple(shape), np.dtype(dtype), lead
        self.spacing = spacing
        self._stack = contextlib.ExitStack()
        self.tmp: Path = self._stack.enter_context(self._atomic())
        self.written = 0

    def _atomic(self) -> AbstractContextManager[Path]:
        """The temporary path that replaces :attr:`path` on :meth:`commit`."""
        return atomic_path(self.path)

    def write(self, start: int, block: np.ndarray) -> None:
        """Write ``block`` (``(*lead, rows, *spatial[1:])``) at rows ``[start, start + rows)``."""
        raise NotImplementedError

    def _finish(self) -> None:
        """Flush the temporary file (called before the rename)."""

    def commit(self) -> Path:
        """Finish and move the result into place; returns the destination."""
        self._finish()
        self._stack.close()
        return self.path

    def abort(self) -> None:
        """Drop the temporary output; the destination is left as it was."""
        with contextlib.suppress(Exception):
            self._close_quietly()
        err = RuntimeError("aborted")
        self._stack.__exit__(RuntimeError, err, None)

    def _close_quietly(self) -> None:
        pass


class RawTarget(Target):
    """TIFF or ``.npy`` with contiguous uncompressed data: a header, then slabs ``pwrite``-n in place."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fmt = image_format(self.path)
        if fmt == "tiff":
            offset = self._tiff_header()
        else:
            offset = self._npy_header()
        self.offset = offset
        self.fd = os.open(self.tmp, os.O_RDWR)

    def _tiff_header(self) -> int:
        import tifffile

        options = tiff_write_options(self.shape, self.dtype, self.spacing, lead=self.lead)
        tifffile.imwrite(self.tmp, shape=self.shape, dtype=self.dtype, **options)
        with tifffile.TiffFile(self.tmp) as tif:
            offset = tif.series[0].dataoffset
        if offset is None:
            raise DataError("tifffile did not lay the data out contiguously", file=self.path, fix="write .zarr instead")
        return int(offset)

    def _npy_header(self) -> int:
        with open(self.tmp, "wb") as f:
            return write_npy_header(f, self.shape, self.dtype)

    def write(self, start: int, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        spatial = self.shape[self.lead :]
        row_bytes = math.prod(spatial[1:]) * self.dtype.itemsize
        lead_shape = self.shape[: self.lead]
        rows = block.shape[self.lead]
        for idx in np.ndindex(*lead_shape):
            flat = int(np.ravel_multi_index(idx, lead_shape)) if lead_shape else 0
            pos = self.offset + (flat * spatial[0] + start) * row_bytes
            data = memoryview(block[idx].reshape(-1)).cast("B")  # type: ignore[arg-type]
            done = 0
            while done < rows * row_bytes:
                done += os.pwrite(self.fd, data[done:], pos + done)
        self.written += rows

    def _finish(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)

    def _close_quietly(self) -> None:
        os.close(self.fd)


class ZarrTarget(Target):
    """A chunked zarr array (:func:`~unetkit.data.io.zarrio.create_zarr`), written into a temporary folder."""

    def _atomic(self) -> AbstractContextManager[Path]:
        return atomic_dir(self.path)

    def __init__(self, *args: Any, chunk: int = CHUNK_EDGE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.array = create_zarr(
            self.tmp, self.shape, self.dtype, lead=self.lead, spacing=self.spacing, chunk_edge=chunk
        )  # fmt: skip

    def write(self, start: int, block: np.ndarray) -> None:
        rows = block.shape[self.lead]
        self.array[(slice(None),) * self.lead + (slice(start, start + rows),)] = block.astype(self.dtype, copy=False)
        self.written += rows


class MemoryTarget(Target):
    """Formats that cannot be written piecewise (PNG, JPEG, BMP, NIfTI): gathered, then written once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.array = np.zeros(self.shape, self.dtype)

    def write(self, start: int, block: np.ndarray) -> None:
        rows = block.shape[self.lead]
        self.array[(slice(None),) * self.lead + (slice(start, start + rows),)] = block
        self.written += rows

    def _finish(self) -> None:
        spatial_dims = len(self.shape) - self.lead
        write_image(self.tmp, self.array, spacing=self.spacing, spatial_dims=spatial_dims)


def open_target(
    path: str | os.PathLike[str],
    shape: tuple[int, ...],
    dtype: Any,
    *,
    lead: int = 0,
    spacing: tuple[float, ...] | None = None,
) -> Target:
    """The streaming target for ``path``'s format (see the module docstring).

    Shape:
        ``shape = (*lead_axes, *spatial)``; slabs are ``(*lead_axes, rows, *spatial[1:])``.

    Examples:
        >>> import numpy as np, tempfile, pathlib, tifffile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels.tif"
        >>> t = open_target(p, (4, 3), np.uint8)
        >>> t.write(0, np.ones((3, 3), np.uint8)); t.write(3, np.full((1, 3), 2, np.uint8))
        >>> _ = t.commit(); tifffile.imread(p).tolist()
        [[1, 1, 1], [1, 1, 1], [1, 1, 1], [2, 2, 2]]
        >>> q = p.with_name("vol.zarr")
        >>> t = open_target(q, (2, 3, 4, 5), np.float16, lead=1)
        >>> t.write(0, np.ones((2, 3, 4, 5))); _ = t.commit()
        >>> import zarr; float(zarr.open_array(str(q))[1, 2, 3, 4])
        1.0
    """
    fmt = image_format(path)
    cls = {"tiff": RawTarget, "npy": RawTarget, "zarr": ZarrTarget}.get(fmt, MemoryTarget)
    return cls(Path(path), tuple(int(s) for s in shape), dtype, lead=lead, spacing=spacing)
