"""Axis layouts and the lazily read image: map a file's own axis order onto unetkit's ``(C, *spatial)``.

A file stores its axes in its own order (``YXS`` for an RGB TIFF, ``XYZ`` for NIfTI, ``ZYX`` for a
multi-page stack). :func:`layout_from_axes` turns axis letters into a :class:`Layout` (which source axis
is the channel axis, which are spatial and in what order, which size-1 axes are dropped) and
:class:`LazyImage` applies it on every region read, so only the requested region is read from disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from unetkit.data.io.common import BadFile
from unetkit.errors import DataError

log = logging.getLogger(__name__)

_SPATIAL_ORDER = {"Z": 0, "Y": 1, "X": 2}


class _Sliceable(Protocol):
    shape: tuple[int, ...]

    def __getitem__(self, key: Any) -> Any: ...


@dataclass(frozen=True)
class Layout:
    """Where each output axis ``(C, *spatial)`` lives in the source array.

    Attributes:
        channel: source axis holding the channels, or ``None`` when the file has one channel and no axis.
        spatial: source axes of the output's spatial axes, in output order (``Z, Y, X``).
        drop: source axes of size 1 that are indexed away.
    """

    channel: int | None
    spatial: tuple[int, ...]
    drop: tuple[int, ...] = ()

    def out_shape(self, src_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Output shape ``(C, *spatial)`` for a source of shape ``src_shape``."""
        c = 1 if self.channel is None else src_shape[self.channel]
        return (c, *(src_shape[i] for i in self.spatial))

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Rearrange a whole in-memory source array into ``(C, *spatial)``."""
        return _rearrange(array, self, tuple(slice(None) for _ in range(1 + len(self.spatial))))


def guess_axes(shape: tuple[int, ...], spatial_dims: int | None) -> str:
    """Axis letters for an array without axis metadata (``.npy``, plain zarr).

    Channels-first is assumed unless the last axis is short (<= 4) and the first is not, which is the
    channels-last RGB(A) layout. A 3-axis array with a short first axis is a 2D multi-channel image unless
    ``spatial_dims=3`` says it is a volume.

    Example:
        >>> guess_axes((512, 512, 3), None), guess_axes((3, 64, 64), None), guess_axes((40, 64, 64), None)
        ('YXC', 'CYX', 'ZYX')
        >>> guess_axes((3, 64, 64), 3), guess_axes((2, 8, 64, 64), None)
        ('ZYX', 'CZYX')
    """
    n = len(shape)
    last_short = shape[-1] <= 4 < shape[0]
    if n == 2:
        return "YX"
    if n == 3:
        if spatial_dims == 3:
            return "ZYX"
        if last_short:
            return "YXC"
        return "CYX" if shape[0] <= 4 or spatial_dims == 2 else "ZYX"
    if n == 4:
        return "ZYXC" if last_short else "CZYX"
    if n == 5 and shape[0] == 1:
        return "QCZYX"
    return "?" * n


def layout_from_axes(shape: tuple[int, ...], axes: str, spatial_dims: int | None, path: Path | str) -> Layout:
    """Decide the :class:`Layout` from axis letters (tifffile's convention).

    ``C``/``S`` are channels, ``Z``/``Y``/``X`` spatial; any other axis of size 1 is dropped, and one other
    axis of size > 1 (a page or time axis) becomes ``Z`` for a 3D read or the channel axis for a 2D read.

    Example:
        >>> layout_from_axes((16, 16, 3), "YXS", None, "x.tif")
        Layout(channel=2, spatial=(0, 1), drop=())
        >>> layout_from_axes((5, 16, 16), "QYX", None, "x.tif").out_shape((5, 16, 16))
        (1, 5, 16, 16)
        >>> layout_from_axes((16, 16, 8), "XYZ", None, "x.nii").spatial
        (2, 1, 0)
    """
    axes = axes.upper()
    if len(axes) != len(shape) or "?" in axes:
        raise DataError(
            f"cannot tell channels from spatial axes in an array of shape {shape}",
            file=path,
            fix="store it as (C, *spatial) with 2 or 3 spatial axes, or as a TIFF with axes metadata",
        )
    drop = [i for i, a in enumerate(axes) if a not in "CSZYX" and shape[i] == 1]
    chan = [i for i, a in enumerate(axes) if a in "CS"]
    if len(chan) > 1:
        drop += [i for i in chan if shape[i] == 1]
        chan = [i for i in chan if shape[i] != 1] or chan[:1]
    spat = [i for i, a in enumerate(axes) if a in "ZYX"]
    if spatial_dims == 2 and len(spat) == 3:
        z = next(i for i in spat if axes[i] == "Z")
        if shape[z] == 1:
            drop.append(z)
            spat.remove(z)
        elif not chan:
            chan = [z]
            spat.remove(z)
    for i in [i for i, a in enumerate(axes) if a not in "CSZYX" and shape[i] != 1]:
        if len(spat) == 2 and spatial_dims != 2:
            spat.append(i)
        elif not chan:
            chan = [i]
        else:
            chan.append(i)
    if spatial_dims == 3 and len(spat) == 2 and len(chan) == 1:
        spat.append(chan.pop())  # e.g. a 3-page TIFF tifffile took for planar RGB: read as a 3-slice volume
    if len(chan) > 1:
        raise DataError(
            f"axes '{axes}' of shape {shape} have more than one channel-like axis",
            file=path,
            fix="save one image per file as (C, Y, X) or (C, Z, Y, X)",
        )
    if len(spat) not in (2, 3) or (spatial_dims is not None and len(spat) != spatial_dims):
        want = f"{spatial_dims}D" if spatial_dims else "2D or 3D"
        raise DataError(
            f"axes '{axes}' of shape {shape} give {len(spat)} spatial axes, expected {want}",
            file=path,
            fix="pass the right spatial_dims or re-save the image",
        )
    spat.sort(key=lambda i: _SPATIAL_ORDER.get(axes[i], -1))
    return Layout(channel=chan[0] if chan else None, spatial=tuple(spat), drop=tuple(sorted(drop)))


def _normalise_key(key: Any, shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    """Turn a numpy-style basic index into one slice per axis plus the axes given as integers."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        fill = len(shape) - (len(key) - 1)
        key = key[:i] + (slice(None),) * fill + key[i + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices ({len(key)}) for an image with {len(shape)} axes")
    key = key + (slice(None),) * (len(shape) - len(key))
    slices: list[slice] = []
    ints: list[int] = []
    for axis, (k, n) in enumerate(zip(key, shape, strict=True)):
        if isinstance(k, (int, np.integer)):
            i = int(k) + n if k < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"index {k} is out of bounds for axis {axis} of size {n}")
            slices.append(slice(i, i + 1))
            ints.append(axis)
        elif isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step < 1:
                raise IndexError("region reads support positive steps only")
            slices.append(slice(start, max(start, stop), step))
        else:
            raise IndexError(f"region reads take integers and slices, got {type(k).__name__}")
    return tuple(slices), tuple(ints)


def _rearrange(src: _Sliceable, layout: Layout, key: tuple[slice, ...]) -> np.ndarray:
    """Read ``key`` (one slice per output axis) from ``src`` and return it as ``(C, *spatial)``."""
    src_key, kept = _source_key(layout, len(src.shape), key)
    return _arrange(np.asarray(src[src_key]), layout, kept, key)


def _source_key(layout: Layout, ndim: int, key: tuple[slice, ...]) -> tuple[tuple[Any, ...], list[int]]:
    """The source index for output slices ``key``, and the source axes it keeps (in source order)."""
    src_key: list[Any] = []
    kept: list[int] = []
    for j in range(ndim):
        if j in layout.drop:
            src_key.append(0)
        elif j == layout.channel:
            src_key.append(key[0])
            kept.append(j)
        else:
            src_key.append(key[1 + layout.spatial.index(j)])
            kept.append(j)
    return tuple(src_key), kept


def _arrange(region: np.ndarray, layout: Layout, kept: list[int], key: tuple[slice, ...]) -> np.ndarray:
    """A region read with :func:`_source_key` put into ``(C, *spatial)`` order."""
    order = ([layout.channel] if layout.channel is not None else []) + list(layout.spatial)
    region = region.transpose([kept.index(j) for j in order])
    if layout.channel is None:
        region = region[None][key[0]]
    return region


_View = TypeVar("_View", bound="ImageView")


class ImageView:
    """What every lazily read image offers beside ``shape`` and ``__getitem__`` (regions of ``(C, *spatial)``):
    its axis counts, ``np.asarray``, :meth:`read` and use as a context manager that closes it."""

    shape: tuple[int, ...]

    def __getitem__(self, key: Any) -> np.ndarray:
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        """Number of axes, ``1 + spatial_dims``."""
        return len(self.shape)

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return len(self.shape) - 1

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        arr = self[...]
        return arr if dtype is None else arr.astype(dtype)

    def read(self) -> np.ndarray:
        """Read the whole image into memory as ``(C, *spatial)``."""
        return self[...]

    def close(self) -> None:
        """Release what the image holds open (nothing here)."""

    def __enter__(self: _View) -> _View:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LazyImage(ImageView):
    """An image on disk seen as a ``(C, *spatial)`` array; indexing reads only the requested region.

    Built by :func:`unetkit.data.io.open_image`. ``image[:, 0:256, 0:256]`` returns a numpy array of that
    region in the file's dtype; ``np.asarray(image)`` reads everything.

    Args:
        source: the file's array (a zarr array, nibabel's array proxy, a memory map, an in-memory array).
        layout: where the output axes live in ``source``.
        path: the file, for messages.
        spacing: voxel size per spatial axis, ``(Z, Y, X)`` order.
        dtype: the pixel dtype (default: read one pixel to find out).
        on_close: releases the file handle.
        bad_file: the format's rule for reader errors; a read that fails in the reader raises a
            :class:`~unetkit.errors.DataError`, anything else propagates as it is.

    Shape:
        ``(C, *spatial)`` with 2 or 3 spatial axes.

    Example:
        >>> import numpy as np
        >>> lazy = LazyImage(np.zeros((8, 6, 3), np.uint8), Layout(channel=2, spatial=(0, 1)), "rgb.npy")
        >>> lazy.shape, lazy[:, 2:4, :].shape, lazy[0].shape
        ((3, 8, 6), (3, 2, 6), (8, 6))
    """

    def __init__(
        self,
        source: _Sliceable,
        layout: Layout,
        path: Path | str,
        spacing: tuple[float, ...] | None = None,
        dtype: np.dtype[Any] | None = None,
        on_close: Callable[[], None] | None = None,
        bad_file: BadFile | None = None,
    ) -> None:
        self.source = source
        self.bad_file = bad_file
        self.layout = layout
        self.path = Path(path)
        self.spacing = spacing
        self.shape: tuple[int, ...] = layout.out_shape(tuple(source.shape))
        self._on_close = on_close
        if dtype is None:
            dtype = self[(slice(0, 1),) * len(self.shape)].dtype if all(self.shape) else np.dtype(np.uint8)
        self.dtype: np.dtype[Any] = np.dtype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        slices, ints = _normalise_key(key, self.shape)
        src_key, kept = _source_key(self.layout, len(self.source.shape), slices)
        if self.bad_file is None:
            raw = np.asarray(self.source[src_key])
        else:
            with self.bad_file.guard(self.path, f"reading region {slices}"):
                raw = np.asarray(self.source[src_key])
        region = _arrange(raw, self.layout, kept, slices)
        return region.squeeze(axis=ints) if ints else region

    def close(self) -> None:
        """Release the open file handle, if any."""
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def __repr__(self) -> str:
        src = type(self.source).__name__
        return f"LazyImage({self.path.name!r}, shape={self.shape}, dtype={self.dtype}, source={src})"
