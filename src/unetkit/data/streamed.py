"""Training data read from disk region by region: datasets larger than memory.

A streamed sample's ``image`` and ``mask`` are views of the files: slicing one reads only that region
through the same region readers prediction uses (:func:`unetkit.data.io.open_image`: memory-mapped
contiguous TIFFs, strips and chunks decoded in a bounded cache), maps mask values to classes and normalises
image values on the fly. ``np.asarray(view)`` reads the whole file (used for one image at a time: planning
facts, the foreground index, validation), so peak memory follows the largest image, not the dataset.

When: :func:`choose_reading` is the one rule. ``data.read: memory`` loads everything (fastest for small
sets), ``disk`` streams, ``auto`` (the default) streams when the decoded set (float32 images and int64
masks) would take more than :data:`MEMORY_SHARE` of the machine's RAM and the options allow it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io import open_image, open_mask
from unetkit.data.io.lazy import LazyImage
from unetkit.data.masks import LabelMapping
from unetkit.data.pairs import find_pairs
from unetkit.errors import ConfigError

#: ``auto`` streams a dataset whose decoded size exceeds this share of the machine's RAM.
MEMORY_SHARE = 0.25

Transform = Callable[[np.ndarray], np.ndarray]


class StreamedImage:
    """An image file read region by region, as float32, optionally transformed per read (normalisation).

    Shape:
        ``(C, *S)``; ``view[key]`` reads only the region ``key`` selects (the channel axis must be kept
        when a transform is set: it works per channel).
    """

    def __init__(self, lazy: LazyImage, transform: Transform | None = None) -> None:
        self.lazy = lazy
        self.transform = transform
        self.shape: tuple[int, ...] = tuple(lazy.shape)
        self.dtype = np.dtype(np.float32)
        self.source_dtype = np.dtype(lazy.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def with_transform(self, transform: Transform) -> StreamedImage:
        """The same file, every read passed through ``transform`` (e.g. a frozen normaliser)."""
        return StreamedImage(self.lazy, transform)

    def __getitem__(self, key: Any) -> np.ndarray:
        region = np.asarray(self.lazy[key], dtype=np.float32)
        return region if self.transform is None else np.asarray(self.transform(region), dtype=np.float32)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[(slice(None),) * self.ndim]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"StreamedImage({self.lazy!r}, shape={self.shape})"


class StreamedMask:
    """A mask file read region by region and mapped to class indices per read (int64, as loaded masks).

    ``instances=True`` gives the instance ids instead (int32) for an instance mapping.

    Shape:
        ``(*S)``.
    """

    def __init__(self, lazy: LazyImage, mapping: LabelMapping, file: str, *, instances: bool = False) -> None:
        self.lazy = lazy
        self.mapping = mapping
        self.file = file
        self.instances = instances
        self.shape: tuple[int, ...] = tuple(lazy.shape[1:])
        self.dtype = np.dtype(np.int32 if instances else np.int64)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(not isinstance(k, slice) for k in key):
            raise TypeError("StreamedMask reads regions: index it with slices")
        raw = self.lazy[(slice(None), *key)]
        mask, inst = self.mapping.apply(_raw_mask(raw, self.mapping), self.ndim, self.file)
        if self.instances:
            assert inst is not None  # instances=True only for instance mappings
            return inst
        return mask

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[(slice(None),) * self.ndim]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"StreamedMask({self.file!r}, shape={self.shape})"


def _raw_mask(region: np.ndarray, mapping: LabelMapping) -> np.ndarray:
    """A region read channels-first as :func:`~unetkit.data.io.read_mask` returns whole masks."""
    c = region.shape[0]
    if mapping.kind == "colours" and c in (3, 4):
        return np.ascontiguousarray(np.moveaxis(region[:3], 0, -1))
    return region[0]


def open_sample_files(
    image_file: Path, mask_file: Path, mapping: LabelMapping, spatial_dims: int, label: str
) -> tuple[StreamedImage, StreamedMask, StreamedMask | None]:
    """Streamed views of one pair: image (raw float32), class mask and, for instance masks, instance ids."""
    image = StreamedImage(open_image(image_file, spatial_dims))
    raw = open_mask(mask_file, spatial_dims)  # a palette mask gives its indices, as read_mask does
    mask = StreamedMask(raw, mapping, label)
    inst = StreamedMask(raw, mapping, label, instances=True) if mapping.kind == "instances" else None
    return image, mask, inst


def decoded_bytes(path: str | Path, spatial_dims: int | None = None) -> int:
    """What loading the dataset at ``path`` into memory would take: float32 images and int64 masks.

    Reads only file headers (shapes), so it is cheap on any size of dataset; unreadable files count 0 (the
    dataset check names them later).
    """
    pairs, _, _ = find_pairs(path)
    total = 0
    for pair in pairs:
        if pair.image is None:
            continue
        try:
            with open_image(pair.image, spatial_dims) as img:
                c, *spatial = img.shape
        except Exception:  # a broken file is the check's business, not this estimate's
            continue
        total += math.prod(spatial) * (4 * int(c) + 8)
    return total


def machine_memory() -> int | None:
    """The machine's RAM in bytes (``None`` where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def choose_reading(setting: str, nbytes: int, blockers: Sequence[str], memory: int | None = None) -> tuple[bool, str]:
    """Whether to stream the training data from disk, and why (one line for the log).

    Args:
        setting: ``data.read``: ``auto``, ``memory`` or ``disk``.
        nbytes: the decoded dataset's size (:func:`decoded_bytes`).
        blockers: options that need whole images in memory (e.g. ``data.weight_map``), as config keys.
        memory: the machine's RAM (default :func:`machine_memory`).

    Raises:
        ConfigError: ``disk`` was asked for with an option that needs the images in memory.

    Examples:
        >>> choose_reading("auto", 10 * 2**30, [], memory=16 * 2**30)[0]
        True
        >>> choose_reading("auto", 2**20, [], memory=16 * 2**30)[0]
        False
    """
    if setting not in ("auto", "memory", "disk"):
        raise ConfigError(f"data.read: {setting!r}; choose auto, memory or disk")
    size = f"{nbytes / 2**30:.2f} GiB decoded"
    if setting == "memory":
        return False, f"training data in memory ({size}; data.read=memory)"
    if setting == "disk":
        if blockers:
            raise ConfigError(
                f"data.read=disk: {', '.join(blockers)} need(s) whole images in memory; "
                "turn them off or use data.read=memory"
            )
        return True, f"training data read patch by patch from the files ({size}; data.read=disk)"
    memory = machine_memory() if memory is None else memory
    if memory is None or nbytes <= MEMORY_SHARE * memory:
        return False, f"training data in memory ({size})"
    share = f"more than {MEMORY_SHARE:.0%} of this machine's {memory / 2**30:.0f} GiB"
    if blockers:
        return False, f"training data in memory although it takes {size}, {share}: {', '.join(blockers)} need(s) it"
    return True, f"training data read patch by patch from the files ({size}, {share})"
