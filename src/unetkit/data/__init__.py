"""Data: read and write images, load and check datasets, normalise intensities, sample patches.

See ``docs/data.md``.
"""

from __future__ import annotations

from unetkit.data.check import CheckReport, check_dataset
from unetkit.data.datasets import Sample, SegmentationDataset, load_dataset
from unetkit.data.fingerprint import Fingerprint
from unetkit.data.io import ImageData, LazyImage, open_image, read_image, read_mask, write_image
from unetkit.data.masks import LabelMapping
from unetkit.data.normalize import Normalizer
from unetkit.data.pairs import Problem

__all__ = [
    "CheckReport",
    "Fingerprint",
    "ImageData",
    "LabelMapping",
    "LazyImage",
    "Normalizer",
    "Problem",
    "Sample",
    "SegmentationDataset",
    "check_dataset",
    "load_dataset",
    "open_image",
    "read_image",
    "read_mask",
    "write_image",
]
