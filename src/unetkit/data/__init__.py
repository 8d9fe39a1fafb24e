"""Data: read and write images, load and check datasets, normalise intensities, sample patches."""

from __future__ import annotations

from unetkit.data.io import ImageData, LazyImage, open_image, read_image, read_mask, write_image

__all__ = ["ImageData", "LazyImage", "open_image", "read_image", "read_mask", "write_image"]
