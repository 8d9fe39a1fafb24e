"""Reading predictions and truths for evaluation: pairing by stem and turning raw mask values into classes.

Mask rule (documented in docs/evaluation.md):

- a mask whose values (``ignore_index`` aside) are within ``{0, 255}`` is binary: 255 -> class 1;
- an integer mask with a wide dtype (16 bits or more) and more than two distinct ids, in a problem that is
  binary (``num_classes`` None or 2), is an *instance* mask: classes are ``ids > 0`` and the ids are kept
  for the instance metrics;
- an RGB mask maps the colours of :func:`unetkit.viz.palette.palette` to their class index;
- anything else is read as class indices as they are.

Predictions may also be probabilities: a float file ``(K, *spatial)`` (``K >= 2``) is arg-maxed and kept
for CRF refinement; a single float channel is a foreground probability, thresholded at 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetkit.errors import DataError

__all__ = ["Labels", "pair_files", "read_labels", "to_classes"]


def _listing(folder: Path, what: str) -> dict[str, Path]:
    from unetkit.data.io import is_image_file, strip_suffix

    if not folder.is_dir():
        raise DataError(f"{folder}: the {what} folder does not exist; give a folder of image files")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if is_image_file(p):
            key = strip_suffix(p.name)
            if key in files:
                raise DataError(f"{folder}: two {what} files share the stem {key!r} ({files[key].name}, {p.name})")
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
            f"{sorted(truths)[:3]}); predictions and truths must share file names up to the suffix"
        )
    return [(k, preds[k], truths[k], images.get(k)) for k in common]


def to_classes(
    raw: np.ndarray, num_classes: int | None = None, ignore_index: int | None = None, path: Path | str = "mask"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Map raw mask values to class indices by the module's rule; returns ``(classes, instance_ids or None)``.

    >>> to_classes(np.array([[0, 255]]))[0].tolist()
    [[0, 1]]
    >>> cls, ids = to_classes(np.array([[0, 3, 7]], np.uint16))
    >>> cls.tolist(), ids.tolist()
    ([[0, 1, 1]], [[0, 3, 7]])
    """
    if raw.ndim >= 3 and raw.shape[-1] == 3 and raw.dtype == np.uint8 and _looks_rgb(raw):
        return _from_colours(raw, num_classes, path), None
    if raw.dtype.kind not in "iub":
        raise DataError(f"{path}: mask values are {raw.dtype}; masks must hold integer class or instance ids")
    arr = raw.astype(np.int64)
    valid = arr != ignore_index if ignore_index is not None else np.ones(arr.shape, bool)
    values = np.unique(arr[valid])
    if values.size and set(values.tolist()) <= {0, 255} and (num_classes is None or num_classes <= 2):
        return np.where(valid, arr // 255, arr), None
    binary_problem = num_classes is None or num_classes == 2
    if binary_problem and raw.dtype.itemsize >= 2 and raw.dtype.kind != "b" and values.size > 2 and values.min() >= 0:
        return np.where(valid, (arr > 0).astype(np.int64), arr), np.where(valid, arr, 0)
    if values.size and values.min() < 0:
        raise DataError(f"{path}: mask has negative values; class labels must be 0, 1, ... (or set --ignore-index)")
    if num_classes is not None and values.size and values.max() >= num_classes:
        raise DataError(
            f"{path}: mask value {int(values.max())} is not a class of {num_classes}; pass the right "
            f"--num-classes, or --ignore-index {int(values.max())} if it marks unlabelled pixels"
        )
    return arr, None


def _looks_rgb(raw: np.ndarray) -> bool:
    return not bool((raw[..., 0] == raw[..., 1]).all() and (raw[..., 1] == raw[..., 2]).all())


def _from_colours(raw: np.ndarray, num_classes: int | None, path: Path | str) -> np.ndarray:
    from unetkit.viz.palette import palette

    colours = np.array(palette(max(num_classes or 0, 32)), np.int64)
    code = (raw[..., 0].astype(np.int64) << 16) | (raw[..., 1].astype(np.int64) << 8) | raw[..., 2]
    keys = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    lookup = {int(k): i for i, k in enumerate(keys)}
    found = np.unique(code)
    unknown = [int(c) for c in found if int(c) not in lookup]
    if unknown:
        c = unknown[0]
        raise DataError(
            f"{path}: colour {(c >> 16, (c >> 8) & 255, c & 255)} is not a unetkit palette colour; save masks as "
            "class indices, or with the colours of unetkit.viz.palette"
        )
    lut = np.array([lookup[int(c)] for c in found])
    return lut[np.searchsorted(found, code)]


@dataclass
class Labels:
    """A read prediction or truth: class labels, instance ids (or None), probabilities (or None), spacing."""

    classes: np.ndarray
    instances: np.ndarray | None
    probs: np.ndarray | None
    spacing: tuple[float, ...] | None


def read_labels(
    path: Path,
    *,
    spatial_dims: int | None = None,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    allow_probs: bool = False,
) -> Labels:
    """Read a mask (or, with ``allow_probs``, a probability file) as :class:`Labels`."""
    from unetkit.data.io import read_image, read_mask

    img = read_image(path, spatial_dims=spatial_dims)
    arr = img.array
    if arr.dtype.kind == "f":
        if not allow_probs:
            raise DataError(f"{path}: truth masks must hold integer labels, not {arr.dtype} values")
        probs = np.concatenate([1 - arr, arr]) if arr.shape[0] == 1 else arr
        probs = probs.astype(np.float32)
        return Labels(probs.argmax(0).astype(np.int64), None, probs, img.spacing)
    raw = arr[0] if arr.shape[0] == 1 else read_mask(path, spatial_dims=spatial_dims)
    classes, instances = to_classes(raw, num_classes, ignore_index, path)
    return Labels(classes, instances, None, img.spacing)
