"""TIFF and BigTIFF: region reads in O(region) (:class:`TiffRegions`); the rules for every TIFF unetkit writes.

Reading: the first series, level 0; its axes come from tifffile (``YXS``, ``QYX``, ImageJ hyperstacks).
Spacing (:func:`tiff_spacing`) comes from unetkit's own ``spacing`` metadata (files written before
OME-TIFF output), else OME-XML's ``PhysicalSizeZ/Y/X`` with their units, else ImageJ's ``spacing`` and
``unit`` with the X/Y resolution tags (a centimetre resolution unit is converted; an inch unit is a print
DPI, not a voxel size, and is ignored). Lengths with a unit come back in micrometres
(:mod:`unetkit.data.io.units`).

Writing (:func:`write_tiff` here and the streaming prediction writer): :func:`tiff_write_options` is the one
place that decides the OME-XML (axes, spacing, channel names), the compression and tiling, and whether the
file is BigTIFF (:func:`needs_bigtiff`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io.common import BadFile, check_declared_size
from unetkit.data.io.lazy import LazyImage, layout_from_axes
from unetkit.data.io.regions import BlockCache, BlockGrid, RegionFile, read_runs
from unetkit.data.io.units import um_per_unit
from unetkit.errors import ConfigError, DataError
from unetkit.utils import atomic_path

log = logging.getLogger(__name__)

BIGTIFF_BYTES = 2**31 - 2**25
"""Pixel data above this many bytes go to a BigTIFF: 2 GiB less 32 MiB of headroom for tags and metadata,
so every offset of a classic TIFF stays below 2**31 (readers that take offsets as signed 32-bit integers)."""


def needs_bigtiff(nbytes: int) -> bool:
    """Whether a TIFF holding ``nbytes`` of pixel data is written as BigTIFF (see :data:`BIGTIFF_BYTES`).

    Example:
        >>> needs_bigtiff(2**20), needs_bigtiff(2**31)
        (False, True)
    """
    return nbytes > BIGTIFF_BYTES


TIFF_COMPRESSIONS = ("zlib", "lzw", "zstd", "none")
"""Compressions unetkit writes: ``zlib`` (deflate: every TIFF reader, Fiji and QuPath included), ``lzw``,
``zstd`` (about 2-3x faster than deflate at its default level, files a little larger; Fiji and older libtiff
builds cannot read it), ``none``."""

TIFF_TILE = 256
"""Tile edge of compressed TIFFs unetkit writes (uncompressed ones are contiguous strips)."""


def check_compression(compression: str | None, what: str = "--compression") -> str | None:
    """``compression`` as tifffile names it (``None`` for uncompressed), refusing an unknown one.

    Example:
        >>> check_compression("zlib"), check_compression("none"), check_compression(None)
        ('zlib', None, None)
    """
    if compression is None or compression == "none":
        return None
    if compression not in TIFF_COMPRESSIONS:
        raise ConfigError(f"{what} {compression!r}: choose one of {', '.join(TIFF_COMPRESSIONS)}")
    return compression


def tiff_write_options(
    shape: tuple[int, ...],
    dtype: Any,
    spacing: tuple[float, ...] | None,
    lead: int = 1,
    *,
    channel_names: Sequence[str] | None = None,
    compression: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments to ``tifffile.imwrite`` for an array ``(*lead_axes, *spatial)``: an OME-TIFF.

    Leading axes are channels (``C``). The OME-XML (built here and written as the first page's description,
    ahead of the pixel data, so a truncated file keeps it) carries the axes, the spacing as
    ``PhysicalSizeZ/Y/X`` in micrometres (see :mod:`unetkit.data.io.units`) and the channel names; the
    spacing is also stored as X/Y resolution tags without a unit (for readers that ignore OME-XML). OME has
    no float16 pixel type, so a float16 array gets unetkit's JSON metadata instead (``axes``, ``spacing``,
    ``channel_names``; read back exactly). ``compression`` (``zlib``, ``lzw``, ``zstd``) writes
    :data:`TIFF_TILE`-pixel tiles; without it the data are one contiguous block.

    Example:
        >>> opts = tiff_write_options((2, 5, 6), "uint8", (0.5, 0.25), channel_names=["bg", "cell"])
        >>> b'PhysicalSizeX="0.25"' in opts["description"], b'Name="cell"' in opts["description"]
        (True, True)
        >>> opts["resolution"], opts["bigtiff"], opts["metadata"]
        ((4.0, 2.0), False, None)
        >>> tiff_write_options((2, 5, 6), "float16", (0.5, 0.25))["metadata"]
        {'axes': 'CYX', 'spacing': [0.5, 0.25]}
    """
    spatial = shape[lead:]
    axes = "YX" if len(spatial) == 2 else "ZYX"
    meta: dict[str, Any] = {"axes": "C" * lead + axes}
    opts: dict[str, Any] = {
        "photometric": "minisblack",
        "bigtiff": needs_bigtiff(math.prod(shape) * np.dtype(dtype).itemsize),
    }
    names = [str(n) for n in channel_names] if channel_names is not None and lead == 1 else None
    if names is not None and len(names) != shape[0]:
        names = None
    if spacing is not None:
        opts["resolution"] = (1.0 / spacing[-1], 1.0 / spacing[-2])
        opts["resolutionunit"] = "NONE"
    if np.dtype(dtype) == np.float16:  # no OME pixel type
        if spacing is not None:
            meta["spacing"] = [float(s) for s in spacing]
        if names is not None:
            meta["channel_names"] = names
        opts["metadata"] = meta
    else:
        opts["metadata"] = None
        opts["description"] = _ome_xml(shape, dtype, meta["axes"], spacing, names)
    compression = check_compression(compression)
    if compression is not None:
        opts["compression"] = compression
        opts["tile"] = (TIFF_TILE, TIFF_TILE)
    return opts


def _ome_xml(
    shape: tuple[int, ...], dtype: Any, axes: str, spacing: tuple[float, ...] | None, names: list[str] | None
) -> bytes:
    """The OME-XML of one image of ``shape`` stored as 2D pages (UTF-8: units are written as ``µm``)."""
    import tifffile

    meta: dict[str, Any] = {"axes": axes}
    if spacing is not None:
        for axis, s in zip(axes[-len(spacing) :], spacing, strict=True):
            meta[f"PhysicalSize{axis}"] = float(s)
            meta[f"PhysicalSize{axis}Unit"] = "µm"
    if names is not None:
        meta["Channel"] = {"Name": names}
    ome = tifffile.OmeXml()
    stored = (math.prod(shape[:-2]), 1, 1, shape[-2], shape[-1], 1)
    ome.addimage(np.dtype(dtype), shape, stored, **meta)
    return ome.tostring().encode()


def write_tiff(
    path: Path,
    arr: np.ndarray,
    spacing: tuple[float, ...] | None,
    *,
    channel_names: Sequence[str] | None = None,
    compression: str | None = None,
) -> None:
    """Write ``(C, *spatial)`` as an OME-TIFF, atomically.

    Uncompressed unless ``compression``; a file replaced keeps its compression (when unetkit writes it), so
    rewriting a prediction's labels (post-processing) leaves them as compressed as they were.
    """
    import tifffile

    if compression is None and path.is_file():
        compression = _written_compression(path)
    opts = tiff_write_options(
        arr.shape, arr.dtype, spacing, channel_names=channel_names, compression=compression
    )  # fmt: skip
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, arr, **opts)


def _written_compression(path: Path) -> str | None:
    """The compression of an existing TIFF if it is one unetkit writes, else ``None``."""
    import tifffile

    names = {8: "zlib", 5: "lzw", 50000: "zstd"}
    try:
        with tifffile.TiffFile(path) as tif:
            return names.get(int(tif.pages.first.compression))
    except bad_tiff().errors:
        return None


# ----------------------------------------------------------------------------------------------- reading


def _missing_codec(path: Path, exc: BaseException) -> DataError | None:
    """tifffile decodes LZW, JPEG, zstd, PackBits, ... only with the optional ``imagecodecs`` package."""
    text = str(exc)
    if "imagecodecs" not in text:
        return None
    fix = "pip install imagecodecs, or re-save the image uncompressed (or with deflate)"
    m = re.search(r"(COMPRESSION|PREDICTOR)\.(\w+)", text)
    if m is None:
        return DataError(f"reading this TIFF needs the 'imagecodecs' package ({text})", file=path, fix=fix)
    what = f"compressed with {m.group(2)}" if m.group(1) == "COMPRESSION" else f"uses the {m.group(2)} predictor"
    return DataError(
        f"the TIFF is {what}, which tifffile decodes only with the 'imagecodecs' package", file=path, fix=fix
    )


@functools.cache
def bad_tiff() -> BadFile:
    """What tifffile raises for a damaged TIFF.

    Its parser reports most damage as ``TiffFileError`` (a ``ValueError``), but flipped bytes in tags and
    offsets also surface as the other types listed here (seen by corrupting files byte by byte); only calls
    into tifffile and reads through its store are guarded, so the breadth stays inside the reader.
    """
    import tifffile

    errors: tuple[type[BaseException], ...] = (
        tifffile.TiffFileError,
        ValueError,
        OSError,
        EOFError,
        struct.error,
        zlib.error,
        KeyError,
        IndexError,
        TypeError,
        ZeroDivisionError,
        RuntimeError,
        AssertionError,
        NotImplementedError,
    )
    return BadFile("tiff", errors, _missing_codec)


def open_tiff(path: Path, spatial_dims: int | None) -> LazyImage:
    """Open the TIFF's first series (level 0 of a pyramid) for region reads.

    Region reads go through :class:`TiffRegions` (each strip or tile decoded once while cached; uncompressed
    data read with positional reads, only the region's bytes) wherever the series' pages lie in this file on
    a regular page grid; anything else (e.g. a multi-file OME-TIFF) through tifffile's zarr store.
    """
    import tifffile

    bad = bad_tiff()
    with bad.guard(path):
        tif = tifffile.TiffFile(path)
    regions: TiffRegions | None = None
    try:
        with bad.guard(path):
            if not tif.series:
                raise DataError("the TIFF holds no image", file=path, fix="re-export it")
            series = tif.series[0]
            shape, axes, dtype = tuple(int(s) for s in series.shape), str(series.axes), series.dtype
            if tif.is_ome and any(p is None for p in series.pages):  # tifffile would read the missing planes as 0
                raise DataError(
                    f"the OME-TIFF lists {len(series.pages)} planes but only "
                    f"{sum(p is not None for p in series.pages)} are in the file: truncated or corrupt",
                    file=path, fix="re-export or re-copy it",
                )  # fmt: skip
            regions = TiffRegions.open(tif, series, path)
            if regions is not None:  # the pixels lie in this file: it must be able to hold them (bombs)
                check_declared_size(path, shape, dtype, compressed=series.keyframe.compression != 1)
            source: Any = regions if regions is not None else _zarr_store(series)
            meta = _spacing_metadata(tif)
        layout = layout_from_axes(shape, axes, spatial_dims, path)
        spacing = tiff_spacing(meta, len(layout.spatial), path)

        def close() -> None:
            if regions is not None:
                regions.close()
            tif.close()

        return LazyImage(source, layout, path, spacing=spacing, dtype=dtype, on_close=close, bad_file=bad)
    except BaseException:
        if regions is not None:
            regions.close()
        tif.close()
        raise


def _zarr_store(series: Any) -> Any:
    import zarr

    return zarr.open(series.aszarr(level=0), mode="r")


RETILE_FIX = (
    "python -c \"import tifffile as t; t.imwrite('OUT.tif', t.imread('IN.tif'), tile=(512, 512), "
    "compression='zlib', bigtiff=True)\""
)
"""The one-line fix for a TIFF that cannot be read region by region (IN/OUT are the user's paths)."""


class TiffRegions:
    """A TIFF series seen as an array of its own shape; a region read touches only the strips/tiles under it.

    The series is ``(*page_grid, *page_shape)``: its pages (one per plane of a stack or hyperstack) on a
    grid, each page stored as strips or tiles (segments). Uncompressed segments are read with positional reads
    (:class:`~unetkit.data.io.regions.RegionFile`), one run per row
    (:func:`~unetkit.data.io.regions.read_runs`); compressed ones (LZW, deflate, zstd, JPEG, ...: tifffile
    with ``imagecodecs``) are decoded whole, once while they stay in the image's
    :class:`~unetkit.data.io.regions.BlockCache`.

    Built by :meth:`open`, which returns ``None`` for a series this cannot serve (pages in other files,
    irregular page grids), read then through tifffile's zarr store.

    Shape:
        the series' shape (tifffile's axes).
    """

    def __init__(self, series: Any, file: RegionFile, path: Path, lead: tuple[int, ...]) -> None:
        self.series, self.file, self.path = series, file, path
        self.key = series.keyframe
        self.pages = list(series.pages)
        self.shape = tuple(int(s) for s in series.shape)
        self.dtype = np.dtype(series.dtype)
        self.lead = lead
        k = self.key
        self.stored_dtype = np.dtype(k.dtype).newbyteorder(series.parent.byteorder)
        self.shaped = tuple(int(s) for s in k.shaped)  # (separate samples, depth, length, width, contig samples)
        if k.is_tiled:
            self.block = (1, int(k.tiledepth), int(k.tilelength), int(k.tilewidth), self.shaped[4])
        else:
            self.block = (1, self.shaped[1], int(k.rowsperstrip) or self.shaped[2], self.shaped[3], self.shaped[4])
        self.grid = tuple(-(-n // b) for n, b in zip(self.shaped, self.block, strict=True))
        self.raw = (
            int(k.compression) == 1
            and int(k.predictor) == 1
            and int(k.fillorder) == 1
            and int(k.bitspersample) == self.stored_dtype.itemsize * 8
            and self.stored_dtype.kind in "uif"
        )
        # the page axes in shaped order: tifffile's page axes letters -> normalised positions
        planar_separate = int(k.planarconfig) == 2
        pos = {"Z": 1, "Y": 2, "X": 3, "S": 0 if planar_separate else 4}
        self.page_axes = [pos[a] for a in str(k.axes)]
        self.cache = BlockCache()
        self._grids: dict[int, BlockGrid] = {}

    @classmethod
    def open(cls, tif: Any, series: Any, path: Path) -> TiffRegions | None:
        """The reader for ``series``, or ``None`` where its pages do not form a regular grid in this file."""
        k = series.keyframe
        try:
            pages = list(series.pages)
        except bad_tiff().errors:  # damaged page chain: tifffile's store reports it at the region read
            return None
        if k is None or not pages or any(p is None or p.parent is not tif for p in pages):
            return None
        page_shape = tuple(int(s) for s in k.shape)
        shape = tuple(int(s) for s in series.shape)
        n = len(shape) - len(page_shape)
        if n < 0 or shape[n:] != page_shape or math.prod(shape[:n]) != len(pages):
            return None
        if sorted("".join(str(k.axes))) != sorted(set(str(k.axes))) or not set(str(k.axes)) <= set("SZYX"):
            return None
        if not k.is_tiled and int(k.shaped[1]) > 1:
            return None  # striped volumetric pages (SGI ImageDepth): rare, left to tifffile
        reader = cls(series, RegionFile(path), path, shape[:n])
        reader._warn_if_unbounded()
        return reader

    def _warn_if_unbounded(self) -> None:
        """A compressed segment too large for the cache is decoded whole for every region read: say so."""
        seg = math.prod(self.block) * self.stored_dtype.itemsize
        if self.raw or seg <= self.cache.max_bytes:
            return
        ms = seg / 2**20 * 4  # about 4 ms per decoded MiB (LZW/deflate/JPEG on one core)
        log.warning(
            "%s: each %s strip/tile is %.0f MiB decoded and cannot be cached, so every region read decodes it "
            "again (about %.1f s per tile); fix: re-tile it once: %s",
            self.path, getattr(self.key.compression, "name", self.key.compression), seg / 2**20, ms / 1000, RETILE_FIX,
        )  # fmt: skip

    def _page_grid(self, page_index: int) -> BlockGrid:
        grid = self._grids.get(page_index)
        if grid is None:
            page = self.pages[page_index]
            offsets, counts = list(page.dataoffsets), list(page.databytecounts)

            def segment(idx: tuple[int, ...]) -> int:
                s, d, y, x, _ = idx
                return ((s * self.grid[1] + d) * self.grid[2] + y) * self.grid[3] + x

            def read_part(idx: tuple[int, ...], region: tuple[slice, ...]) -> np.ndarray | None:
                if not self.raw:
                    return None
                i = segment(idx)
                stored = (*self.block[1:4], self.block[4])
                if not self.key.is_tiled:  # a strip holds only the rows left at the image's end
                    stored = (stored[0], min(stored[1], self.shaped[2] - idx[2] * self.block[2]), *stored[2:])
                if counts[i] == 0:
                    return np.zeros([sl.stop - sl.start for sl in region], self.dtype)
                return read_runs(self.file, offsets[i], stored, self.stored_dtype, region[1:])[None]

            def read_blocks(idx: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
                out = []
                for ix in idx:
                    i = segment(ix)
                    data = self.file.read(offsets[i], counts[i]) if counts[i] else None
                    block, _, _ = self.key.decode(data, i, jpegtables=self.key.jpegtables)
                    if block is None:
                        block = np.full(self.block[1:], self.key.nodata, self.dtype)
                    out.append(np.asarray(block).reshape(1, *np.asarray(block).shape[-4:]))
                return out

            cache = _PageCache(self.cache, page_index)
            grid = BlockGrid(self.shaped, self.block, self.dtype, read_blocks, read_part, cache)  # type: ignore[arg-type]
            self._grids[page_index] = grid
        return grid

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (len(self.shape) - len(key))
        n = len(self.lead)
        lead_idx: list[range] = []
        drop: list[int] = []
        for axis, (k, size) in enumerate(zip(key[:n], self.lead, strict=True)):
            if isinstance(k, (int, np.integer)):
                lead_idx.append(range(int(k) % size, int(k) % size + 1))
                drop.append(axis)
            else:
                lead_idx.append(range(*k.indices(size)))
        page_key: list[Any] = [slice(None)] * 5
        for pos, k in zip(self.page_axes, key[n:], strict=True):
            page_key[pos] = slice(int(k), int(k) + 1) if isinstance(k, (int, np.integer)) else k
        for axis, k in enumerate(key[n:]):
            if isinstance(k, (int, np.integer)):
                drop.append(n + axis)
        parts = []
        for combo in itertools.product(*lead_idx):
            page = int(np.ravel_multi_index(combo, self.lead)) if n else 0
            region = self._page_grid(page)[tuple(page_key)]
            region = region.transpose(self.page_axes + [a for a in range(5) if a not in self.page_axes])
            parts.append(region.reshape(region.shape[: len(self.page_axes)]))
        out = np.stack(parts).reshape(*(len(r) for r in lead_idx), *parts[0].shape) if parts else np.empty(0)
        return out.reshape([s for i, s in enumerate(out.shape) if i not in drop]) if drop else out

    def close(self) -> None:
        self._grids.clear()
        self.cache.clear()
        self.file.close()


class _PageCache:
    """One image's block cache shared by its pages: keys carry the page index."""

    def __init__(self, cache: BlockCache, page: int) -> None:
        self.cache, self.page, self.max_bytes = cache, page, cache.max_bytes

    def get(self, key: Any) -> np.ndarray | None:
        return self.cache.get((self.page, key))

    def put(self, key: Any, block: np.ndarray) -> None:
        self.cache.put((self.page, key), block)


def _spacing_metadata(tif: Any) -> dict[str, Any]:
    """The raw metadata spacing may come from (read by tifffile, so inside the reader's guard)."""
    page = tif.pages.first
    tags = {name: page.tags.get(name) for name in ("XResolution", "YResolution", "ResolutionUnit")}
    return {
        "shaped": list(tif.shaped_metadata or ()),
        "ome": tif.ome_metadata if tif.is_ome else None,
        "imagej": tif.imagej_metadata or {},
        **{name: (tag.value if tag is not None else None) for name, tag in tags.items()},
    }


def ome_physical_sizes(xml: str) -> dict[str, float]:
    """``{"Z": .., "Y": .., "X": ..}`` in micrometres from an OME-XML's first ``Pixels`` element.

    A size without a unit is in micrometres (OME's default); one in a unit that is not a length (or an
    unknown one) is left out.

    Example:
        >>> ome_physical_sizes('<OME><Image><Pixels PhysicalSizeX="250" PhysicalSizeXUnit="nm" '
        ...                    'PhysicalSizeY="0.25" PhysicalSizeZ="2"/></Image></OME>')
        {'Z': 2.0, 'Y': 0.25, 'X': 0.25}
    """
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    sizes: dict[str, float] = {}
    if pixels is None:
        return sizes
    for axis in "ZYX":
        value = pixels.get(f"PhysicalSize{axis}")
        factor = um_per_unit(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if value is not None and factor is not None:
            sizes[axis] = float(value) * factor
    return sizes


def tiff_spacing(meta: dict[str, Any], ndim: int, path: Path) -> tuple[float, ...] | None:
    """Spacing from unetkit's own metadata, else OME-XML, else ImageJ's spacing/unit and the resolution tags.

    Example:
        >>> tiff_spacing({"shaped": [{"spacing": [2, 0.5]}], "imagej": {}}, 2, Path("x.tif"))
        (2.0, 0.5)
        >>> tiff_spacing({"shaped": [], "imagej": {"spacing": 3.0}, "XResolution": (2, 1),
        ...               "YResolution": (4, 1), "ResolutionUnit": 1}, 3, Path("x.tif"))
        (3.0, 0.25, 0.5)
        >>> tiff_spacing({"shaped": [], "imagej": {"spacing": 0.3, "unit": "nm"}, "XResolution": (10, 1),
        ...               "YResolution": (10, 1), "ResolutionUnit": 1}, 3, Path("x.tif"))
        (0.0003, 0.0001, 0.0001)
    """
    try:
        for item in meta["shaped"]:
            if isinstance(item, dict) and item.get("spacing") is not None and len(item["spacing"]) == ndim:
                return tuple(float(s) for s in item["spacing"])
        if meta.get("ome"):
            sizes = ome_physical_sizes(meta["ome"])
            axes = "YX" if ndim == 2 else "ZYX"
            if all(a in sizes for a in axes[-2:]):
                return tuple(sizes.get(a, 1.0) for a in axes)
        xres, yres, unit = meta.get("XResolution"), meta.get("YResolution"), meta.get("ResolutionUnit")
        if xres is None or yres is None or (unit is not None and int(unit) == 2):  # inch: a print DPI
            return None
        factor = 1e4 if unit is not None and int(unit) == 3 else (um_per_unit(meta["imagej"].get("unit")) or 1.0)
        sy, sx = (factor * float(r[1]) / float(r[0]) if r[0] else 1.0 for r in (yres, xres))
        if ndim == 2:
            return (sy, sx) if (sy, sx) != (1.0, 1.0) else None
        sz = float(meta["imagej"].get("spacing", 1.0)) * (um_per_unit(meta["imagej"].get("unit")) or 1.0)
        return (sz, sy, sx) if (sz, sy, sx) != (1.0, 1.0, 1.0) else None
    except (TypeError, ValueError, IndexError, AttributeError, SyntaxError) as exc:  # malformed tag values or XML
        raise DataError(
            f"malformed spacing metadata ({type(exc).__name__}: {exc})",
            file=path,
            fix="re-save the image with a valid resolution (or without one)",
        ) from exc
