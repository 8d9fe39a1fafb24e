"""Check a dataset before any work: read every file once, report ALL problems together, fingerprint it.

Problems found: unreadable, truncated or empty files; images without masks and masks without images;
image/mask size mismatches; NaN/Inf in images; non-integer mask values; mask values that are no class of
the set's :class:`~unetkit.data.masks.LabelMapping` (beyond the pinned classes, or stray values), each
with its pixel count; dtype, channel count or dimensionality differing from the rest of the set; a mix of
colour and grey masks. Each is a :class:`~unetkit.data.pairs.Problem`: file, problem, how to fix it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.classes import ClassSpec, pinned_num_classes
from unetkit.data.fingerprint import (
    Fingerprint,
    IntensityStats,
    dataset_digest,
    file_sha256,
    file_size,
    summarise_sizes,
)
from unetkit.data.io import read_image, read_mask
from unetkit.data.masks import PIN_FIX, STRAY_FRACTION, LabelMapping, MaskKind, MaskValues, infer_mapping, values_text
from unetkit.data.pairs import Pair, Problem, find_pairs
from unetkit.errors import DataError

log = logging.getLogger(__name__)

_READ_FIX = "re-export the file or remove it from the dataset"


@dataclass
class Record:
    """What the scan learnt about one image/mask pair (arrays only when kept for loading)."""

    name: str
    image_file: str
    mask_file: str
    dtype: str
    channels: int
    shape: tuple[int, ...]
    spacing: tuple[float, ...] | None
    values: MaskValues
    image: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass
class CheckReport:
    """The outcome of :func:`check_dataset`.

    Attributes:
        problems: every problem found, one per file and kind.
        fingerprint: the dataset's :class:`~unetkit.data.fingerprint.Fingerprint` (over the readable pairs).
        mapping: the raw mask value -> class :class:`~unetkit.data.masks.LabelMapping`, ``None`` if undecidable.
        root: the folder that file names are relative to.
    """

    problems: list[Problem]
    fingerprint: Fingerprint
    mapping: LabelMapping | None
    root: Path
    records: list[Record] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def lines(self) -> list[str]:
        """One line per problem: ``file: problem (fix: ...)``."""
        return [str(p) for p in self.problems]

    def raise_for_problems(self) -> None:
        """Raise :class:`~unetkit.errors.DataError` listing every problem, one per line."""
        if self.problems:
            n = len(self.problems)
            raise DataError(
                f"dataset {self.root} has {n} problem{'s' * (n != 1)} (run `unetkit check {self.root}`):\n  "
                + "\n  ".join(self.lines())
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for ``unetkit check --json``."""
        return {
            "root": str(self.root),
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
            "fingerprint": self.fingerprint.to_dict(),
            "label_mapping": self.mapping.to_dict() if self.mapping else None,
        }


def check_dataset(
    path: str | Path,
    num_classes: int | None = None,
    *,
    ignore_index: int | None = None,
    mask_kind: MaskKind = "auto",
    spatial_dims: int | None = None,
    classes: Sequence[ClassSpec] | None = None,
    mapping: LabelMapping | None = None,
    keep_arrays: bool = False,
) -> CheckReport:
    """Read every pair of a dataset and report all problems with a fingerprint.

    Args:
        path: a folder with ``images/`` and ``masks/``, or a CSV/YAML list of pairs.
        num_classes: pins the number of classes: mask values beyond them are problems (see
            :mod:`unetkit.data.masks`); ``None`` decides it from the values, stray values reported.
        ignore_index: a raw mask value to keep as is (never a class).
        mask_kind: ``"auto"``, ``"classes"`` or ``"instances"`` (see :mod:`unetkit.data.masks`).
        spatial_dims: 2 or 3 to force how files are read, ``None`` to decide per file.
        classes: the user's classes (class 0 first); they pin ``num_classes`` to their number, and their
            colours, when every class has one, are the classes of colour masks.
        mapping: use this label mapping (e.g. a training set's, for its validation set) instead of
            deciding one; mask values it does not map are problems.
        keep_arrays: keep the arrays read on each record (used by :func:`~unetkit.data.datasets.load_dataset`).

    Returns:
        A :class:`CheckReport`; call ``.raise_for_problems()`` to stop on any problem.

    Raises:
        ConfigError: ``classes`` and ``num_classes`` disagree.
    """
    num_classes = pinned_num_classes(num_classes, classes)
    pairs, problems, root = find_pairs(path)
    records: list[Record] = []
    stats = IntensityStats()
    entries: list[tuple[str, int, str]] = []
    for i, pair in enumerate(pairs):
        for f in (pair.image, pair.mask):
            if f is not None and f.exists():
                entries.append((_rel(f, root), file_size(f), file_sha256(f)))
        rec = _scan_pair(pair, root, spatial_dims, problems, stats, seed=i)
        if rec is not None:
            records.append(rec if keep_arrays else _drop_arrays(rec))
    if not pairs:
        problems.append(Problem(str(path), "dataset holds no image/mask pairs", "add images and masks"))
    _check_consistency(records, problems)
    pinned = mapping is not None or num_classes is not None
    if mapping is None:
        try:
            mapping = infer_mapping(
                [r.values for r in records],
                mask_kind=mask_kind,
                ignore_index=ignore_index,
                num_classes=num_classes,
                colours=[c.colour for c in classes] if classes is not None else None,
            )
        except DataError as exc:
            problems.append(Problem.from_error(exc, "masks", "fix the masks"))
    if mapping is not None:
        _check_labels(records, mapping, pinned, num_classes, problems)
    fp = _fingerprint(records, stats, mapping, dataset_digest(entries))
    return CheckReport(problems=problems, fingerprint=fp, mapping=mapping, root=root, records=records)


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _scan_pair(
    pair: Pair, root: Path, spatial_dims: int | None, problems: list[Problem], stats: IntensityStats, seed: int
) -> Record | None:
    if pair.image is None or pair.mask is None:
        return None
    img_file, msk_file = _rel(pair.image, root), _rel(pair.mask, root)
    image = raw = None
    try:
        image = read_image(pair.image, spatial_dims)
    except DataError as exc:
        problems.append(Problem.from_error(exc, img_file, _READ_FIX, pair.image))
    try:
        raw = read_mask(pair.mask, image.spatial_dims if image is not None else spatial_dims)
    except DataError as exc:
        problems.append(Problem.from_error(exc, msk_file, _READ_FIX, pair.mask))
    if image is None or raw is None:
        return None
    sd = image.spatial_dims
    if raw.shape[:sd] != image.array.shape[1:] or raw.ndim not in (sd, sd + 1):
        problems.append(
            Problem(
                msk_file,
                f"mask size {raw.shape[:sd] if raw.ndim >= sd else raw.shape} differs from image size "
                f"{image.array.shape[1:]} ({img_file})",
                "export the mask at the image's size",
            )
        )
        return None
    if (bad := Problem.nonfinite(img_file, image.array)) is not None:
        problems.append(bad)
    if raw.dtype.kind == "f" and not (np.isfinite(raw).all() and (raw == np.round(raw)).all()):
        problems.append(
            Problem(msk_file, "mask holds non-integer or NaN/Inf values", "save masks as integer class indices")
        )
        return None
    if raw.dtype.kind not in "biuf":
        problems.append(Problem(msk_file, f"mask dtype {raw.dtype} is not numeric", "save integer class indices"))
        return None
    stats.add(image.array, seed=seed)
    return Record(
        name=pair.name,
        image_file=img_file,
        mask_file=msk_file,
        dtype=str(image.array.dtype),
        channels=image.array.shape[0],
        shape=tuple(image.array.shape[1:]),
        spacing=image.spacing,
        values=MaskValues.of(raw, sd, msk_file),
        image=image.array,
        mask=raw,
    )


def _drop_arrays(rec: Record) -> Record:
    rec.image = rec.mask = None
    return rec


def _check_consistency(records: list[Record], problems: list[Problem]) -> None:
    checks = (
        ("dimensionality", lambda r: f"{len(r.shape)}D", "images"),
        ("channel count", lambda r: str(r.channels), "images"),
        ("dtype", lambda r: r.dtype, "images"),
        ("mask type", lambda r: "colour" if r.values.colour else "single-channel", "masks"),
    )
    for what, key, kind in checks:
        counts = Counter(key(r) for r in records)
        if len(counts) <= 1:
            continue
        majority = counts.most_common(1)[0][0]
        for r in records:
            if key(r) != majority:
                problems.append(
                    Problem(
                        r.mask_file if kind == "masks" else r.image_file,
                        f"{what} {key(r)} differs from the rest of the {kind} ({majority})",
                        f"convert it to {majority} like the others, or remove it",
                    )
                )


def _check_labels(
    records: list[Record], mapping: LabelMapping, pinned: bool, num_classes: int | None, problems: list[Problem]
) -> None:
    """One problem per mask holding values that are no class of ``mapping``, with their pixel counts; one for
    masks that hold a single class (nothing to tell apart)."""
    if records and mapping.num_classes < 2:
        problems.append(
            Problem(
                "masks",
                f"every mask holds one class only ({mapping.describe()}): a segmentation learns to tell at least "
                "two apart",
                "paint the objects in the masks (any value other than the background's)",
            )
        )
        return
    if mapping.kind == "instances" and num_classes is not None and num_classes != 2:
        problems.append(
            Problem("masks", f"instance masks give 2 classes, not num_classes={num_classes}", "use 2 classes")
        )
        return
    # masks of the other kind (colour among grey) are reported by the consistency check already
    found = [(r, mapping.unmapped(r.values)) for r in records if r.values.colour == (mapping.kind == "colours")]
    found = [(r, bad) for r, bad in found if bad]
    if pinned:
        for r, bad in found:
            problems.append(
                Problem(
                    r.mask_file,
                    f"values {values_text(bad)} are outside the {mapping.num_classes} classes ({mapping.describe()})",
                    "fix the mask, pass the right --num-classes / data.num_classes, or set --ignore-index "
                    "for an unlabelled value",
                )
            )
        return
    totals: dict[Any, int] = {}
    for _, bad in found:
        for v, n in bad:
            totals[v] = totals.get(v, 0) + n
    for r, bad in found:
        problems.append(
            Problem(
                r.mask_file,
                f"stray values {values_text(bad)}: too rare to be classes (under {STRAY_FRACTION:.1%} of the "
                f"pixels; {values_text(list(totals.items()))} in {len(found)} mask(s) of the set), left out of "
                f"the mapping {mapping.describe()}",
                f"repaint those pixels with class values, or {PIN_FIX} if they are real classes",
            )
        )


def _fingerprint(
    records: list[Record], stats: IntensityStats, mapping: LabelMapping | None, digest: str
) -> Fingerprint:
    fp = Fingerprint(num_samples=len(records), digest=digest)
    if not records:
        return fp
    fp.spatial_dims = Counter(len(r.shape) for r in records).most_common(1)[0][0]
    fp.in_channels = Counter(r.channels for r in records).most_common(1)[0][0]
    fp.image_dtype = Counter(r.dtype for r in records).most_common(1)[0][0]
    sizes = summarise_sizes([r.shape for r in records if len(r.shape) == fp.spatial_dims])
    if sizes is not None:
        fp.size_min, fp.size_median, fp.size_max = sizes
    spacings = [r.spacing for r in records if r.spacing is not None and len(r.spacing) == fp.spatial_dims]
    if spacings:
        fp.spacing_median = [float(x) for x in np.median(np.array(spacings), axis=0)]
    fp.intensity = stats.result()
    if mapping is not None:
        fp.label_mapping = mapping.describe()
        fp.mask_kind = mapping.kind
        fp.class_counts, fp.ignored_voxels = mapping.class_counts([r.values for r in records])
    return fp
