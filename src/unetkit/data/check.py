"""Check a dataset before any work: read every file once, report ALL problems together, fingerprint it.

Problems found: unreadable, truncated or empty files; images without masks and masks without images;
image/mask size mismatches; NaN/Inf in images; non-integer mask values; labels outside ``num_classes``;
dtype, channel count or dimensionality differing from the rest of the set; a mix of colour and grey masks.
Each is one line: file, problem, how to fix it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.fingerprint import (
    Fingerprint,
    IntensityStats,
    dataset_digest,
    file_sha256,
    file_size,
    summarise_sizes,
)
from unetkit.data.io import read_image, read_mask
from unetkit.data.masks import LabelMapping, MaskKind, MaskValues, infer_mapping, unpack_rgb
from unetkit.data.pairs import Pair, Problem, find_pairs
from unetkit.errors import DataError

log = logging.getLogger(__name__)


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
            "problems": [{"file": p.file, "problem": p.problem, "fix": p.fix} for p in self.problems],
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
    keep_arrays: bool = False,
) -> CheckReport:
    """Read every pair of a dataset and report all problems with a fingerprint.

    Args:
        path: a folder with ``images/`` and ``masks/``, or a CSV/YAML list of pairs.
        num_classes: when given, mask labels (after mapping) must lie in ``0..num_classes-1``.
        ignore_index: a raw mask value to keep as is (never a class).
        mask_kind: ``"auto"``, ``"classes"`` or ``"instances"`` (see :mod:`unetkit.data.masks`).
        spatial_dims: 2 or 3 to force how files are read, ``None`` to decide per file.
        keep_arrays: keep the arrays read on each record (used by :func:`~unetkit.data.datasets.load_dataset`).

    Returns:
        A :class:`CheckReport`; call ``.raise_for_problems()`` to stop on any problem.
    """
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
    mapping = None
    try:
        mapping = infer_mapping(
            [r.values for r in records], mask_kind=mask_kind, ignore_index=ignore_index, num_classes=num_classes
        )
    except DataError as exc:
        problems.append(Problem("masks", str(exc).split("; fix: ")[0], _fix_of(str(exc), "fix the masks")))
    if mapping is not None and num_classes is not None:
        _check_labels(records, mapping, num_classes, problems)
    fp = _fingerprint(records, stats, mapping, dataset_digest(entries))
    return CheckReport(problems=problems, fingerprint=fp, mapping=mapping, root=root, records=records)


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _fix_of(message: str, default: str) -> str:
    return message.split("; fix: ", 1)[1] if "; fix: " in message else default


def _problem_from_error(exc: DataError, file: str) -> Problem:
    """Split a reader's ``"<path>: <problem>; fix: <fix>"`` message into a :class:`Problem`."""
    text = str(exc)
    head = text.split("; fix: ", 1)[0]
    head = head.split(": ", 1)[1] if ": " in head and not head.startswith(" ") else head
    return Problem(file, head, _fix_of(text, "re-export the file or remove it from the dataset"))


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
        problems.append(_problem_from_error(exc, img_file))
    try:
        raw = read_mask(pair.mask, image.spatial_dims if image is not None else spatial_dims)
    except DataError as exc:
        problems.append(_problem_from_error(exc, msk_file))
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
    if image.array.dtype.kind in "fc" and not np.isfinite(image.array).all():
        n = int((~np.isfinite(image.array)).sum())
        problems.append(Problem(img_file, f"image holds {n} NaN/Inf values", "replace them (e.g. with 0) and re-save"))
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
        values=MaskValues.of(raw, sd),
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


def _check_labels(records: list[Record], mapping: LabelMapping, num_classes: int, problems: list[Problem]) -> None:
    if mapping.kind == "instances":
        if num_classes < 2:
            problems.append(Problem("masks", "instance masks give 2 classes", f"use num_classes=2, not {num_classes}"))
        return
    for r in records:
        keys = r.values.values
        if mapping.kind == "colours":
            continue  # colours define the classes; a count mismatch is reported once below
        bad = [
            v for v in keys.tolist() if v != mapping.ignore_index and not 0 <= mapping.mapping.get(v, -1) < num_classes
        ]
        if bad:
            problems.append(
                Problem(
                    r.mask_file,
                    f"labels {_short(bad)} outside the {num_classes} classes 0..{num_classes - 1}",
                    "fix the mask, pass the right --num-classes, or set --ignore-index for an unlabelled value",
                )
            )
    if mapping.kind == "colours" and mapping.num_classes > num_classes:
        problems.append(
            Problem(
                "masks",
                f"colour masks hold {mapping.num_classes} colours (classes) but num_classes={num_classes}",
                "recolour the masks or pass the right --num-classes",
            )
        )


def _short(values: list[Any]) -> str:
    shown = ", ".join(str(v) for v in values[:6])
    return "{" + shown + (", ..." if len(values) > 6 else "") + "}"


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
        fp.class_counts, fp.ignored_voxels = _class_counts(records, mapping)
    return fp


def _class_counts(records: list[Record], mapping: LabelMapping) -> tuple[list[int], int]:
    counts = np.zeros(mapping.num_classes, np.int64)
    ignored = 0
    for r in records:
        for v, n in zip(r.values.values.tolist(), r.values.counts.tolist(), strict=True):
            if mapping.ignore_index is not None and v == mapping.ignore_index and not r.values.colour:
                ignored += n
                continue
            if mapping.kind == "instances":
                cls = int(v > 0)
            elif mapping.kind == "colours":
                cls = mapping.mapping.get(unpack_rgb(v), -1)
            else:
                cls = mapping.mapping.get(v, -1)
            if 0 <= cls < len(counts):
                counts[cls] += n
    return counts.tolist(), ignored
