"""What every format shares: the suffix table, :class:`ImageData`, path checks and the bad-file rule.

The bad-file rule (:class:`BadFile`): each format names the exceptions its third-party reader raises
for a damaged file, and only the calls into that reader are guarded, so an error there becomes a
:class:`~unetkit.errors.DataError` naming the file, while a bug in unetkit itself propagates unchanged.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetkit.errors import ConfigError, DataError

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (*PIL_SUFFIXES, *TIFF_SUFFIXES, *NIFTI_SUFFIXES, ".zarr", ".npy")
"""Every suffix :func:`~unetkit.data.io.read_image` and :func:`~unetkit.data.io.write_image` understand."""

ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
"""Files whose presence makes a folder a zarr store (zarr v3, v2 array, v2 group)."""


@dataclass
class ImageData:
    """An image read into memory.

    Attributes:
        array: channels-first pixel data in the file's dtype.
        spacing: voxel size per spatial axis (``(Z, Y, X)`` order), or ``None`` when the file has none.
        path: the file it came from.

    Shape:
        ``array`` is ``(C, *spatial)``.
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None
    path: Path

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.array.ndim - 1


def is_zarr_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding a zarr store (whatever its name)."""
    p = Path(path)
    return p.is_dir() and any((p / f).exists() for f in ZARR_MARKERS)


def image_format(path: str | os.PathLike[str]) -> str:
    """The format of ``path`` from its suffix: ``"pil"``, ``"tiff"``, ``"nifti"``, ``"zarr"`` or ``"npy"``.

    Example:
        >>> image_format("a/b.nii.gz"), image_format("x.TIF"), image_format("y.png")
        ('nifti', 'tiff', 'pil')
    """
    name = Path(path).name.lower()
    if name.endswith(PIL_SUFFIXES):
        return "pil"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(".zarr") or is_zarr_dir(path):
        return "zarr"
    raise DataError(
        f"unknown image format '{Path(path).suffix}'", file=path, fix=f"use one of {', '.join(IMAGE_SUFFIXES)}"
    )


def strip_suffix(name: str) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``).

    Example:
        >>> strip_suffix("case1.nii.gz"), strip_suffix("x.y.png")
        ('case1', 'x.y')
    """
    low = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a suffix unetkit reads (hidden files are not images)."""
    p = Path(path)
    return not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES)


def check_file(path: Path, fmt: str) -> None:
    """Refuse a missing or empty file before any reader sees it."""
    if not path.exists():
        raise DataError("file not found", file=path, fix="check the path")
    if fmt != "zarr" and path.is_file() and path.stat().st_size == 0:
        raise DataError("file is empty (0 bytes)", file=path, fix="re-export it or remove it from the dataset")


def check_spatial_dims(spatial_dims: int | None) -> None:
    """``spatial_dims`` must be 2, 3 or ``None``."""
    if spatial_dims not in (None, 2, 3):
        raise ConfigError(f"spatial_dims={spatial_dims!r}; expected 2, 3 or None (decide from the file)")


def as_channels_first(arr: np.ndarray, spatial_dims: int | None, path: Path) -> np.ndarray:
    """``(C, *spatial)`` from ``(C, *spatial)`` or ``(*spatial)``.

    A 3-axis array is ``(C, H, W)`` when its first axis is 4 or shorter, else ``(Z, Y, X)``.
    """
    if spatial_dims is None:
        spatial_dims = 2 if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[0] <= 4) else 3
    if arr.ndim == spatial_dims:
        return arr[None]
    if arr.ndim == spatial_dims + 1:
        return arr
    raise DataError(
        f"cannot write an array of shape {arr.shape} as a {spatial_dims}D image",
        file=path,
        fix="pass (C, *spatial) or (*spatial)",
    )


@dataclass(frozen=True)
class BadFile:
    """One format's bad-file rule: which reader exceptions mean "this file is damaged", and how to say so.

    Attributes:
        fmt: the format's name, for the message.
        errors: the exception types its third-party reader raises for a truncated or corrupt file.
        explain: a more specific error for some of them (e.g. a missing codec), or ``None``.
    """

    fmt: str
    errors: tuple[type[BaseException], ...]
    explain: Callable[[Path, BaseException], DataError | None] | None = None

    def error(self, path: Path, exc: BaseException, doing: str = "") -> DataError:
        """The :class:`DataError` for ``exc`` raised by the reader of ``path``."""
        specific = self.explain(path, exc) if self.explain is not None else None
        if specific is not None:
            return specific
        what = f"{doing} failed" if doing else f"unreadable or truncated {self.fmt} file"
        return DataError(
            f"{what} ({type(exc).__name__}: {exc})",
            file=path,
            fix="the file is probably truncated or corrupt, re-export it or remove it from the dataset",
        )

    @contextlib.contextmanager
    def guard(self, path: Path, doing: str = "") -> Iterator[None]:
        """Turn this format's bad-file exceptions raised inside the block into a :class:`DataError`.

        Wrap only calls into the third-party reader: anything else raised inside is not the file's fault.
        """
        try:
            yield
        except DataError:
            raise
        except self.errors as exc:
            raise self.error(path, exc, doing) from exc


MAX_COMPRESSION = 100_000
"""The most pixel bytes per file byte a compressed image may declare (zstd on all-zero masks reaches some
30 000:1, deflate about 1 000:1); more means a decompression bomb or a truncated file."""

BOMB_FLOOR_BYTES = 1 << 30
"""Compressed images declaring less pixel data than this are never refused by the ratio rule."""


def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"  # pragma: no cover


def stored_bytes(folder: Path, enough: float = math.inf) -> int:
    """Bytes of the files under ``folder`` (a zarr array's chunks), counted until they reach ``enough``."""
    total, todo = 0, [folder]
    while todo and total < enough:
        with os.scandir(todo.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    todo.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def check_declared_size(
    path: Path, shape: tuple[int, ...], dtype: object, *, compressed: bool, data: Path | None = None
) -> None:
    """Refuse a file whose header declares far more pixel data than the file can hold, before any read.

    The one size rule of every format (TIFF, PNG/JPEG/BMP, zarr, ``.npy``, NIfTI): uncompressed data must fit
    in the file; compressed data may declare at most :data:`MAX_COMPRESSION` times the file's size (once above
    :data:`BOMB_FLOOR_BYTES`). This catches decompression bombs and headers claiming e.g. 100000 x 100000
    pixels in a few hundred bytes, while a genuine image streams whatever its size: its bytes are there.
    ``data`` is where the pixel data lie when it is not ``path`` (a zarr store's array folder: its chunks, of
    which missing ones read as the fill value, so a store is always judged as compressed).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.tif"; _ = p.write_bytes(b"0" * 300)
    >>> try:
    ...     check_declared_size(p, (1, 100_000, 100_000), "uint8", compressed=True)
    ... except DataError as e:
    ...     print(e.problem.split(":")[0])
    the header declares 100000 x 100000 pixels (10.0 GB of uint8) but the file holds 300 B
    """
    declared = float(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize  # type: ignore[call-overload]
    if compressed and declared <= BOMB_FLOOR_BYTES:
        return
    where = data if data is not None else path
    limit_factor = MAX_COMPRESSION if compressed else 1
    if where.is_file():
        size = where.stat().st_size
    elif where.is_dir():
        size = stored_bytes(where, enough=declared / limit_factor)
    else:
        return
    if not size:
        return
    if declared > float(size) * limit_factor:
        spatial = [int(n) for n in shape if n > 4] or [int(n) for n in shape]
        if compressed:
            fix = (
                "re-export the image; a genuine file this compressible (e.g. a zarr whose chunks are nearly all "
                f"missing) is read after raising unetkit.data.io.common.MAX_COMPRESSION (now {MAX_COMPRESSION:,} "
                "pixel bytes per file byte)"
            )
        else:
            fix = "re-export or re-copy the image: uncompressed pixel data must fit in the file (it is truncated)"
        raise DataError(
            f"the header declares {' x '.join(map(str, spatial))} pixels ({_human(declared)} of "
            f"{np.dtype(dtype).name}) but the file holds {_human(size)}: a decompression bomb or a truncated file",  # type: ignore[call-overload]
            file=path,
            fix=fix,
        )


def available_memory() -> int | None:
    """Bytes of memory available now (Linux and macOS), or ``None`` when the system does not say."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_whole_read(path: Path, nbytes: int, what: str, fix: str | None = None) -> None:
    """Refuse to read a whole image (or block) that would take more than half the memory available now.

    What is read whole calls this before decoding: PNG, JPEG and BMP images, a gzip-compressed NIfTI, one zarr
    chunk; TIFF, zarr, ``.nii`` and npy are otherwise read region by region.
    """
    free = available_memory()
    if free is not None and nbytes > free // 2:
        raise DataError(
            f"{what} must be read whole and needs {_human(nbytes)}, more than half the memory available "
            f"({_human(free)})",
            file=path,
            fix=fix or "convert it to a tiled TIFF or zarr, which unetkit reads region by region",
        )
