"""From raw mask values to class indices: one explicit, reported mapping for a whole dataset.

The mapping is decided from the values found in ALL masks (so every mask maps the same way):

- **colour masks** (``(*S, 3)`` RGB): black is class 0, every other colour a class in sorted order; the
  colours are kept as ``class_colours``.
- **instance masks** (``mask_kind="instances"``, or ``"auto"`` with a 16/32-bit mask holding more than
  ``INSTANCE_MIN_IDS`` ids, or more than ``MAX_AUTO_CLASSES`` distinct values): class 1 where the id is
  non-zero; the ids are kept.
- **class masks**: values already in ``0..num_classes-1`` stay as they are; otherwise the sorted values
  (with 0 always included) become consecutive classes: ``{0, 255} -> {0, 1}``, ``{0, 50, 100} -> {0, 1, 2}``.
  When ``num_classes`` is given and there are more values than classes, only the plausible values are
  mapped (``0, 255`` for 2 classes, else ``0..num_classes-1``) and masks holding others are reported.

An ``ignore_index`` value is never mapped: it stays in the class mask for the loss to skip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from unetkit.errors import ConfigError, DataError

MaskKind = Literal["auto", "classes", "instances"]
INSTANCE_MIN_IDS = 8
MAX_AUTO_CLASSES = 64


def pack_rgb(mask: np.ndarray) -> np.ndarray:
    """Pack an ``(*S, 3)`` colour mask into one int64 per pixel (``r << 16 | g << 8 | b``).

    Example:
        >>> pack_rgb(np.array([[[255, 0, 1]]], np.uint8)).tolist()
        [[16711681]]
    """
    m = mask.astype(np.int64)
    return (m[..., 0] << 16) | (m[..., 1] << 8) | m[..., 2]


def unpack_rgb(value: int) -> tuple[int, int, int]:
    """Inverse of :func:`pack_rgb` for one value."""
    return (int(value) >> 16) & 255, (int(value) >> 8) & 255, int(value) & 255


@dataclass
class MaskValues:
    """What one raw mask holds: its distinct values (RGB packed) with pixel counts."""

    values: np.ndarray
    counts: np.ndarray
    colour: bool
    dtype: np.dtype[Any]

    @classmethod
    def of(cls, raw: np.ndarray, spatial_dims: int) -> MaskValues:
        colour = raw.ndim == spatial_dims + 1 and raw.shape[-1] == 3
        flat = pack_rgb(raw) if colour else raw
        values, counts = np.unique(flat, return_counts=True)
        return cls(values=values, counts=counts, colour=colour, dtype=raw.dtype)


@dataclass
class LabelMapping:
    """How raw mask values become class indices (and instance ids).

    Attributes:
        kind: ``"classes"``, ``"colours"`` or ``"instances"``.
        mapping: raw value -> class index (colours as ``(r, g, b)`` tuples); empty for instances.
        ignore_index: raw value kept as is, or ``None``.
        class_colours: the colour of each class for colour masks, else ``None``.
    """

    kind: Literal["classes", "colours", "instances"]
    mapping: dict[Any, int] = field(default_factory=dict)
    ignore_index: int | None = None
    class_colours: list[tuple[int, int, int]] | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes the mapping produces (class 0 included)."""
        return 2 if self.kind == "instances" else max(self.mapping.values(), default=0) + 1

    @property
    def is_identity(self) -> bool:
        return self.kind == "classes" and all(k == v for k, v in self.mapping.items())

    def describe(self) -> str:
        """One line for the report, e.g. ``classes: 0->0, 255->1``."""
        if self.kind == "instances":
            text = "instances: id > 0 -> class 1 (ids kept)"
        else:
            text = f"{self.kind}: " + ", ".join(f"{_fmt(k)}->{v}" for k, v in self.mapping.items())
        return text + (f"; ignore_index {self.ignore_index} kept" if self.ignore_index is not None else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (keys as strings)."""
        return {
            "kind": self.kind,
            "mapping": {_fmt(k): v for k, v in self.mapping.items()},
            "ignore_index": self.ignore_index,
        }

    def apply(self, raw: np.ndarray, spatial_dims: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Map one raw mask.

        Returns:
            ``(mask, instances)``: int64 class indices and int32 instance ids (``None`` unless instances).

        Shape:
            ``raw`` is ``(*S)`` or ``(*S, 3)``; both outputs are ``(*S)``.
        """
        colour = raw.ndim == spatial_dims + 1
        flat = pack_rgb(raw) if colour else raw
        ignore = (flat == self.ignore_index) if self.ignore_index is not None and not colour else None
        if self.kind == "instances":
            ids = flat.astype(np.int64)
            if ignore is not None:
                ids[ignore] = 0
            mask = (ids > 0).astype(np.int64)
            if ignore is not None:
                mask[ignore] = int(self.ignore_index)  # type: ignore[arg-type]
            return mask, ids.astype(np.int32)
        keys = [pack_rgb(np.array(k, np.int64)) if colour else k for k in self.mapping]
        if self.is_identity:
            return flat.astype(np.int64), None
        values = np.array(keys, dtype=np.float64 if flat.dtype.kind == "f" else np.int64)
        order = np.argsort(values)
        classes = np.array(list(self.mapping.values()), np.int64)[order]
        values = values[order]
        idx = np.clip(np.searchsorted(values, flat), 0, len(values) - 1)
        mask = classes[idx]
        unknown = values[idx] != flat
        if ignore is not None:
            mask[ignore] = int(self.ignore_index)  # type: ignore[arg-type]
            unknown &= ~ignore
        if unknown.any():
            bad = np.unique(flat[unknown])[:5].tolist()
            raise DataError(f"mask values {bad} are not in the dataset's label mapping ({self.describe()})")
        return mask, None


def _fmt(v: Any) -> str:
    if isinstance(v, tuple):
        return "rgb(" + ",".join(str(c) for c in v) + ")"
    return str(int(v)) if float(v).is_integer() else str(v)


def infer_mapping(
    masks: list[MaskValues],
    *,
    mask_kind: MaskKind = "auto",
    ignore_index: int | None = None,
    num_classes: int | None = None,
) -> LabelMapping:
    """Decide one :class:`LabelMapping` from the distinct values of every mask in a dataset.

    Example:
        >>> mv = MaskValues(np.array([0, 255]), np.array([3, 1]), False, np.dtype(np.uint8))
        >>> infer_mapping([mv]).describe()
        'classes: 0->0, 255->1'
        >>> infer_mapping([mv], ignore_index=255).describe()
        'classes: 0->0; ignore_index 255 kept'
    """
    if mask_kind not in ("auto", "classes", "instances"):
        raise ConfigError(f"mask_kind={mask_kind!r}; expected 'auto', 'classes' or 'instances'")
    if any(m.colour for m in masks):
        if mask_kind == "instances":
            raise DataError("colour (RGB) masks cannot be instance masks; fix: use mask_kind='auto' or 'classes'")
        packed = sorted({int(v) for m in masks if m.colour for v in m.values} | {0})
        colours = [unpack_rgb(v) for v in packed]
        return LabelMapping("colours", {c: i for i, c in enumerate(colours)}, class_colours=colours)
    union = np.unique(np.concatenate([m.values for m in masks])) if masks else np.zeros(0)
    if ignore_index is not None:
        union = union[union != ignore_index]
    if union.dtype.kind == "f" and not np.all(np.isfinite(union) & (union == np.round(union))):
        raise DataError("masks hold non-integer values; fix: masks must hold class indices or instance ids")
    if mask_kind == "instances" or (mask_kind == "auto" and _looks_like_instances(masks, ignore_index, union)):
        return LabelMapping("instances", ignore_index=ignore_index)
    values = [int(v) for v in union]
    keys = sorted(set(values) | {0})
    if num_classes is not None:
        if all(0 <= v < num_classes for v in values):
            return LabelMapping("classes", {v: v for v in values}, ignore_index=ignore_index)
        if len(keys) > num_classes:
            # too many values for num_classes: keep the plausible ones, leave the rest unmapped so the
            # check names the masks holding them
            plausible = (
                {0: 0, 255: 1} if num_classes == 2 and 255 in values else {v: v for v in keys if v < num_classes}
            )
            return LabelMapping("classes", plausible, ignore_index=ignore_index)
    return LabelMapping("classes", {v: i for i, v in enumerate(keys)}, ignore_index=ignore_index)


def _looks_like_instances(masks: list[MaskValues], ignore_index: int | None, union: np.ndarray) -> bool:
    if len(union) > MAX_AUTO_CLASSES:
        return True
    for m in masks:
        if m.dtype.itemsize >= 2 and m.dtype.kind in "iu":
            ids = m.values[(m.values != 0) & (m.values != (ignore_index if ignore_index is not None else 0))]
            if len(ids) > INSTANCE_MIN_IDS:
                return True
    return False
