"""Prediction inputs: expand what the user names into files, open each for a network, decide its grid.

:func:`expand_inputs` takes files, folders and glob patterns; :func:`open_input` opens an image lazily with
the network's dimensionality and channels (:func:`check_input_channels` checks every input first);
:func:`input_grid` is the one rule for how an image goes through the network (slice by slice, at the
model's spacing, or as it is).
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.channels import check_channels, check_mode, file_channels, fits, with_channels
from unetkit.data.io import IMAGE_SUFFIXES, image_format, is_image_file, is_zarr_dir, open_image
from unetkit.errors import DataError
from unetkit.infer.predictor import Predictor
from unetkit.infer.spacing import resampling_for

log = logging.getLogger(__name__)


def expand_inputs(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files, folders (their image files and ``.zarr`` stores, sorted) and glob patterns, in order, deduplicated."""
    found: list[Path] = []
    for item in items:
        text = str(item)
        p = Path(text)
        if p.is_dir() and not (p.name.endswith(".zarr") or is_zarr_dir(p)):
            found += sorted(c for c in p.iterdir() if is_image_file(c) or is_zarr_dir(c))
        elif p.exists():
            found.append(p)
        elif glob.has_magic(text):
            found += sorted(Path(m) for m in glob.glob(text) if is_image_file(m))
        else:
            raise DataError("no such file, folder or matching pattern", file=text, fix="check the path")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DataError(f"no image files in {', '.join(map(str, items))}; readable: {', '.join(IMAGE_SUFFIXES)}")
    return unique


def open_input(predictor: Predictor, path: Path, channels: str | None = None, model: str | None = None) -> Any:
    """Open ``path`` lazily for ``predictor``, refusing an image of the wrong dimensionality or channels.

    A 3D stack for a 2D network (one trained slice by slice, ``--dims 2``) opens as the stack: it is
    predicted one Z slice at a time (:func:`is_slice_stack`). Otherwise the file is read with the network's
    dimensionality (a multi-page TIFF for a multi-channel 2D net: pages as channels). An image whose channels
    are not the network's is refused, or converted region by region with ``channels`` (``rgb``, ``grey``,
    ``first``: :mod:`unetkit.data.channels`); ``model`` names the model in the message.
    """
    want = predictor.in_channels
    check_mode(channels)
    if predictor.spatial_dims == 2:
        image = open_image(path)
        if image.ndim == 4 and fits(int(image.shape[0]), want, channels):
            return with_channels(image, want, channels, model)
        image.close()
    image = open_image(path, spatial_dims=predictor.spatial_dims)
    try:
        if image.ndim - 1 != predictor.spatial_dims:
            raise DataError(f"a {image.ndim - 1}D image for a {predictor.spatial_dims}D network", file=path)
        return with_channels(image, want, channels, model)
    except BaseException:
        image.close()
        raise


def check_input_channels(
    predictor: Predictor, files: Iterable[Path], channels: str | None = None, model: str | None = None
) -> None:
    """Before any work: every file opens for ``predictor`` with the network's channels (see :func:`open_input`).

    Only headers are read (a PNG, JPEG or BMP for a 2D network is not decoded), so a folder of large images is
    checked in moments and a mismatch in its last file stops the run before the first tile.
    """
    check_mode(channels)
    for path in files:
        if predictor.spatial_dims == 2 and image_format(path) == "pil":
            check_channels(path, file_channels(path), predictor.in_channels, channels, model)
        else:
            open_input(predictor, path, channels, model).close()


def is_slice_stack(predictor: Predictor, image: Any) -> bool:
    """Whether ``image`` is a 3D stack that ``predictor`` (a 2D network) predicts slice by slice."""
    return predictor.spatial_dims == 2 and len(image.shape) == 4


@dataclass(frozen=True)
class InputGrid:
    """How one input goes through the network: slice by slice (a stack for a 2D net), at the model's spacing
    (``resample_to``: the image is resampled tile by tile) or as it is; ``tiles``: the tiles computed."""

    slices: bool
    resample_to: tuple[float, ...] | None
    tiles: int


def input_grid(predictor: Predictor, image: Any, path: Path, quiet: bool = False) -> InputGrid:
    """The one rule for :class:`InputGrid` (``quiet``: without the warnings, for a second look at an image)."""
    from unetkit.data.resample import resampled_shape

    spatial = tuple(int(s) for s in image.shape[1:])
    spacing = tuple(image.spacing) if getattr(image, "spacing", None) else None
    desc = predictor.description
    if is_slice_stack(predictor, image):
        target = resampling_for(path, spacing[1:] if spacing else None, desc, warn=not quiet)
        if target is not None and not quiet:
            log.warning("%s: slices at %s, the model's spacing is %s: predicted as they are, not resampled",
                        path, list(spacing[1:]) if spacing else None, list(target))  # fmt: skip
        return InputGrid(True, None, spatial[0] * predictor.tiles_for(spatial[1:]))
    target = resampling_for(path, spacing, desc, warn=not quiet)
    grid = resampled_shape(spatial, spacing, target) if target is not None and spacing is not None else spatial
    return InputGrid(False, target, predictor.tiles_for(grid))


def slice_slabs(predictor: Predictor, image: Any, on_tiles: Callable[[int], None] | None) -> Iterator[Any]:
    """A stack through a 2D network: one slab per Z slice, ``(K, 1, Y, X)``, each slice read once."""
    from unetkit.infer.predictor import Slab

    for z in range(int(image.shape[1])):
        plane = np.ascontiguousarray(image[:, z])
        proba = np.concatenate([s.proba for s in predictor.iter_slabs(plane, on_tiles=on_tiles)], axis=1)
        yield Slab((z, 0, 0), proba[:, None])
