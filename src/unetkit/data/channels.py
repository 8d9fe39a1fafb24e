"""The one channel rule: does an image's channel count fit a model's, and how is it converted on reading.

An image whose channel count differs from the network's ``in_channels`` is refused, naming the file, the
channels found and expected and the conversions that would fit (:func:`check_channels`), unless a
conversion is asked for (``--channels`` on the command line, ``channels=`` in Python):

- ``grey``: RGB(A) -> one channel by luma, ``0.299 R + 0.587 G + 0.114 B`` (alpha dropped); grey + alpha ->
  the grey channel; one channel stays as it is;
- ``rgb``: one channel (or grey + alpha) -> the grey channel three times; RGBA -> RGB (alpha dropped);
- ``first``: the first ``in_channels`` channels (refused when the image has fewer).

The conversion is applied to every region read (:class:`ChannelView`), so a 20000 x 20000 image is
converted band by band as the tiler reads it, never whole. Integer images stay in their dtype (luma is
rounded), so the model's normalisation sees the same kind of values it was trained on. Nothing is
recorded in the model: the conversion belongs to the images of one run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io.lazy import ImageView, _normalise_key
from unetkit.errors import ConfigError, DataError

CHANNEL_MODES = ("rgb", "grey", "first")
"""Conversions of an image's channels to the model's (see the module docstring)."""

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of R, G and B (what Pillow's ``convert("L")`` uses)."""

_WHAT = {"grey": "luma of R, G, B", "rgb": "grey repeated 3x, alpha dropped"}


def check_mode(mode: str | None) -> None:
    """``mode`` must be ``None`` or one of :data:`CHANNEL_MODES`."""
    if mode is not None and mode not in CHANNEL_MODES:
        raise ConfigError(f"--channels {mode!r}: choose rgb, grey or first (or leave it out to refuse a mismatch)")


def fits(found: int, want: int, mode: str | None) -> bool:
    """Whether an image of ``found`` channels feeds a ``want``-channel model under ``mode``.

    Example:
        >>> fits(3, 1, None), fits(3, 1, "grey"), fits(1, 3, "rgb"), fits(4, 3, "rgb"), fits(2, 3, "first")
        (False, True, True, True, False)
    """
    if found == want:
        return True
    if mode == "grey":
        return want == 1 and found in (2, 3, 4)
    if mode == "rgb":
        return want == 3 and found in (1, 2, 4)
    if mode == "first":
        return found > want
    return False


def source_channels(found: int, want: int, mode: str | None) -> int:
    """How many leading channels of the image the conversion reads (alpha is never read)."""
    if found == want:
        return found
    if mode == "grey":
        return 3 if found >= 3 else 1
    if mode == "rgb":
        return 3 if found == 4 else 1
    return want


def check_channels(
    path: str | os.PathLike[str] | None, found: int, want: int, mode: str | None, model: str | None = None
) -> None:
    """Refuse an image of ``found`` channels for a ``want``-channel model unless ``mode`` converts it.

    The message names the file, the channels found and expected, and the ``--channels`` values that fit.

    Example:
        >>> try:
        ...     check_channels("rgb.png", 3, 1, None)
        ... except DataError as e:
        ...     print(e)  # doctest: +NORMALIZE_WHITESPACE
        rgb.png: the image has 3 channels but the model expects 1 channel; fix: convert while reading: --channels
        grey (luma of R, G, B) or --channels first (channel 0 only), channels='grey' in Python; or use a model
        trained on 3-channel images
    """
    check_mode(mode)
    if fits(found, want, mode):
        return
    plural = "s" if want != 1 else ""
    problem = f"the image has {found} channel{'s' if found != 1 else ''} but the model"
    problem += f" {model}" if model else ""
    problem += f" expects {want} channel{plural}"
    if mode is not None:
        problem += f", and --channels {mode} {_cannot(mode, want)}"
    options = [m for m in CHANNEL_MODES if m != mode and fits(found, want, m)]
    other = f"use a model trained on {found}-channel images"
    if not options:
        raise DataError(problem, file=path, fix=other)
    ways = " or ".join(f"--channels {m} ({_what(m, want)})" for m in options)
    fix = f"convert while reading: {ways}, channels='{options[0]}' in Python; or {other}"
    raise DataError(problem, file=path, fix=fix)


def _cannot(mode: str, want: int) -> str:
    """Why ``mode`` cannot feed a ``want``-channel model (the image's count is not one it converts)."""
    if mode == "grey":
        return "makes 1 channel" if want != 1 else "converts 2 to 4 channels (grey + alpha, RGB, RGBA)"
    if mode == "rgb":
        return "makes 3 channels" if want != 3 else "converts 1, 2 or 4 channels (grey, grey + alpha, RGBA)"
    return f"needs at least {want}"


def _what(mode: str, want: int) -> str:
    if mode == "first":
        return "channel 0 only" if want == 1 else f"channels 0-{want - 1} only"
    return _WHAT[mode]


def convert_channels(array: np.ndarray, want: int, mode: str | None) -> np.ndarray:
    """Convert the channels (axis 0) of ``array`` to ``want`` by ``mode``; the dtype is kept.

    ``array`` may hold only the :func:`source_channels` leading channels (what :class:`ChannelView` reads).
    Channels that ``mode`` cannot convert are refused (:func:`check_channels`).

    Shape:
        ``(C, *S) -> (want, *S)``.

    Example:
        >>> rgb = np.array([[[255]], [[0]], [[0]]], np.uint8)
        >>> convert_channels(rgb, 1, "grey").ravel().tolist(), convert_channels(rgb[:1], 3, "rgb").shape
        ([76], (3, 1, 1))
    """
    found = array.shape[0]
    check_channels(None, found, want, mode)
    if found == want:
        return array
    if mode == "grey" and found >= 3:
        return _luma(array[:3])
    if mode in ("grey", "rgb") and found in (1, 2):
        first = array[:1]
        return first if mode == "grey" else np.repeat(first, 3, axis=0)
    return array[:want]  # rgb from RGBA, first


def _luma(rgb: np.ndarray) -> np.ndarray:
    work = np.float64 if rgb.dtype == np.float64 else np.float32
    grey = sum(w * rgb[i].astype(work, copy=False) for i, w in enumerate(LUMA))
    if rgb.dtype.kind in "iu":
        info = np.iinfo(rgb.dtype)
        grey = np.clip(np.rint(grey), info.min, info.max)
    return np.asarray(grey, dtype=rgb.dtype)[None]


class ChannelView(ImageView):
    """An opened image seen with the model's channels: each region read is converted (:func:`convert_channels`).

    Only the source channels the conversion needs are read (an RGBA image's alpha never is). Attributes the
    readers and the tiler use (``shape``, ``dtype``, ``spacing``, ``path``) are the image's, with
    ``shape[0] = want``; :meth:`close` closes the image.

    Shape:
        ``(want, *S)`` over an image ``(C, *S)``.

    Example:
        >>> rgba = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(4, 2, 3)
        >>> view = ChannelView(rgba, 3, "rgb")
        >>> view.shape, view[:, 1:, ::2].shape, bool((view[1] == rgba[1]).all())
        ((3, 2, 3), (3, 1, 2), True)
    """

    def __init__(self, image: Any, want: int, mode: str | None) -> None:
        found = int(image.shape[0])
        check_channels(getattr(image, "path", None), found, want, mode)
        self.image, self.want, self.mode = image, int(want), mode
        self._read = source_channels(found, self.want, mode)
        self.shape: tuple[int, ...] = (self.want, *(int(s) for s in image.shape[1:]))
        self.dtype = np.dtype(image.dtype)
        self.spacing = getattr(image, "spacing", None)
        self.path = getattr(image, "path", None)

    def __getitem__(self, key: Any) -> np.ndarray:
        slices, ints = _normalise_key(key, self.shape)
        raw = np.asarray(self.image[(slice(0, self._read), *slices[1:])])
        region = convert_channels(raw, self.want, self.mode)[slices[0]]
        return region.squeeze(axis=ints) if ints else region

    def close(self) -> None:
        close = getattr(self.image, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        return f"ChannelView({self.image!r}, want={self.want}, mode={self.mode!r})"


def file_channels(path: str | os.PathLike[str], spatial_dims: int | None = None) -> int:
    """An image file's channel count as :func:`~unetkit.data.io.open_image` gives it, from its header only (a
    PNG, JPEG or BMP is not decoded; other formats open lazily)."""
    from unetkit.data.io import image_format, open_image
    from unetkit.data.io.pil import pil_channels

    if image_format(path) == "pil" and spatial_dims in (None, 2):
        return pil_channels(Path(path))
    with open_image(path, spatial_dims) as img:
        return int(img.shape[0])


def with_channels(image: Any, want: int, mode: str | None, model: str | None = None) -> Any:
    """``image`` itself when its channels are the model's, else a :class:`ChannelView` converting them.

    Raises:
        DataError: the channels differ and ``mode`` cannot convert them (:func:`check_channels`).
    """
    found = int(image.shape[0])
    check_channels(getattr(image, "path", None), found, want, mode, model)
    return image if found == want else ChannelView(image, want, mode)


__all__ = [
    "CHANNEL_MODES",
    "LUMA",
    "ChannelView",
    "check_channels",
    "check_mode",
    "convert_channels",
    "file_channels",
    "fits",
    "source_channels",
    "with_channels",
]
