"""A dataset's fingerprint: counts, sizes, spacing, intensity statistics, class frequencies and a digest.

Intensity percentiles come from a fixed-seed random subsample of every image (at most
``SAMPLES_PER_IMAGE`` voxels per channel each), mean and standard deviation from all voxels, so the
fingerprint is deterministic and cheap. The ``digest`` is a sha256 over the sorted relative file names,
their sizes and the sha256 of their bytes: renaming, editing or adding a file changes it, copying or
touching the dataset does not (mtimes are not used).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SAMPLES_PER_IMAGE = 20_000
PERCENTILES = (0.5, 50.0, 99.5)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of every file under a directory (a ``.zarr`` store) with its name."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def file_size(path: Path) -> int:
    """Size in bytes (summed over a directory store)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def dataset_digest(entries: Iterable[tuple[str, int, str]]) -> str:
    """sha256 over sorted ``(relative name, size, content sha256)`` entries.

    Example:
        >>> dataset_digest([("b", 1, "x"), ("a", 2, "y")]) == dataset_digest([("a", 2, "y"), ("b", 1, "x")])
        True
    """
    h = hashlib.sha256()
    for name, size, sha in sorted(entries):
        h.update(f"{name}\0{size}\0{sha}\n".encode())
    return h.hexdigest()


class IntensityStats:
    """Accumulates per-channel sums and a fixed-seed subsample over images of one channel count."""

    def __init__(self) -> None:
        self.count: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.total_sq: np.ndarray | None = None
        self.minimum: np.ndarray | None = None
        self.maximum: np.ndarray | None = None
        self.samples: list[np.ndarray] = []
        self.nonfinite = 0

    def add(self, image: np.ndarray, seed: int = 0) -> None:
        """Add one ``(C, *S)`` image (any dtype); non-finite voxels are counted and left out."""
        flat = image.reshape(image.shape[0], -1).astype(np.float64, copy=False)
        finite = np.isfinite(flat)
        if not finite.all():
            self.nonfinite += int((~finite).sum())
            flat = np.where(finite, flat, np.nan)
        if self.total is not None and flat.shape[0] != len(self.total):
            return  # a channel-count mismatch is reported by the check; keep the statistics of the majority
        s, sq = np.nansum(flat, axis=1), np.nansum(flat * flat, axis=1)
        lo, hi = np.nanmin(flat, axis=1), np.nanmax(flat, axis=1)
        if self.total is None or self.total_sq is None or self.minimum is None or self.maximum is None:
            self.total, self.total_sq, self.minimum, self.maximum = s, sq, lo, hi
        else:
            self.total, self.total_sq = self.total + s, self.total_sq + sq
            self.minimum, self.maximum = np.minimum(self.minimum, lo), np.maximum(self.maximum, hi)
        n_finite = finite.sum(axis=1)
        self.count = n_finite if self.count is None else self.count + n_finite
        n = flat.shape[1]
        take = np.random.default_rng(seed).choice(n, size=min(n, SAMPLES_PER_IMAGE), replace=False)
        self.samples.append(flat[:, np.sort(take)])

    def result(self) -> dict[str, list[float]]:
        """Per-channel ``mean``, ``std``, ``min``, ``max`` and ``p0.5``/``p50``/``p99.5``."""
        if self.total is None or self.count is None or self.total_sq is None or not self.count.all():
            return {}
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.total_sq / self.count - mean**2, 0.0))
        pooled = np.concatenate(self.samples, axis=1)
        pct = np.nanpercentile(pooled, PERCENTILES, axis=1)
        out = {"mean": mean, "std": std, "min": self.minimum, "max": self.maximum}
        out.update({f"p{p:g}": pct[i] for i, p in enumerate(PERCENTILES)})
        return {k: [float(x) for x in np.atleast_1d(v)] for k, v in out.items()}


@dataclass
class Fingerprint:
    """Summary of a dataset, printed by ``unetkit check`` and recorded in a model file's provenance.

    Attributes:
        num_samples: image/mask pairs read.
        spatial_dims: 2 or 3 (the majority).
        in_channels: image channels (the majority).
        image_dtype: image dtype (the majority).
        size_min / size_median / size_max: spatial size per axis.
        spacing_median: median voxel spacing per axis, ``None`` when no file has one.
        intensity: per-channel ``mean``, ``std``, ``min``, ``max``, ``p0.5``, ``p50``, ``p99.5``.
        class_counts: voxels per class (index = class), ignore voxels not counted.
        label_mapping: the raw value -> class mapping as reported.
        digest: sha256 over sorted file names, sizes and content hashes.
    """

    num_samples: int = 0
    spatial_dims: int | None = None
    in_channels: int | None = None
    image_dtype: str | None = None
    size_min: list[int] | None = None
    size_median: list[float] | None = None
    size_max: list[int] | None = None
    spacing_median: list[float] | None = None
    intensity: dict[str, list[float]] = field(default_factory=dict)
    class_counts: list[int] = field(default_factory=list)
    ignored_voxels: int = 0
    label_mapping: str = ""
    mask_kind: str = ""
    digest: str = ""

    @property
    def class_frequencies(self) -> list[float]:
        """Fraction of labelled voxels per class."""
        total = sum(self.class_counts)
        return [c / total for c in self.class_counts] if total else []

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict, with ``class_frequencies`` included."""
        d = asdict(self)
        d["class_frequencies"] = self.class_frequencies
        return d


def summarise_sizes(shapes: list[tuple[int, ...]]) -> tuple[list[int], list[float], list[int]] | None:
    """Per-axis min, median and max of spatial shapes of equal length."""
    if not shapes or len({len(s) for s in shapes}) != 1:
        return None
    arr = np.array(shapes)
    return arr.min(0).tolist(), [float(x) for x in np.median(arr, 0)], arr.max(0).tolist()
