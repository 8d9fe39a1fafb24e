"""Load a segmentation dataset into memory: checked, masks mapped to classes, one :class:`Sample` per pair.

:func:`load_dataset` runs :func:`~unetkit.data.check.check_dataset` (so a broken dataset stops with every
problem listed before any work starts), then converts each mask with the dataset's single, reported
:class:`~unetkit.data.masks.LabelMapping`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from unetkit.data.check import CheckReport, check_dataset
from unetkit.data.fingerprint import Fingerprint
from unetkit.data.masks import LabelMapping, MaskKind
from unetkit.viz.palette import palette

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One training example.

    Attributes:
        name: the pair's name (relative path without suffix).
        image: float32 intensities, not yet normalised.
        mask: int64 class indices (an ``ignore_index`` value kept as is).
        instances: int32 instance ids when the mask was an instance mask, else ``None``.
        spacing: voxel spacing ``(Z, Y, X)`` order, or ``None``.
        weight: float32 per-voxel loss weight, filled later by training (``None`` here).

    Shape:
        ``image`` is ``(C, *S)``; ``mask``, ``instances`` and ``weight`` are ``(*S)``.
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    weight: np.ndarray | None = None

    @property
    def spatial_dims(self) -> int:
        return self.image.ndim - 1


@dataclass
class SegmentationDataset(Sequence[Sample]):
    """An in-memory dataset: samples plus what a model file needs to know about them.

    Attributes:
        samples: one :class:`Sample` per image/mask pair, sorted by name.
        num_classes: classes after mapping (class 0 = background).
        class_names: ``background`` then ``foreground`` (2 classes) or ``class_1``, ``class_2``, ...
        class_colours: from colour masks, else ``None`` (the model file then uses the default palette).
        label_mapping: raw mask value -> class, as reported.
        in_channels: image channels.
        spatial_dims: 2 or 3.
        fingerprint: the dataset's fingerprint (digest included).
        root: the dataset folder (or the list file's folder).
    """

    samples: list[Sample]
    num_classes: int
    class_names: list[str]
    class_colours: list[tuple[int, int, int]] | None
    label_mapping: LabelMapping
    in_channels: int
    spatial_dims: int
    fingerprint: Fingerprint
    root: Path
    report: CheckReport | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.samples)

    @overload
    def __getitem__(self, i: int) -> Sample: ...
    @overload
    def __getitem__(self, i: slice) -> list[Sample]: ...
    def __getitem__(self, i: int | slice) -> Sample | list[Sample]:
        return self.samples[i]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def colours(self) -> list[tuple[int, int, int]]:
        """Class colours: the masks' own palette when they had one, else the default palette."""
        return self.class_colours or palette(self.num_classes)

    def describe(self) -> dict[str, Any]:
        """Model-file fields that come from the data: names, colours, spacing, fingerprint digest."""
        return {
            "class_names": self.class_names,
            "class_colours": self.colours(),
            "spacing": self.fingerprint.spacing_median,
            "provenance": {"dataset_digest": self.fingerprint.digest, "label_mapping": self.label_mapping.describe()},
        }


def default_class_names(num_classes: int) -> list[str]:
    """``["background", "foreground"]`` for 2 classes, else ``background, class_1, ...``.

    Example:
        >>> default_class_names(3)
        ['background', 'class_1', 'class_2']
    """
    if num_classes == 2:
        return ["background", "foreground"]
    return ["background", *(f"class_{i}" for i in range(1, num_classes))]


def load_dataset(
    path: str | Path,
    *,
    ignore_index: int | None = None,
    mask_kind: MaskKind = "auto",
    spatial_dims: int | None = None,
    num_classes: int | None = None,
) -> SegmentationDataset:
    """Check and load a dataset into memory.

    Args:
        path: a folder with ``images/`` and ``masks/`` (files sharing a name), or a CSV/YAML list of pairs.
        ignore_index: a raw mask value kept as is (e.g. 255 for "unlabelled").
        mask_kind: ``"auto"`` (decide from the values), ``"classes"`` or ``"instances"``.
        spatial_dims: 2 or 3 to force how files are read.
        num_classes: when given, labels must fit in it (and it is the dataset's ``num_classes``).

    Returns:
        A :class:`SegmentationDataset`.

    Raises:
        DataError: listing every problem found, one per line.

    Shape:
        Each sample's image is ``(C, *S)`` float32 and its mask ``(*S)`` int64.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> from unetkit.data.io import write_image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> write_image(root / "images" / "a.png", np.full((8, 8), 9, np.uint8))
        >>> write_image(root / "masks" / "a.png", np.eye(8, dtype=np.uint8) * 255)
        >>> ds = load_dataset(root)
        >>> len(ds), ds.num_classes, ds.label_mapping.describe(), ds[0].mask.max()
        (1, 2, 'classes: 0->0, 255->1', np.int64(1))
    """
    report = check_dataset(
        path,
        num_classes,
        ignore_index=ignore_index,
        mask_kind=mask_kind,
        spatial_dims=spatial_dims,
        keep_arrays=True,
    )
    report.raise_for_problems()
    mapping = report.mapping
    assert mapping is not None  # no problems means the mapping was decided
    samples = []
    for rec in report.records:
        assert rec.image is not None and rec.mask is not None  # kept by keep_arrays=True
        mask, instances = mapping.apply(rec.mask, rec.image.ndim - 1)
        samples.append(
            Sample(
                name=rec.name,
                image=rec.image.astype(np.float32),
                mask=mask,
                instances=instances,
                spacing=rec.spacing,
            )
        )
        rec.image = rec.mask = None  # the samples own the data now
    fp = report.fingerprint
    k = max(num_classes or 0, mapping.num_classes)
    if not mapping.is_identity:
        log.info("%s: mask values mapped to classes: %s", path, mapping.describe())
    colours = mapping.class_colours
    if colours is not None and len(colours) < k:
        colours = colours + palette(k)[len(colours) :]
    return SegmentationDataset(
        samples=samples,
        num_classes=k,
        class_names=default_class_names(k),
        class_colours=colours,
        label_mapping=mapping,
        in_channels=int(fp.in_channels or 1),
        spatial_dims=int(fp.spatial_dims or 2),
        fingerprint=fp,
        root=report.root,
        report=report,
    )
