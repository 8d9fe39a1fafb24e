"""Streaming output targets: arrays written one slab (run of rows along the first spatial axis) at a time.

- TIFF (incl. BigTIFF) and ``.npy``: the header is written first, then each slab goes straight to its
  byte offset with ``os.pwrite``: nothing accumulates in memory (uncompressed, contiguous data that any
  reader, ``tifffile.memmap`` included, opens directly).
- Compressed TIFF (``compression=`` ``zlib``/``lzw``/``zstd``): slabs go uncompressed to a scratch ``.npy``
  beside the destination as above; :meth:`commit` then compresses it tile by tile (256 x 256) into the
  TIFF, reading the scratch one band of tile rows at a time with ``os.pread`` (no memory map, so no page of
  it counts in the process's memory) and handing the encoder :data:`ENCODE_BATCH_BYTES` of tiles at a time:
  memory stays at a band of tiles, the disk holds the uncompressed data until the commit.
- zarr: slabs are assigned into a chunked array on disk.
- OME-Zarr (a destination named ``*.ome.zarr``): the same, into level 0 of a multiscale pyramid, and every
  coarser level (Y and X halved per level by stride sampling) gets its rows of each slab as the slab
  arrives, so the pyramid is complete when the last slab is written and nothing is held in memory.
- PNG/JPEG/BMP and NIfTI cannot be written piecewise; their (small) arrays are gathered in memory and
  written at the end with :func:`unetkit.data.io.write_image`; a label PNG (``lead=0``) is a palette PNG
  whose palette is ``meta.colours``.

Every target writes to a temporary path beside its destination and renames it on :meth:`commit`
(``unetkit.utils.atomic_path``; ``atomic_dir`` for zarr folders); :meth:`abort` leaves the destination
untouched. What goes into the files (TIFF's OME-XML, spacing, compression and the BigTIFF switch; zarr
chunks, dimension names and spacing; OME-Zarr's multiscales, ``image-label`` and ``labels`` metadata; the
``.npy`` header) is decided by the format layer, :mod:`unetkit.data.io`, exactly as for
:func:`~unetkit.data.io.write_image`. What the caller knows about the array beyond its shape (channel or
class names, colours, compression, the OME-Zarr layout) travels in one :class:`OutputMeta`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io import image_format, write_image
from unetkit.data.io.npy import write_npy_header
from unetkit.data.io.tiff import TIFF_TILE, check_compression, tiff_write_options
from unetkit.data.io.zarrio import CHUNK_EDGE, create_ome_zarr, create_zarr
from unetkit.errors import DataError
from unetkit.utils import atomic_dir, atomic_path

ENCODE_BATCH_BYTES = 16 * 2**20
"""Uncompressed tiles handed to tifffile's (threaded) encoder at a time when a compressed TIFF is committed:
256 of 256 x 256 uint8 tiles keep every thread busy; tifffile's own default batch (512 MiB) would hold a
whole 20000² label image (measured with 4 encoder threads: +156 MB at the commit of a 20000² one)."""


@dataclass(frozen=True)
class OutputMeta:
    """What a target stores about its array beside the pixels, where its format can.

    Attributes:
        names: channel names (``lead=1``: e.g. the class of each probability channel) or, for a label
            image (``lead=0``), the class name of each label value; TIFF (OME-XML channels), OME-Zarr.
        colours: RGB per channel or per label value (OME-Zarr ``omero``/``image-label`` colours; a label PNG's
            palette).
        compression: TIFF only: ``zlib``, ``lzw``, ``zstd`` or ``None``/``"none"`` (uncompressed).
        ngff_version: OME-Zarr only: ``"0.4"`` (zarr v2) or ``"0.5"`` (zarr v3).
        labels_group: OME-Zarr labels only: write the label image at ``labels/unetkit`` in an image group
            (the layout of an input OME-Zarr's ``labels/``) instead of at the root.
    """

    names: list[str] | None = None
    colours: list[tuple[int, int, int]] | None = None
    compression: str | None = None
    ngff_version: str = "0.4"
    labels_group: bool = False


class Target:
    """An array of ``shape = (*lead, *spatial)`` on disk, written slab by slab along ``spatial[0]``.

    Args:
        path: destination; the format comes from its suffix.
        shape: the full array shape.
        dtype: its dtype.
        lead: how many leading non-spatial axes ``shape`` has (0 for labels, 1 for probabilities).
        spacing: voxel size, stored where the format can.
        meta: names, colours, compression, OME-Zarr layout (:class:`OutputMeta`).
    """

    def __init__(
        self,
        path: Path,
        shape: tuple[int, ...],
        dtype: Any,
        lead: int = 0,
        spacing: tuple[float, ...] | None = None,
        meta: OutputMeta | None = None,
    ) -> None:
        self.path, self.shape, self.dtype, self.lead = Path(path), tuple(shape), np.dtype(dtype), lead
        self.spacing = spacing
        self.meta = meta or OutputMeta()
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

        options = tiff_write_options(self.shape, self.dtype, self.spacing, lead=self.lead, channel_names=self._names())
        tifffile.imwrite(self.tmp, shape=self.shape, dtype=self.dtype, **options)
        with tifffile.TiffFile(self.tmp) as tif:
            offset = tif.series[0].dataoffset
        if offset is None:
            raise DataError("tifffile did not lay the data out contiguously", file=self.path, fix="write .zarr instead")
        return int(offset)

    def _names(self) -> list[str] | None:
        return self.meta.names if self.lead == 1 else None

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


class CompressedTiffTarget(Target):
    """A compressed, tiled TIFF: slabs streamed to an uncompressed scratch ``.npy``, compressed at commit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scratch = self.tmp.with_name(self.tmp.name + ".raw.npy")
        self.raw = RawTarget(self.scratch, self.shape, self.dtype, lead=self.lead)

    def write(self, start: int, block: np.ndarray) -> None:
        self.raw.write(start, block)
        self.written = self.raw.written

    def _tiles(self) -> Iterator[np.ndarray]:
        """Every page's 256 x 256 tiles in file order, edge tiles zero-padded (tifffile's tile stream).

        The scratch is read one band of tile rows at a time with ``pread`` (not memory-mapped), so the
        process holds one band, never the image's pages.
        """
        t = TIFF_TILE
        rows, cols = self.shape[-2:]
        row_bytes = cols * self.dtype.itemsize
        with open(self.scratch, "rb") as f:
            for flat, _ in enumerate(np.ndindex(*self.shape[:-2])):
                for y in range(0, rows, t):
                    n = min(t, rows - y)
                    buf = os.pread(f.fileno(), n * row_bytes, self.raw.offset + (flat * rows + y) * row_bytes)
                    band = np.frombuffer(buf, self.dtype).reshape(n, cols)
                    for x in range(0, cols, t):
                        tile = np.zeros((t, t), self.dtype)
                        part = band[:, x : x + t]
                        tile[: part.shape[0], : part.shape[1]] = part
                        yield tile

    def _finish(self) -> None:
        import tifffile

        try:
            self.raw.commit()
            opts = tiff_write_options(self.shape, self.dtype, self.spacing, lead=self.lead,
                                      channel_names=self.meta.names if self.lead == 1 else None,
                                      compression=self.meta.compression)  # fmt: skip
            # tifffile's threaded encoder takes tiles in batches of buffersize bytes (512 MiB by default, so a
            # whole 20000² label image): bound it, or a many-core machine holds the image at the commit
            tifffile.imwrite(self.tmp, self._tiles(), shape=self.shape, dtype=self.dtype, buffersize=ENCODE_BATCH_BYTES,
                             **opts)  # fmt: skip
        finally:
            self.scratch.unlink(missing_ok=True)

    def _close_quietly(self) -> None:
        self.raw.abort()
        self.scratch.unlink(missing_ok=True)


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


class OmeZarrTarget(Target):
    """An OME-Zarr multiscale image (or label image, ``lead=0``) whose every level is written as slabs arrive.

    Levels come from :func:`~unetkit.data.io.zarrio.create_ome_zarr`; level ``i`` (factor ``f``) takes the
    slab's rows whose index is a multiple of ``f``, every ``f``-th column (stride sampling: for labels the
    only downsampling that invents no label, for probabilities the cheap one). In 3D the slabs run along Z,
    which no level downsamples, so each level gets every plane, strided in Y and X.
    """

    def _atomic(self) -> AbstractContextManager[Path]:
        return atomic_dir(self.path)

    def __init__(self, *args: Any, chunk: int = CHUNK_EDGE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        m = self.meta
        self.levels = create_ome_zarr(
            self.tmp, self.shape, self.dtype, lead=self.lead, spacing=self.spacing, channel_names=m.names,
            colours=m.colours, label=self.lead == 0, labels_group=self.lead == 0 and m.labels_group,
            version=m.ngff_version, chunk_edge=chunk,
        )  # fmt: skip
        self.spatial_dims = len(self.shape) - self.lead

    def write(self, start: int, block: np.ndarray) -> None:
        block = block.astype(self.dtype, copy=False)
        rows = block.shape[self.lead]
        lead = (slice(None),) * self.lead
        for f, arr in self.levels:
            if self.spatial_dims == 3:  # slabs along Z: every plane, strided in Y and X
                arr[(*lead, slice(start, start + rows))] = block[
                    (*lead, slice(None), slice(None, None, f), slice(None, None, f))
                ]
                continue
            first = -(-start // f)  # the first level row at or after the slab's start
            stop = -(-(start + rows) // f)
            if stop > first:
                part = block[(*lead, slice(first * f - start, None, f), slice(None, None, f))]
                arr[(*lead, slice(first, stop))] = part
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
        palette = self.meta.colours if self.lead == 0 else None  # a label PNG becomes a palette PNG
        write_image(self.tmp, self.array, spacing=self.spacing, spatial_dims=spatial_dims, palette=palette)


def open_target(
    path: str | os.PathLike[str],
    shape: tuple[int, ...],
    dtype: Any,
    *,
    lead: int = 0,
    spacing: tuple[float, ...] | None = None,
    meta: OutputMeta | None = None,
) -> Target:
    """The streaming target for ``path``'s format (see the module docstring): ``*.ome.zarr`` is OME-Zarr.

    ``meta.compression`` applies to TIFF destinations only (elsewhere it is refused).

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
    meta = meta or OutputMeta()
    fmt = image_format(path)
    compression = check_compression(meta.compression)
    if compression is not None and fmt != "tiff":
        raise DataError(f"compression {compression!r} applies to TIFF outputs", file=path,
                        fix="write a .tif, or leave compression out (zarr chunks are compressed anyway)")  # fmt: skip
    cls: type[Target] = {"tiff": RawTarget, "npy": RawTarget, "zarr": ZarrTarget}.get(fmt, MemoryTarget)
    if fmt == "tiff" and compression is not None:
        cls = CompressedTiffTarget
    if fmt == "zarr" and Path(path).name.lower().endswith(".ome.zarr"):
        cls = OmeZarrTarget
    return cls(Path(path), tuple(int(s) for s in shape), dtype, lead=lead, spacing=spacing, meta=meta)
