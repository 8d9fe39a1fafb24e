"""zarr (v2 and v3 stores, OME-Zarr groups): lazy reads; the one layout for every zarr unetkit writes.

Reading: an array, or a group's OME-Zarr first multiscale level (axes and scale from its metadata),
else the group's only (or largest) array. Axes come from dimension names (``c``, ``z``, ``y``, ``x``)
where the store has them, else they are guessed; spacing from a ``spacing`` attribute, else the
OME scale.

Writing (:func:`write_zarr` here and the streaming prediction writer): :func:`create_zarr` decides the
dimension names, the chunks and the ``spacing`` attribute; the store is written into a temporary folder
that replaces the destination on success (:func:`unetkit.utils.atomic_dir`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io.common import BadFile
from unetkit.data.io.lazy import LazyImage, guess_axes, layout_from_axes
from unetkit.data.io.regions import zarr_grid
from unetkit.errors import DataError
from unetkit.utils import atomic_dir

CHUNK_EDGE = 256
"""Chunk edge of written arrays in pixels, 2D; a quarter of it (at least 32) in 3D."""


def zarr_chunks(shape: tuple[int, ...], lead: int, edge: int = CHUNK_EDGE) -> tuple[int, ...]:
    """Chunks of a written array ``(*lead_axes, *spatial)``: one per leading index, square/cubic spatially.

    Example:
        >>> zarr_chunks((3, 1000, 80), lead=1), zarr_chunks((40, 500, 500), lead=0)
        ((1, 256, 80), (40, 64, 64))
    """
    spatial = shape[lead:]
    side = edge if len(spatial) == 2 else max(32, edge // 4)
    return (1,) * lead + tuple(min(s, side) for s in spatial)


def create_zarr(
    path: Path,
    shape: tuple[int, ...],
    dtype: Any,
    *,
    lead: int = 1,
    spacing: tuple[float, ...] | None = None,
    chunk_edge: int = CHUNK_EDGE,
) -> Any:
    """Create an empty (zero-filled) zarr array ``(*lead_axes, *spatial)`` at ``path``; returns it.

    Leading axes are named ``c``, spatial ones ``y, x`` or ``z, y, x``; chunks follow :func:`zarr_chunks`;
    spacing goes to the ``spacing`` attribute (``(Z, Y, X)`` order).
    """
    import zarr

    spatial = shape[lead:]
    names = ("c",) * lead + (("y", "x") if len(spatial) == 2 else ("z", "y", "x"))
    z = zarr.create_array(
        str(path), shape=shape, dtype=np.dtype(dtype), chunks=zarr_chunks(shape, lead, chunk_edge),
        dimension_names=names, fill_value=0,
    )  # fmt: skip
    if spacing is not None:
        z.attrs["spacing"] = [float(s) for s in spacing]
    return z


def write_zarr(path: Path, arr: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    """Write ``(C, *spatial)`` as a zarr store that replaces ``path`` when complete."""
    with atomic_dir(path) as tmp:
        create_zarr(tmp, arr.shape, arr.dtype, lead=1, spacing=spacing)[...] = arr


# ----------------------------------------------------------------------------------------------- reading


@functools.cache
def bad_zarr() -> BadFile:
    """What zarr raises for a damaged store: its own errors (``ValueError`` subclasses; the "not found"
    ones are also ``OSError``), ``ValueError`` for broken JSON, ``KeyError``, ``IndexError``, ``TypeError``
    and ``OverflowError`` for metadata with missing or ill-typed fields, and the codecs' ``RuntimeError``
    for a damaged chunk."""
    import zarr.errors

    errors = (
        zarr.errors.BaseZarrError,
        ValueError,
        OSError,
        KeyError,
        IndexError,
        TypeError,
        OverflowError,
        RuntimeError,
    )
    return BadFile("zarr", errors)


def open_zarr(path: Path, spatial_dims: int | None) -> LazyImage:
    """Open a zarr array (or the array a group holds) for region reads."""
    import zarr

    bad = bad_zarr()
    with bad.guard(path):
        node: Any = zarr.open(str(path), mode="r")
        if isinstance(node, zarr.Group):
            group_attrs: dict[str, Any] = dict(node.attrs)
            multiscales = group_attrs.get("multiscales") or (group_attrs.get("ome") or {}).get("multiscales")
            arrays = [] if multiscales else list(node.arrays())
    names: list[str] | None = None
    scale: list[float] | None = None
    if isinstance(node, zarr.Group):
        if multiscales:
            array_path, names, scale = _ome_level(multiscales, path)
            with bad.guard(path):
                node = node[array_path]
        elif not arrays:
            raise DataError("zarr group holds no array", file=path, fix="point at a zarr array or a group holding one")
        else:
            node = max(arrays, key=lambda kv: int(np.prod(kv[1].shape)))[1]
    with bad.guard(path):
        shape, dtype, attrs = tuple(int(s) for s in node.shape), node.dtype, dict(node.attrs)
        dims = getattr(node.metadata, "dimension_names", None) or attrs.get("_ARRAY_DIMENSIONS")
    if names is None:
        names = list(dims) if dims and all(dims) else None
    if names is not None:
        axes = "".join({"c": "C", "z": "Z", "y": "Y", "x": "X"}.get(str(n).lower()[:1], "Q") for n in names)
    else:
        axes = guess_axes(shape, spatial_dims)
    layout = layout_from_axes(shape, axes, spatial_dims, path)
    spacing = _spacing(attrs.get("spacing"), scale, layout.spatial, path)
    with bad.guard(path):
        source: Any = zarr_grid(node) if getattr(node, "chunks", None) else node
    return LazyImage(source, layout, path, spacing=spacing, dtype=dtype, bad_file=bad)


def _ome_level(multiscales: Any, path: Path) -> tuple[str, list[str] | None, list[float] | None]:
    """Path, axis names and scale of OME-Zarr's first multiscale level."""
    try:
        first = multiscales[0]["datasets"][0]
        names = [a["name"] if isinstance(a, dict) else a for a in multiscales[0].get("axes", [])] or None
        transforms = first.get("coordinateTransformations", [])
        scale = next((t["scale"] for t in transforms if t["type"] == "scale"), None)
        return str(first["path"]), names, scale
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise DataError(
            f"malformed OME-Zarr 'multiscales' metadata ({type(exc).__name__}: {exc})",
            file=path,
            fix="re-export the store, or point at the array inside it",
        ) from exc


def _spacing(spacing: Any, scale: list[float] | None, spatial: tuple[int, ...], path: Path) -> tuple[float, ...] | None:
    """The ``spacing`` attribute, else the OME scale of the spatial axes."""
    try:
        if spacing is None and scale is not None:
            spacing = [scale[i] for i in spatial]
        return tuple(float(s) for s in spacing) if spacing is not None else None
    except (TypeError, ValueError, IndexError) as exc:
        raise DataError(
            f"malformed spacing metadata ({type(exc).__name__}: {exc})",
            file=path,
            fix="store 'spacing' as one number per spatial axis",
        ) from exc
