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

from unetkit.classes import RGB, Classes, ClassSpec
from unetkit.data.check import CheckReport, check_dataset
from unetkit.data.fingerprint import Fingerprint
from unetkit.data.masks import LabelMapping, MaskKind
from unetkit.data.streamed import open_sample_files

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
        classes: the name and colour of each class (:meth:`unetkit.classes.Classes.resolve`: the user's,
            else the colour masks' colours and the default names and palette).
        label_mapping: raw mask value -> class, as reported (the model file keeps it).
        in_channels: image channels.
        spatial_dims: 2 or 3.
        fingerprint: the dataset's fingerprint (digest included).
        root: the dataset folder (or the list file's folder).
    """

    samples: list[Sample]
    num_classes: int
    classes: Classes
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

    @property
    def class_names(self) -> list[str]:
        return list(self.classes.names)

    @property
    def class_colours(self) -> list[RGB]:
        return list(self.classes.colours)

    def describe(self) -> dict[str, Any]:
        """Model-file fields that come from the data: names, colours, label mapping, spacing, digest."""
        return {
            "class_names": self.class_names,
            "class_colours": self.class_colours,
            "label_mapping": self.label_mapping.to_dict(),
            "spacing": self.fingerprint.spacing_median,
            "provenance": {"dataset_digest": self.fingerprint.digest, "label_mapping": self.label_mapping.describe()},
        }


def load_dataset(
    path: str | Path,
    *,
    ignore_index: int | None = None,
    mask_kind: MaskKind = "auto",
    spatial_dims: int | None = None,
    num_classes: int | None = None,
    classes: Sequence[ClassSpec] | None = None,
    mapping: LabelMapping | None = None,
    stream: bool = False,
) -> SegmentationDataset:
    """Check and load a dataset into memory (or, with ``stream``, open it for region reads).

    Args:
        path: a folder with ``images/`` and ``masks/`` (files sharing a name), or a CSV/YAML list of pairs.
        ignore_index: a raw mask value kept as is (e.g. 255 for "unlabelled").
        mask_kind: ``"auto"`` (decide from the values), ``"classes"`` or ``"instances"``.
        spatial_dims: 2 or 3 to force how files are read.
        num_classes: pins the number of classes (values beyond are problems); ``None``: from the values.
        classes: the user's class names and colours, class 0 first (pins ``num_classes`` too).
        mapping: map the masks with this label mapping instead of deciding one (e.g. the training set's
            for a separate validation set).
        stream: keep nothing in memory: each sample's image and mask are views of the files that read
            (and map) only the regions sliced (:mod:`unetkit.data.streamed`; a dataset larger than memory).

    Returns:
        A :class:`SegmentationDataset`.

    Raises:
        DataError: listing every problem found, one per line.

    Shape:
        Each sample's image is ``(C, *S)`` float32 and its mask ``(*S)`` int64 (streamed: array-likes
        giving those on slicing).

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
        classes=classes,
        mapping=mapping,
        keep_arrays=not stream,
    )
    report.raise_for_problems()
    mapping = report.mapping
    assert mapping is not None  # no problems means the mapping was decided
    samples = []
    for rec in report.records:
        if stream:
            sd = len(rec.shape)
            views = open_sample_files(
                report.root / rec.image_file, report.root / rec.mask_file, mapping, sd, rec.mask_file
            )
            # views, not arrays: they slice like the arrays they stand for (unetkit.data.streamed)
            samples.append(Sample(rec.name, *views, spacing=rec.spacing))  # type: ignore[arg-type]
            continue
        assert rec.image is not None and rec.mask is not None  # kept by keep_arrays=True
        mask, instances = mapping.apply(rec.mask, rec.image.ndim - 1, rec.mask_file)
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
    k = mapping.num_classes
    if not mapping.is_identity:
        log.info("%s: mask values mapped to classes: %s", path, mapping.describe())
    return SegmentationDataset(
        samples=samples,
        num_classes=k,
        classes=Classes.resolve(k, classes, mapping.class_colours, where="classes"),
        label_mapping=mapping,
        in_channels=int(fp.in_channels or 1),
        spatial_dims=int(fp.spatial_dims or 2),
        fingerprint=fp,
        root=report.root,
        report=report,
    )
