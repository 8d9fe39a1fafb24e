"""Reading predictions and truths for evaluation: pairing by stem, and mask values -> classes by THE rule.

Truth masks are mapped to classes with one :class:`~unetkit.data.masks.LabelMapping` for the whole truth
set, the same rule training uses (:mod:`unetkit.data.masks`): the model file's mapping when evaluating a
model, else one mapping inferred once over all truths by :func:`~unetkit.data.masks.infer_mapping`. A
truth holding a value the mapping does not map (a stray value, or one beyond the pinned classes) is an
error naming the files and pixel counts.

Predictions may be:

- probabilities: a float file ``(K, *spatial)`` (``K >= 2``) is arg-maxed and kept for CRF refinement;
  a single float channel is a foreground probability, thresholded at 0.5;
- class indices ``0..K-1``, as ``unetkit predict`` writes them;
- masks in the truths' own encoding (e.g. 0/255, colours, instance ids): mapped with the truths' mapping.

An integer prediction whose values all lie in ``0..K-1`` is read as class indices, any other with the
truths' mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetkit.data.masks import STRAY_FRACTION, LabelMapping, MaskValues, infer_mapping, values_text
from unetkit.errors import DataError

__all__ = ["Labels", "pair_files", "read_prediction", "read_truths"]


def _listing(folder: Path, what: str) -> dict[str, Path]:
    from unetkit.data.io import is_image_file, strip_suffix

    if not folder.is_dir():
        raise DataError(f"the {what} folder does not exist", file=folder, fix="give a folder of image files")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if is_image_file(p):
            key = strip_suffix(p.name)
            if key in files:
                raise DataError(
                    f"two {what} files share the stem {key!r} ({files[key].name}, {p.name})",
                    file=folder,
                    fix="keep one file per stem",
                )
            files[key] = p
    return files


def pair_files(
    pred_dir: Path, truth_dir: Path, image_dir: Path | None = None
) -> list[tuple[str, Path, Path, Path | None]]:
    """``(stem, prediction, truth, image or None)`` for every stem found in both folders, sorted by stem.

    Raises:
        DataError: no stem in common (the message lists a few of each side).
    """
    preds = _listing(Path(pred_dir), "prediction")
    truths = _listing(Path(truth_dir), "truth")
    images = _listing(Path(image_dir), "image") if image_dir is not None else {}
    common = sorted(preds.keys() & truths.keys())
    if not common:
        raise DataError(
            f"no file of {pred_dir} pairs with one of {truth_dir} by stem (e.g. {sorted(preds)[:3]} vs "
            f"{sorted(truths)[:3]})",
            fix="predictions and truths must share file names up to the suffix",
        )
    return [(k, preds[k], truths[k], images.get(k)) for k in common]


@dataclass
class Labels:
    """A read prediction or truth: class labels, instance ids (or None), probabilities (or None), spacing."""

    classes: np.ndarray
    instances: np.ndarray | None
    probs: np.ndarray | None
    spacing: tuple[float, ...] | None


def _read_raw(path: Path, spatial_dims: int | None) -> tuple[np.ndarray, int, tuple[float, ...] | None]:
    """A file's raw values ``(*S)`` or ``(*S, 3)`` as :func:`~unetkit.data.io.read_mask` gives them, or a float
    array ``(C, *S)``; with its spatial dims and spacing."""
    from unetkit.data.io import read_image, read_mask

    img = read_image(path, spatial_dims=spatial_dims)
    arr = img.array
    if arr.dtype.kind == "f" or arr.shape[0] == 1:
        return (arr if arr.dtype.kind == "f" else arr[0]), img.spatial_dims, img.spacing
    return read_mask(path, spatial_dims=img.spatial_dims), img.spatial_dims, img.spacing


def read_truths(
    paths: Sequence[Path],
    *,
    mapping: LabelMapping | None = None,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    colours: Sequence[Sequence[int] | None] | None = None,
) -> tuple[LabelMapping, list[Labels]]:
    """Read a set of truth masks and map them to classes with one mapping.

    Args:
        paths: the truth files.
        mapping: the mapping to use (a model file's); ``None``: inferred once over all ``paths`` with
            :func:`~unetkit.data.masks.infer_mapping`, as training does.
        num_classes: pins the number of classes when the mapping is inferred.
        ignore_index: a raw truth value that is no class (kept as is in the class masks); overrides the
            mapping's own.
        colours: the user's class colours (colour masks follow them when every class has one).

    Returns:
        ``(mapping, labels)``: the mapping used and one :class:`Labels` per path.

    Raises:
        DataError: truths holding values the mapping does not map, naming the files and pixel counts.
    """
    raws = []
    for path in paths:
        raw, sd, spacing = _read_raw(Path(path), None)
        if raw.dtype.kind == "f" and raw.ndim == sd + 1:
            raw = raw[0] if raw.shape[0] == 1 else raw
            if raw.ndim == sd + 1:
                raise DataError(
                    f"a float truth with {raw.shape[0]} channels",
                    file=path,
                    fix="truth masks hold one integer label per pixel",
                )
        raws.append((Path(path), raw, sd, spacing))
    values = [MaskValues.of(raw, sd, str(path)) for path, raw, sd, _ in raws]
    pinned = mapping is not None or num_classes is not None
    if mapping is None:
        try:
            mapping = infer_mapping(values, ignore_index=ignore_index, num_classes=num_classes, colours=colours)
        except DataError as exc:
            raise DataError(exc.problem, file=exc.file or _folder_of(paths), fix=exc.fix) from None
    elif ignore_index is not None and ignore_index != mapping.ignore_index:
        mapping = LabelMapping(mapping.kind, dict(mapping.mapping), mapping.num_classes, ignore_index)
    _check_truths(values, mapping, pinned)
    labels = []
    for path, raw, sd, spacing in raws:
        classes, instances = mapping.apply(raw, sd, str(path))
        labels.append(Labels(classes, instances, None, spacing))
    return mapping, labels


def _folder_of(paths: Sequence[Path]) -> str:
    parents = {str(Path(p).parent) for p in paths}
    return parents.pop() if len(parents) == 1 else "truth masks"


def _check_truths(values: Sequence[MaskValues], mapping: LabelMapping, pinned: bool) -> None:
    found = [(m.file, mapping.unmapped(m)) for m in values]
    found = [(f, bad) for f, bad in found if bad]
    if not found:
        return
    listed = "; ".join(f"{f}: {values_text(bad)}" for f, bad in found[:5]) + ("; ..." if len(found) > 5 else "")
    if pinned:
        problem = f"truth values outside the {mapping.num_classes} classes ({mapping.describe()}): {listed}"
        fix = "fix the masks, pass the right --num-classes, or --ignore-index for an unlabelled value"
    else:
        problem = (
            f"stray truth values, too rare to be classes (under {STRAY_FRACTION:.1%} of the truth pixels; "
            f"classes: {mapping.describe()}): {listed}"
        )
        fix = "repaint those pixels, or pin the classes with --num-classes (or --classes) if they are real classes"
    raise DataError(problem, file=found[0][0] if len(found) == 1 else None, fix=fix)


def read_prediction(path: Path, mapping: LabelMapping, num_classes: int, *, spatial_dims: int | None = None) -> Labels:
    """Read a prediction: probabilities, class indices ``0..num_classes-1``, or a mask in the truths' encoding.

    Args:
        path: the file.
        mapping: the truths' mapping (used for integer predictions that are not class indices).
        num_classes: the evaluation's classes ``K``.
        spatial_dims: the truth's, so both are read alike.

    Raises:
        DataError: more probability channels than classes, or values that are neither class indices nor
            values of the mapping (naming the file).
    """
    raw, sd, spacing = _read_raw(Path(path), spatial_dims)
    if raw.dtype.kind == "f":
        probs = np.concatenate([1 - raw, raw]) if raw.shape[0] == 1 else raw
        if probs.shape[0] > num_classes:
            raise DataError(
                f"{probs.shape[0]} probability channels for {num_classes} classes",
                file=path,
                fix=f"pass --num-classes {probs.shape[0]} if the truths lack some classes",
            )
        probs = probs.astype(np.float32)
        return Labels(probs.argmax(0).astype(np.int64), None, probs, spacing)
    if raw.ndim == sd and raw.size and int(raw.min()) >= 0 and int(raw.max()) < num_classes:
        return Labels(raw.astype(np.int64), None, None, spacing)
    try:
        classes, instances = mapping.apply(raw, sd, str(path))
    except DataError as exc:
        raise DataError(
            f"prediction values are neither class indices 0..{num_classes - 1} nor truth values: {exc.problem}",
            file=path,
            fix="save predictions as class indices (as `unetkit predict` does) or in the truths' encoding",
        ) from None
    return Labels(classes, instances, None, spacing)
