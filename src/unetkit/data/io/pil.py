"""PNG, JPEG and BMP through Pillow: read whole, written whole; no spacing (it is dropped on writing); label
PNGs written as palette images (indices as pixels, the class colours as palette)."""

from __future__ import annotations

import functools
import logging
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unetkit.data.io.common import BadFile, check_declared_size, check_whole_read
from unetkit.data.io.lazy import LazyImage, layout_from_axes
from unetkit.errors import DataError
from unetkit.utils import atomic_path

log = logging.getLogger(__name__)


def _too_large(path: Path, exc: BaseException) -> DataError | None:
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):
        numbers = re.findall(r"\d+", str(exc))
        claimed = f"{int(numbers[0]):,} pixels" if numbers else "more pixels than Pillow reads safely"
        return DataError(
            f"the header declares {claimed}, over Pillow's limit of {2 * (Image.MAX_IMAGE_PIXELS or 0):,}: a "
            "decompression bomb, or an image too large to read whole",
            file=path,
            fix="store images this large as a tiled TIFF or zarr (read region by region), or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file",
        )
    return None


@functools.cache
def bad_pil() -> BadFile:
    """What Pillow raises for a damaged file: ``UnidentifiedImageError`` (an ``OSError``) when it cannot tell
    the format, ``OSError`` for truncated data, ``SyntaxError``/``ValueError``/``struct.error``/``zlib.error``
    from its format plug-ins for broken chunks, ``DecompressionBombError`` for absurd sizes."""
    from PIL import Image

    errors = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)
    return BadFile("pil", errors, _too_large)


def open_pil(path: Path, spatial_dims: int | None, mask: bool) -> LazyImage:
    """Read the whole image; a palette image gives its colours, or its indices for a mask."""
    from PIL import Image

    im: Image.Image
    with bad_pil().guard(path), Image.open(path) as im:
        bands = 4 if im.mode == "P" else len(im.getbands())
        nbytes = im.width * im.height * bands * (2 if im.mode.startswith("I;16") else 4 if im.mode in "IF" else 1)
        shape = (bands, im.height, im.width)
        check_declared_size(path, shape, np.uint8, compressed=im.format != "BMP")
        check_whole_read(path, nbytes, f"a {im.width} x {im.height} {im.format or 'PIL'} image")
        im.load()
        if im.mode == "P" and not mask:
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "1" or im.mode == "CMYK":
            im = im.convert("L" if im.mode == "1" else "RGB")
        arr = np.asarray(im)
    axes = "YX" if arr.ndim == 2 else "YXS"
    return LazyImage(arr, layout_from_axes(arr.shape, axes, spatial_dims or 2, path), path)


def pil_channels(path: Path) -> int:
    """The channel count :func:`open_pil` gives an image, from its header only (nothing is decoded)."""
    from PIL import Image

    im: Image.Image
    with bad_pil().guard(path), Image.open(path) as im:
        if im.mode == "P":
            return 4 if "transparency" in im.info else 3
        return 1 if im.mode in ("1", "L", "I", "I;16", "F") else 3 if im.mode == "CMYK" else len(im.getbands())


def write_pil(
    path: Path,
    arr: np.ndarray,
    spacing: tuple[float, ...] | None,
    palette: Sequence[Sequence[int]] | None = None,
) -> None:
    """Write ``(C, H, W)``: grey/RGB(A) uint8, or grey uint16 PNG.

    With ``palette`` (one RGB per label value), a one-channel ``uint8`` PNG is written as a palette image
    (mode ``P``): the pixel values stay the labels, and every viewer shows them in their colours. Labels
    beyond 255 (``uint16``) cannot be palette indices and stay 16-bit grey.
    """
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
            f"cannot store {arr.dtype} array of shape {arr.shape} in {path.suffix}",
            file=path,
            fix="2D grey/RGB(A) uint8 (or grey uint16 PNG) only, use .tif or .npy for anything else",
        )
    if spacing is not None:
        log.debug("%s: %s does not store spacing; it is dropped", path, path.suffix)
    img = Image.fromarray(arr[0] if c == 1 else np.ascontiguousarray(np.moveaxis(arr, 0, -1)))
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}.get(path.suffix.lower(), "PNG")
    if palette is not None and fmt == "PNG" and c == 1:
        if arr.dtype == np.uint8:
            img.putpalette(palette_bytes(palette, int(arr.max(initial=0)) + 1))  # mode L -> P, pixels unchanged
        else:
            log.debug("%s: labels beyond 255 cannot be palette indices; written as 16-bit grey", path)
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt)


def palette_bytes(colours: Sequence[Sequence[int]], n: int) -> bytes:
    """A PNG palette: ``colours`` for the first values, :func:`unetkit.classes.palette` for any value
    ``< n`` beyond them (so every pixel has a colour and Pillow's bit depth fits every value); at most 256.

    >>> list(palette_bytes([(1, 2, 3)], 2))
    [1, 2, 3, 255, 179, 0]
    """
    from unetkit.classes import palette

    rgb = [tuple(int(v) for v in c[:3]) for c in list(colours)[:256]]
    if len(rgb) < n:
        rgb += palette(min(n, 256))[len(rgb) :]
    return bytes(v for c in rgb for v in c)


def read_palette(path: Path) -> list[tuple[int, int, int]] | None:
    """The colours of a palette image (mode ``P``), one RGB per index; ``None`` for any other image."""
    from PIL import Image

    with bad_pil().guard(path), Image.open(path) as im:
        if im.mode != "P":
            return None
        flat = im.getpalette("RGB") or []
    return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat) - 2, 3)]
