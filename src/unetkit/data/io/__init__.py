"""Read and write images and masks: PNG, JPEG, BMP, TIFF/BigTIFF, NIfTI, zarr and ``.npy``.

Everything comes back channels-first, ``(C, *spatial)``, in the file's own dtype, with the voxel spacing
where the format stores one. :func:`open_image` reads lazily: indexing reads only the requested region
(TIFF through tifffile's zarr store, zarr natively, NIfTI through nibabel's array proxy, ``.npy`` through
a memory map), so a tiler can work through an image larger than memory. PNG/JPEG/BMP are read whole.

Spatial axes are ordered ``(Z, Y, X)`` for every format; NIfTI's ``(X, Y, Z)`` is reversed on reading and
restored on writing, and so is its spacing.
"""

from __future__ import annotations

import logging
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io.lazy import Layout, LazyImage, guess_axes, layout_from_axes
from unetkit.errors import ConfigError, DataError
from unetkit.utils import atomic_path

log = logging.getLogger(__name__)

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (*PIL_SUFFIXES, *TIFF_SUFFIXES, *NIFTI_SUFFIXES, ".zarr", ".npy")
"""Every suffix :func:`read_image` and :func:`write_image` understand."""

_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    KeyError,
    IndexError,
    TypeError,
    zlib.error,
)


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
    if name.endswith(".zarr") or (Path(path).is_dir() and _is_zarr_dir(Path(path))):
        return "zarr"
    raise DataError(f"{path}: unknown image format '{Path(path).suffix}'; fix: use one of {', '.join(IMAGE_SUFFIXES)}")


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


def _is_zarr_dir(path: Path) -> bool:
    return any((path / f).exists() for f in ("zarr.json", ".zarray", ".zgroup"))


def _check_file(path: Path, fmt: str) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found; fix: check the path")
    if fmt != "zarr" and path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes); fix: re-export it or remove it from the dataset")


def _check_spatial_dims(spatial_dims: int | None) -> None:
    if spatial_dims not in (None, 2, 3):
        raise ConfigError(f"spatial_dims={spatial_dims!r}; expected 2, 3 or None (decide from the file)")


def open_image(path: str | os.PathLike[str], spatial_dims: int | None = None) -> LazyImage:
    """Open an image for region reads without loading it.

    Args:
        path: an image file (or ``.zarr`` directory).
        spatial_dims: 2 or 3 to force the reading (e.g. a 3-slice volume), ``None`` to decide from the file.

    Returns:
        A :class:`~unetkit.data.io.lazy.LazyImage`; ``img[:, y0:y1, x0:x1]`` reads just that region.

    Shape:
        ``(C, *spatial)``.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "vol.tif"
        >>> write_image(p, np.arange(2 * 4 * 6 * 8, dtype=np.uint16).reshape(2, 4, 6, 8), spacing=(2.0, 0.5, 0.5))
        >>> img = open_image(p)
        >>> img.shape, img.spacing, img[:, 1, 0:2, 0:3].shape
        ((2, 4, 6, 8), (2.0, 0.5, 0.5), (2, 2, 3))
    """
    return _open(Path(path), spatial_dims, mask=False)


def read_image(path: str | os.PathLike[str], spatial_dims: int | None = None) -> ImageData:
    """Read a whole image channels-first.

    A grey PNG becomes ``(1, H, W)``, an RGB(A) one ``(3|4, H, W)``, a multi-page TIFF or a NIfTI volume
    ``(C, Z, Y, X)``.

    Args:
        path: an image file (or ``.zarr`` directory).
        spatial_dims: 2 or 3 to force the reading, ``None`` to decide from the file.

    Returns:
        :class:`ImageData` with the array in the file's dtype and the spacing, if the file has one.

    Shape:
        ``array`` is ``(C, *spatial)``.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "rgb.png"
        >>> write_image(p, np.zeros((3, 5, 7), np.uint8))
        >>> read_image(p).array.shape
        (3, 5, 7)
    """
    with _open(Path(path), spatial_dims, mask=False) as img:
        return ImageData(array=np.ascontiguousarray(img.read()), spacing=img.spacing, path=Path(path))


def read_mask(path: str | os.PathLike[str], spatial_dims: int | None = None) -> np.ndarray:
    """Read a mask's raw values, without any mapping.

    A single-channel mask (or an RGB one whose channels are equal) comes back as ``(*spatial)``; a colour
    (palette) mask as ``(*spatial, 3)``. A palette PNG (mode ``P``) gives its palette indices.

    Shape:
        ``(*spatial)`` or ``(*spatial, 3)``.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.png"
        >>> write_image(p, np.array([[0, 255], [255, 0]], np.uint8))
        >>> read_mask(p).tolist()
        [[0, 255], [255, 0]]
    """
    with _open(Path(path), spatial_dims, mask=True) as img:
        arr = img.read()
    c = arr.shape[0]
    if c == 1:
        return arr[0]
    if c in (3, 4):
        rgb = arr[:3]
        if (rgb == rgb[:1]).all():
            return rgb[0]
        return np.ascontiguousarray(np.moveaxis(rgb, 0, -1))
    if c == 2:  # grey + alpha
        return arr[0]
    raise DataError(
        f"{path}: mask has {c} channels; fix: masks must be single-channel class indices or an RGB palette image"
    )


def _open(path: Path, spatial_dims: int | None, *, mask: bool) -> LazyImage:
    _check_spatial_dims(spatial_dims)
    fmt = image_format(path)
    _check_file(path, fmt)
    try:
        if fmt == "pil":
            return _open_pil(path, spatial_dims, mask)
        if fmt == "tiff":
            return _open_tiff(path, spatial_dims)
        if fmt == "nifti":
            return _open_nifti(path, spatial_dims)
        if fmt == "zarr":
            return _open_zarr(path, spatial_dims)
        return _open_npy(path, spatial_dims)
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(
            f"{path}: unreadable or truncated {fmt} file ({type(exc).__name__}: {exc}); "
            "fix: re-export the file or remove it from the dataset"
        ) from exc
    except Exception as exc:  # third-party readers raise their own types (TiffFileError, ImageFileError, ...)
        if type(exc).__module__.split(".")[0] in ("tifffile", "nibabel", "zarr", "PIL", "numcodecs"):
            raise DataError(
                f"{path}: unreadable {fmt} file ({type(exc).__name__}: {exc}); "
                "fix: re-export the file or remove it from the dataset"
            ) from exc
        raise


def _open_pil(path: Path, spatial_dims: int | None, mask: bool) -> LazyImage:
    from PIL import Image

    im: Image.Image
    with Image.open(path) as im:
        im.load()
        if im.mode == "P" and not mask:
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "1" or im.mode == "CMYK":
            im = im.convert("L" if im.mode == "1" else "RGB")
        arr = np.asarray(im)
    axes = "YX" if arr.ndim == 2 else "YXS"
    return LazyImage(arr, layout_from_axes(arr.shape, axes, spatial_dims or 2, path), path)


def _open_npy(path: Path, spatial_dims: int | None) -> LazyImage:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    layout = layout_from_axes(arr.shape, guess_axes(arr.shape, spatial_dims), spatial_dims, path)
    return LazyImage(arr, layout, path, dtype=arr.dtype)


def _open_tiff(path: Path, spatial_dims: int | None) -> LazyImage:
    import tifffile
    import zarr

    tif = tifffile.TiffFile(path)
    try:
        series = tif.series[0]
        store = series.aszarr(level=0)
        source = zarr.open(store, mode="r")
        layout = layout_from_axes(tuple(series.shape), series.axes, spatial_dims, path)
        spacing = _tiff_spacing(tif, layout.out_shape(tuple(series.shape))[1:])
        return LazyImage(source, layout, path, spacing=spacing, dtype=series.dtype, on_close=tif.close)  # type: ignore[arg-type]
    except BaseException:
        tif.close()
        raise


def _tiff_spacing(tif: Any, spatial: tuple[int, ...]) -> tuple[float, ...] | None:
    """Spacing from unetkit's own metadata, else ImageJ's z spacing and the X/Y resolution tags."""
    for meta in tif.shaped_metadata or ():
        if isinstance(meta, dict) and meta.get("spacing") is not None and len(meta["spacing"]) == len(spatial):
            return tuple(float(s) for s in meta["spacing"])
    page = tif.pages.first
    xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
    unit = page.tags.get("ResolutionUnit")
    if xres is None or yres is None or (unit is not None and int(unit.value) == 2):  # inch: a print DPI
        return None
    sy, sx = (float(r.value[1]) / float(r.value[0]) if r.value[0] else 1.0 for r in (yres, xres))
    if len(spatial) == 2:
        return (sy, sx) if (sy, sx) != (1.0, 1.0) else None
    sz = float((tif.imagej_metadata or {}).get("spacing", 1.0))
    return (sz, sy, sx) if (sz, sy, sx) != (1.0, 1.0, 1.0) else None


def _open_nifti(path: Path, spatial_dims: int | None) -> LazyImage:
    import nibabel as nib

    img = nib.load(path, mmap=True)
    shape = tuple(int(s) for s in img.shape)  # type: ignore[attr-defined]
    axes = {2: "XY", 3: "XYZ", 4: "XYZC", 5: "XYZQC"}.get(len(shape))
    if spatial_dims is None and len(shape) >= 3 and shape[2] == 1:
        spatial_dims = 2  # a single-slice NIfTI is a 2D image
    if axes is None:
        raise DataError(f"{path}: NIfTI image with {len(shape)} axes; fix: save it as (X, Y[, Z[, C]])")
    layout = layout_from_axes(shape, axes, spatial_dims, path)
    zooms = img.header.get_zooms()  # type: ignore[attr-defined]
    spacing = tuple(float(zooms[i]) for i in layout.spatial) if len(zooms) >= len(layout.spatial) else None
    return LazyImage(img.dataobj, layout, path, spacing=spacing)  # type: ignore[attr-defined]


def _open_zarr(path: Path, spatial_dims: int | None) -> LazyImage:
    import zarr

    node: Any = zarr.open(str(path), mode="r")
    names: list[str] | None = None
    scale: list[float] | None = None
    if isinstance(node, zarr.Group):
        node, names, scale = _zarr_pick_array(node, path)
    if names is None:
        dims = getattr(node.metadata, "dimension_names", None) or node.attrs.get("_ARRAY_DIMENSIONS")
        names = list(dims) if dims and all(dims) else None
    if names is not None:
        axes = "".join({"c": "C", "z": "Z", "y": "Y", "x": "X"}.get(str(n).lower()[:1], "Q") for n in names)
    else:
        axes = guess_axes(tuple(node.shape), spatial_dims)
    layout = layout_from_axes(tuple(node.shape), axes, spatial_dims, path)
    spacing = node.attrs.get("spacing")
    if spacing is None and scale is not None:
        spacing = [scale[i] for i in layout.spatial]
    spacing_t = tuple(float(s) for s in spacing) if spacing is not None else None
    return LazyImage(node, layout, path, spacing=spacing_t, dtype=node.dtype)


def _zarr_pick_array(group: Any, path: Path) -> tuple[Any, list[str] | None, list[float] | None]:
    """The array a group holds: OME-Zarr's first multiscale level, else its only (or largest) array."""
    ms = group.attrs.get("multiscales") or (group.attrs.get("ome") or {}).get("multiscales")
    if ms:
        first = ms[0]["datasets"][0]
        names = [a["name"] if isinstance(a, dict) else a for a in ms[0].get("axes", [])] or None
        scale = next((t["scale"] for t in first.get("coordinateTransformations", []) if t["type"] == "scale"), None)
        return group[first["path"]], names, scale
    arrays = list(group.arrays())
    if not arrays:
        raise DataError(f"{path}: zarr group holds no array; fix: point at a zarr array or a group holding one")
    return max(arrays, key=lambda kv: int(np.prod(kv[1].shape)))[1], None, None


# ----------------------------------------------------------------------------------------------- writing


def write_image(
    path: str | os.PathLike[str],
    array: Any,
    spacing: tuple[float, ...] | list[float] | None = None,
    spatial_dims: int | None = None,
) -> None:
    """Write a whole array atomically; the format comes from the suffix.

    Args:
        path: destination (.png .jpg .bmp .tif/.tiff .nii/.nii.gz .zarr .npy).
        array: ``(C, *spatial)`` or ``(*spatial)`` (one channel). A 3-axis array is ``(C, H, W)`` when its
            first axis is 4 or shorter, else ``(Z, Y, X)``; ``spatial_dims`` or ``spacing`` settle it.
        spacing: voxel size per spatial axis, ``(Z, Y, X)`` order; stored by TIFF, NIfTI and zarr.
        spatial_dims: 2 or 3 when the array's layout is ambiguous.

    Shape:
        ``(C, *spatial)`` or ``(*spatial)``.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.nii.gz"
        >>> write_image(p, np.ones((1, 3, 4, 5), np.float32), spacing=(3.0, 1.0, 0.5))
        >>> d = read_image(p); d.array.shape, d.spacing
        ((1, 3, 4, 5), (3.0, 1.0, 0.5))
    """
    _check_spatial_dims(spatial_dims)
    path = Path(path)
    fmt = image_format(path)
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if spacing is not None and len(spacing) not in (2, 3):
        raise DataError(f"{path}: spacing {tuple(spacing)} must have 2 or 3 values, one per spatial axis")
    if spatial_dims is None and spacing is not None:
        spatial_dims = len(spacing)
    arr = _as_channels_first(arr, spatial_dims, path)
    if spacing is not None and len(spacing) != arr.ndim - 1:
        raise DataError(f"{path}: spacing {tuple(spacing)} has {len(spacing)} values for {arr.ndim - 1} spatial axes")
    writer = {"pil": _write_pil, "tiff": _write_tiff, "nifti": _write_nifti, "zarr": _write_zarr, "npy": _write_npy}
    writer[fmt](path, arr, tuple(float(s) for s in spacing) if spacing is not None else None)


def _as_channels_first(arr: np.ndarray, spatial_dims: int | None, path: Path) -> np.ndarray:
    if spatial_dims is None:
        spatial_dims = 2 if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[0] <= 4) else 3
    if arr.ndim == spatial_dims:
        return arr[None]
    if arr.ndim == spatial_dims + 1:
        return arr
    raise DataError(
        f"{path}: cannot write an array of shape {arr.shape} as a {spatial_dims}D image; "
        "fix: pass (C, *spatial) or (*spatial)"
    )


def _write_pil(path: Path, arr: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    from PIL import Image

    c = arr.shape[0]
    jpeg = path.name.lower().endswith((".jpg", ".jpeg"))
    ok_dtypes = (np.uint8,) if jpeg or path.name.lower().endswith(".bmp") else (np.uint8, np.uint16)
    if (
        arr.ndim != 3
        or c not in (1, 3, 4)
        or (jpeg and c == 4)
        or arr.dtype.type not in ok_dtypes
        or (arr.dtype == np.uint16 and c != 1)
    ):
        raise DataError(
            f"{path}: cannot store {arr.dtype} array of shape {arr.shape} in {path.suffix}; "
            "fix: 2D grey/RGB(A) uint8 (or grey uint16 PNG) only, use .tif or .npy for anything else"
        )
    if spacing is not None:
        log.debug("%s: %s does not store spacing; it is dropped", path, path.suffix)
    img = Image.fromarray(arr[0] if c == 1 else np.ascontiguousarray(np.moveaxis(arr, 0, -1)))
    with atomic_path(path) as tmp:
        img.save(tmp, format={".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}.get(path.suffix.lower(), "PNG"))


def _write_tiff(path: Path, arr: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    import tifffile

    axes = "CYX" if arr.ndim == 3 else "CZYX"
    meta: dict[str, Any] = {"axes": axes}
    extra: dict[str, Any] = {}
    if spacing is not None:
        meta["spacing"] = list(spacing)
        extra = {"resolution": (1.0 / spacing[-1], 1.0 / spacing[-2]), "resolutionunit": "NONE"}
    bigtiff = arr.nbytes > 2**31
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, arr, metadata=meta, bigtiff=bigtiff, photometric="minisblack", **extra)


def _write_nifti(path: Path, arr: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    import nibabel as nib

    spatial = arr.shape[1:]
    data = np.moveaxis(arr, 0, -1)[..., 0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    # (Z, Y, X[, C]) -> (X, Y, Z[, C]); a 2D multi-channel image gets a size-1 Z so C stays the 4th axis
    data = np.transpose(data, [*range(len(spatial))][::-1] + list(range(len(spatial), data.ndim)))
    if len(spatial) == 2 and arr.shape[0] > 1:
        data = data[:, :, None, :]
    zooms = list(spacing[::-1]) if spacing is not None else [1.0] * len(spatial)
    affine = np.diag([*zooms, *([1.0] * (3 - len(zooms))), 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_zooms(tuple(zooms) + (1.0,) * (data.ndim - len(zooms)))
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def _write_npy(path: Path, arr: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    if spacing is not None:
        log.debug("%s: .npy does not store spacing; it is dropped", path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def _write_zarr(path: Path, arr: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    import zarr

    names = ("c", "y", "x") if arr.ndim == 3 else ("c", "z", "y", "x")
    chunks = (1, *(min(s, 256 if arr.ndim == 3 else 64) for s in arr.shape[1:]))
    with atomic_path(path) as tmp:
        tmp.unlink()
        z = zarr.create_array(str(tmp), shape=arr.shape, dtype=arr.dtype, chunks=chunks, dimension_names=names)
        z[...] = arr
        if spacing is not None:
            z.attrs["spacing"] = list(spacing)
        if path.is_dir():  # os.replace cannot replace a non-empty directory: move the old one aside first
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageData",
    "Layout",
    "LazyImage",
    "image_format",
    "is_image_file",
    "open_image",
    "read_image",
    "read_mask",
    "strip_suffix",
    "write_image",
]
