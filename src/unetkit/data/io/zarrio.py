"""zarr (v2 and v3 stores, OME-Zarr groups): lazy reads; the one layout for every zarr unetkit writes.

Reading: an array, or a group's OME-Zarr (NGFF 0.4 or 0.5) first multiscale level (axes, units and scale
from its metadata), else the group's only (or largest) array. Axes come from dimension names (``c``,
``z``, ``y``, ``x``) where the store has them, else they are guessed; spacing from a ``spacing``
attribute, else the OME scale of level 0 (times the multiscale's own scale), in micrometres where the
axes name a length unit (:mod:`unetkit.data.io.units`).

Writing (:func:`write_zarr` here and the streaming prediction writer): :func:`create_zarr` decides the
dimension names, the chunks and the ``spacing`` attribute of a plain zarr array; :func:`create_ome_zarr`
the layout of an OME-Zarr output (multiscale levels, axes, scales, channel names, ``image-label``
colours, a ``labels`` group). Stores are written into a temporary folder that replaces the destination on
success (:func:`unetkit.utils.atomic_dir`).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from unetkit.data.io.common import BOMB_FLOOR_BYTES, BadFile, check_declared_size, check_whole_read
from unetkit.data.io.lazy import LazyImage, guess_axes, layout_from_axes
from unetkit.data.io.regions import zarr_grid
from unetkit.data.io.units import NGFF_UNIT, um_per_unit
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
    """Write ``(C, *spatial)`` as a zarr store that replaces ``path`` when complete (``*.ome.zarr``: OME-Zarr).

    An OME-Zarr destination keeps the layout of the store it replaces (a label image, with its colours and
    class names, at the root or in a ``labels`` group; its NGFF version), so rewriting a prediction's
    labels (post-processing) leaves them as they were written; a new one is a multiscale image (0.4).
    """
    with atomic_dir(path) as tmp:
        if not path.name.lower().endswith(".ome.zarr"):
            create_zarr(tmp, arr.shape, arr.dtype, lead=1, spacing=spacing)[...] = arr
            return
        layout = _ome_layout(path) if path.is_dir() else {}
        label = bool(layout.get("label")) and arr.shape[0] == 1
        data = arr[0] if label else arr
        levels = create_ome_zarr(tmp, data.shape, data.dtype, lead=0 if label else 1, spacing=spacing, **layout)
        for f, level in levels:
            level[...] = data[..., ::f, ::f]


def _ome_layout(path: Path) -> dict[str, Any]:
    """How the OME-Zarr at ``path`` was written: :func:`create_ome_zarr`'s layout arguments (``{}`` if unreadable)."""
    import zarr

    version = ngff_version(path)
    unreadable: tuple[type[BaseException], ...] = (*bad_zarr().errors, DataError)
    try:
        root: Any = zarr.open_group(str(path), mode="r")
        name = _first_label(root, path) if version is None else None
        group = root[f"labels/{name}"] if name is not None else root
        attrs: dict[str, Any] = dict(group.attrs)
    except unreadable:
        return {}
    meta = attrs.get("ome", attrs)
    version = ngff_version(path / "labels" / name) if name is not None else version
    out: dict[str, Any] = {"version": version or "0.4", "labels_group": name is not None}
    info = meta.get("image-label")
    if isinstance(info, dict):
        out["label"] = True
        colors: dict[Any, Any] = {
            c.get("label-value"): c.get("rgba") for c in info.get("colors", []) if isinstance(c, dict)
        }
        props: dict[Any, Any] = {
            q.get("label-value"): q.get("class") for q in info.get("properties", []) if isinstance(q, dict)
        }
        if set(colors) == set(range(len(colors))) and all(isinstance(c, list) for c in colors.values()):
            out["colours"] = [tuple(int(v) for v in colors[i][:3]) for i in range(len(colors))] or None
        if set(props) == set(range(len(props))):
            out["channel_names"] = [str(props[i]) for i in range(len(props))] or None
    return out


# ----------------------------------------------------------------------------------------------- OME-Zarr

NGFF_VERSIONS = ("0.4", "0.5")
"""OME-Zarr versions read and written: 0.4 (zarr v2 stores) and 0.5 (zarr v3)."""

LABEL_NAME = "unetkit"
"""Name of the label image in a written ``labels`` group."""

MIN_LEVEL_EDGE = CHUNK_EDGE
"""Pyramid levels halve Y and X until both are at most this many pixels (at most 8 levels)."""


def pyramid_factors(spatial: tuple[int, ...], min_edge: int = MIN_LEVEL_EDGE, max_levels: int = 8) -> list[int]:
    """Downsampling factor of each level of a written pyramid (Y and X only; Z keeps its resolution).

    Example:
        >>> pyramid_factors((20000, 20000)), pyramid_factors((30, 600, 100)), pyramid_factors((100, 80))
        ([1, 2, 4, 8, 16, 32, 64, 128], [1, 2, 4], [1])
    """
    factors = [1]
    while len(factors) < max_levels and max(spatial[-2:]) / factors[-1] > min_edge:
        factors.append(factors[-1] * 2)
    return factors


def level_shape(shape: tuple[int, ...], factor: int) -> tuple[int, ...]:
    """Shape of a pyramid level: the last two axes divided by ``factor``, rounded up (stride sampling)."""
    return (*shape[:-2], *(-(-n // factor) for n in shape[-2:]))


def _hex(rgb: tuple[int, int, int]) -> str:
    return "".join(f"{int(c):02X}" for c in rgb)


def ome_image_metadata(
    spatial_dims: int,
    lead: int,
    spacing: tuple[float, ...] | None,
    factors: list[int],
    *,
    name: str,
    channel_names: list[str] | None = None,
    colours: list[tuple[int, int, int]] | None = None,
    label: bool = False,
) -> dict[str, Any]:
    """The NGFF attributes of a multiscale image (``multiscales``, ``omero`` channels, ``image-label``).

    ``colours`` are RGB per channel (an image) or per label value (a label image, ``label=True``; value 0,
    the background, is left transparent). The ``version`` keys are added by :func:`_ome_attrs`.
    """
    names = ("c",) * lead + (("y", "x") if spatial_dims == 2 else ("z", "y", "x"))
    axes: list[dict[str, Any]] = []
    for n in names:
        axis: dict[str, Any] = {"name": n, "type": "channel" if n == "c" else "space"}
        if n != "c" and spacing is not None:
            axis["unit"] = NGFF_UNIT
        axes.append(axis)
    base = [1.0] * lead + [float(x) for x in (spacing or (1.0,) * spatial_dims)]
    datasets = [
        {
            "path": str(i),
            "coordinateTransformations": [{"type": "scale", "scale": [*base[:-2], base[-2] * f, base[-1] * f]}],
        }
        for i, f in enumerate(factors)
    ]
    meta: dict[str, Any] = {
        "multiscales": [{"name": name, "axes": axes, "datasets": datasets, "type": "nearest",
                         "metadata": {"method": "stride sampling (every 2nd pixel along Y and X)"}}]
    }  # fmt: skip
    if label:
        info: dict[str, Any] = {"source": {"image": "../../"}}
        if colours is not None:
            info["colors"] = [
                {"label-value": v, "rgba": [*map(int, c), 0 if v == 0 else 255]} for v, c in enumerate(colours)
            ]
        if channel_names is not None:
            info["properties"] = [{"label-value": v, "class": n} for v, n in enumerate(channel_names)]
        meta["image-label"] = info
    elif channel_names is not None and lead == 1:
        cols = colours or [(255, 255, 255)] * len(channel_names)
        meta["omero"] = {"channels": [
            {"label": n, "color": _hex(c), "active": True, "window": {"start": 0, "end": 1, "min": 0, "max": 1}}
            for n, c in zip(channel_names, cols, strict=False)
        ]}  # fmt: skip
    return meta


def _ome_attrs(meta: dict[str, Any], version: str) -> dict[str, Any]:
    """NGFF attributes as each version stores them: 0.4 beside the data with versions inside, 0.5 under ``ome``."""
    if version == "0.5":
        return {"ome": {"version": "0.5", **meta}}
    out = dict(meta)
    if "multiscales" in out:
        out["multiscales"] = [{"version": "0.4", **m} for m in out["multiscales"]]
    if "image-label" in out:
        out["image-label"] = {"version": "0.4", **out["image-label"]}
    return out


def create_ome_zarr(
    path: Path,
    shape: tuple[int, ...],
    dtype: Any,
    *,
    lead: int = 0,
    spacing: tuple[float, ...] | None = None,
    channel_names: list[str] | None = None,
    colours: list[tuple[int, int, int]] | None = None,
    label: bool = False,
    labels_group: bool = False,
    version: str = "0.4",
    chunk_edge: int = CHUNK_EDGE,
) -> list[tuple[int, Any]]:
    """Create an empty OME-Zarr multiscale image at ``path``; returns ``[(factor, level array), ...]``.

    ``label=True`` makes it a label image (``image-label`` metadata with ``colours`` per label value and
    ``channel_names`` as each value's ``class``); ``labels_group=True`` puts that label image at
    ``labels/unetkit`` inside an otherwise empty image group (the layout to copy into an input OME-Zarr's
    ``labels/``), else at the root. Levels halve Y and X (:func:`pyramid_factors`); chunks follow
    :func:`zarr_chunks`.

    Shape:
        ``shape = (*lead_axes, *spatial)``, level ``i`` is :func:`level_shape` of it.
    """
    import zarr

    if version not in NGFF_VERSIONS:
        raise DataError(f"OME-Zarr version {version!r} is not written", fix=f"choose one of {', '.join(NGFF_VERSIONS)}")
    fmt: Literal[2, 3] = 3 if version == "0.5" else 2
    spatial_dims = len(shape) - lead
    root = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    group = root
    if labels_group:
        labels = root.create_group("labels")
        labels.attrs.update(_ome_attrs({"labels": [LABEL_NAME]}, version))
        group = labels.create_group(LABEL_NAME)
    factors = pyramid_factors(shape[lead:])
    meta = ome_image_metadata(spatial_dims, lead, spacing, factors, name=LABEL_NAME if label else path.name,
                              channel_names=channel_names, colours=colours, label=label)  # fmt: skip
    group.attrs.update(_ome_attrs(meta, version))
    names = [a["name"] for a in meta["multiscales"][0]["axes"]]
    levels = []
    for i, f in enumerate(factors):
        lshape = level_shape(shape, f)
        kwargs: dict[str, Any] = {"dimension_names": names} if fmt == 3 else {
            "chunk_key_encoding": {"name": "v2", "separator": "/"}}  # fmt: skip
        arr = group.create_array(str(i), shape=lshape, dtype=np.dtype(dtype),
                                 chunks=zarr_chunks(lshape, lead, chunk_edge), fill_value=0, **kwargs)  # fmt: skip
        levels.append((f, arr))
    return levels


def ngff_version(path: Path) -> str | None:
    """The OME-Zarr version of the store at ``path`` (``"0.4"``, ``"0.5"``), ``None`` for plain zarr."""
    import zarr

    try:
        node: Any = zarr.open(str(path), mode="r")
    except bad_zarr().errors:
        return None
    if not isinstance(node, zarr.Group):
        return None
    attrs: dict[str, Any] = dict(node.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, dict) and ome.get("multiscales"):
        return str(ome.get("version", "0.5"))
    ms = attrs.get("multiscales")
    if ms and isinstance(ms, list) and isinstance(ms[0], dict):
        return str(ms[0].get("version", "0.4"))
    return None


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
    units: list[Any] = []
    if isinstance(node, zarr.Group):
        if multiscales:
            array_path, names, scale, units = _ome_level(multiscales, path)
            with bad.guard(path):
                node = node[array_path]
        elif not arrays and _first_label(node, path) is not None:  # an image-less group holding a labels group
            return open_zarr(path / "labels" / str(_first_label(node, path)), spatial_dims)
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
    spacing = _spacing(attrs.get("spacing"), scale, units, layout.spatial, path)
    with bad.guard(path):
        chunks = tuple(int(c) for c in getattr(node, "chunks", None) or shape)
        inside = str(getattr(node, "path", "") or "")
    # the one size rule: the chunks stored must be able to hold what the metadata declares (missing ones
    # read as the fill value, so a store counts as compressed), and one chunk must fit in memory
    check_declared_size(path, shape, dtype, compressed=True, data=path / inside if inside else path)
    chunk_bytes = math.prod(chunks) * np.dtype(dtype).itemsize
    if chunk_bytes > BOMB_FLOOR_BYTES:  # ordinary chunks (a few MB) are never in question
        check_whole_read(
            path, chunk_bytes, f"each {' x '.join(map(str, chunks))} chunk of the array",
            fix="rechunk it (e.g. 256 x 256 pixels per chunk in 2D, 64^3 in 3D), which unetkit reads chunk by chunk",
        )  # fmt: skip
    with bad.guard(path):
        source: Any = zarr_grid(node) if getattr(node, "chunks", None) else node
    return LazyImage(source, layout, path, spacing=spacing, dtype=dtype, bad_file=bad)


def _first_label(group: Any, path: Path) -> str | None:
    """The first label image a group's ``labels`` subgroup lists (NGFF 0.4 or 0.5), or ``None``."""
    with bad_zarr().guard(path):
        if "labels" not in group:
            return None
        attrs = dict(group["labels"].attrs)
    names = attrs.get("labels") or (attrs.get("ome") or {}).get("labels")
    return str(names[0]) if isinstance(names, list) and names else None


def _ome_level(multiscales: Any, path: Path) -> tuple[str, list[str] | None, list[float] | None, list[Any]]:
    """Path, axis names, scale (level 0's times the multiscale's own) and axis units of OME-Zarr's first level."""
    try:
        ms = multiscales[0]
        first = ms["datasets"][0]
        axes = ms.get("axes", [])
        names = [a["name"] if isinstance(a, dict) else a for a in axes] or None
        units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
        scale = _scale_of(first.get("coordinateTransformations", []))
        outer = _scale_of(ms.get("coordinateTransformations", []))
        if scale is not None and outer is not None:
            scale = [float(a) * float(b) for a, b in zip(scale, outer, strict=True)]
        return str(first["path"]), names, scale if scale is not None else outer, units
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise DataError(
            f"malformed OME-Zarr 'multiscales' metadata ({type(exc).__name__}: {exc})",
            file=path,
            fix="re-export the store, or point at the array inside it",
        ) from exc


def _scale_of(transforms: Any) -> list[float] | None:
    return next((list(t["scale"]) for t in transforms if t["type"] == "scale"), None)


def _spacing(
    spacing: Any, scale: list[float] | None, units: list[Any], spatial: tuple[int, ...], path: Path
) -> tuple[float, ...] | None:
    """The ``spacing`` attribute, else the OME scale of the spatial axes (in micrometres where they have a unit)."""
    try:
        if spacing is None and scale is not None:
            factors = [(um_per_unit(units[i]) if i < len(units) else None) or 1.0 for i in spatial]
            spacing = [float(scale[i]) * f for i, f in zip(spatial, factors, strict=True)]
        return tuple(float(s) for s in spacing) if spacing is not None else None
    except (TypeError, ValueError, IndexError) as exc:
        raise DataError(
            f"malformed spacing metadata ({type(exc).__name__}: {exc})",
            file=path,
            fix="store 'spacing' as one number per spatial axis",
        ) from exc
