"""From raw mask values to class indices: ONE rule, decided once for a whole mask set, used everywhere.

Training, ``unetkit check``, ``unetkit evaluate`` and the model file all use this module: the mapping
is decided by :func:`infer_mapping` from the values found in ALL masks of a set (so every mask maps the
same way), kept as a :class:`LabelMapping` (stored in the model file with :meth:`LabelMapping.to_dict`),
and applied with :meth:`LabelMapping.apply`. Nothing else turns mask values into classes.

The rule:

- **colour masks** (``(*S, 3)`` RGB): black is class 0, every other colour a class in sorted order
  (or, when the user gave a colour for every class, the class of that colour); the colours are kept.
- **instance masks** (``mask_kind="instances"``, or ``"auto"`` with a 16/32-bit mask holding more than
  ``INSTANCE_MIN_IDS`` ids, or more than ``MAX_AUTO_CLASSES`` distinct values, unless ``num_classes`` is
  pinned to something other than 2): class 1 where the id is non-zero; the ids are kept.
- **class masks**: the sorted values (with 0 always included) become consecutive classes, so values
  already in ``0..K-1`` stay as they are and ``{0, 255} -> {0, 1}``, ``{0, 50, 100} -> {0, 1, 2}``.

**Pinning.** With ``num_classes`` given (``--num-classes``, ``data.num_classes`` or ``data.classes``),
the set has exactly that many classes: values in ``0..K-1`` stay as they are; more distinct values than
classes keep only the plausible ones (``0, 255`` for 2 classes, else ``0..K-1``; for colour masks black
and the ``K-1`` most frequent colours) and every mask holding another value is reported.

**Stray values.** Without a pin, a value covering less than ``STRAY_FRACTION`` of the set's pixels
(a few pixels of 128 in a 0/255 set, JPEG or resampling debris) is *not* made a class: it is left out of
the mapping, so ``unetkit check`` names each mask holding it with its pixel count, and training and
evaluation refuse it. The most frequent non-zero value (colour) is never a stray, so a set of tiny objects
keeps its one foreground class. A rare value that is a real class needs a pin.

An ``ignore_index`` value is never mapped: it stays in the class mask for the loss and metrics to skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from unetkit.errors import ConfigError, DataError

MaskKind = Literal["auto", "classes", "instances"]
MappingKind = Literal["classes", "colours", "instances"]
INSTANCE_MIN_IDS = 8
MAX_AUTO_CLASSES = 64
STRAY_FRACTION = 1e-3
"""A value covering less than this share of a mask set's pixels is a stray, not a class (unless pinned)."""

PIN_FIX = "pin the classes with --num-classes / data.num_classes (or name them with --classes / data.classes)"


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
    """What one raw mask holds: its distinct values (RGB packed) with pixel counts, and its file name."""

    values: np.ndarray
    counts: np.ndarray
    colour: bool
    dtype: np.dtype[Any]
    file: str = ""

    @classmethod
    def of(cls, raw: np.ndarray, spatial_dims: int, file: str = "") -> MaskValues:
        colour = raw.ndim == spatial_dims + 1 and raw.shape[-1] == 3
        flat = pack_rgb(raw) if colour else raw
        values, counts = np.unique(flat, return_counts=True)
        return cls(values=values, counts=counts, colour=colour, dtype=raw.dtype, file=file)


@dataclass
class LabelMapping:
    """How raw mask values become class indices (and instance ids).

    Attributes:
        kind: ``"classes"``, ``"colours"`` or ``"instances"``.
        mapping: raw value -> class index (colours as ``(r, g, b)`` tuples); empty for instances.
        num_classes: the classes the mapping produces (class 0 included); by default the largest class + 1.
        ignore_index: raw value kept as is, or ``None``.
    """

    kind: MappingKind
    mapping: dict[Any, int] = field(default_factory=dict)
    num_classes: int = 0
    ignore_index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("classes", "colours", "instances"):
            raise DataError(f"label mapping kind {self.kind!r}; expected 'classes', 'colours' or 'instances'")
        if not self.num_classes:
            self.num_classes = 2 if self.kind == "instances" else max(self.mapping.values(), default=0) + 1
        bad = sorted({v for v in self.mapping.values() if not 0 <= v < self.num_classes})
        if bad:
            raise DataError(f"label mapping gives classes {bad}, outside 0..{self.num_classes - 1}")

    @property
    def is_identity(self) -> bool:
        """True when every value ``0..num_classes-1`` is its own class (and no other value is mapped)."""
        return self.kind == "classes" and self.mapping == {k: k for k in range(self.num_classes)}

    @property
    def class_colours(self) -> list[tuple[int, int, int] | None] | None:
        """For colour masks, each class's colour in the masks (``None`` for a class no colour maps to)."""
        if self.kind != "colours":
            return None
        colours: list[tuple[int, int, int] | None] = [None] * self.num_classes
        for rgb, k in sorted(self.mapping.items(), key=lambda kv: kv[1]):
            if 0 <= k < self.num_classes and colours[k] is None:
                colours[k] = rgb
        return colours

    def describe(self) -> str:
        """One line for the report, e.g. ``classes: 0->0, 255->1``."""
        if self.kind == "instances":
            text = "instances: id > 0 -> class 1 (ids kept)"
        else:
            text = f"{self.kind}: " + ", ".join(f"{_fmt(k)}->{v}" for k, v in self.mapping.items())
        return text + (f"; ignore_index {self.ignore_index} kept" if self.ignore_index is not None else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the model file's ``label_mapping``); :meth:`from_dict` reads it back.

        >>> LabelMapping("classes", {0: 0, 255: 1}).to_dict()
        {'kind': 'classes', 'num_classes': 2, 'mapping': {'0': 0, '255': 1}, 'ignore_index': None}
        """
        return {
            "kind": self.kind,
            "num_classes": self.num_classes,
            "mapping": {_key_text(k): int(v) for k, v in self.mapping.items()},
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelMapping:
        """Inverse of :meth:`to_dict`.

        Raises:
            DataError: a malformed mapping.

        >>> m = LabelMapping("colours", {(0, 0, 0): 0, (255, 0, 0): 1})
        >>> LabelMapping.from_dict(m.to_dict()) == m
        True
        """
        try:
            kind = data["kind"]
            raw = data.get("mapping") or {}
            mapping = {_key_value(k, kind == "colours"): int(v) for k, v in raw.items()}
            ignore = data.get("ignore_index")
            return cls(kind, mapping, int(data.get("num_classes") or 0), None if ignore is None else int(ignore))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(
                f"malformed label mapping {data!r} ({type(exc).__name__}: {exc})",
                fix="give {kind, num_classes, mapping, ignore_index} as written by LabelMapping.to_dict",
            ) from None

    def _keys(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted raw keys (colours packed) and their classes."""
        packed = [int(pack_rgb(np.array(k, np.int64))) if self.kind == "colours" else k for k in self.mapping]
        keys = np.array(packed, dtype=np.float64 if any(isinstance(k, float) for k in packed) else np.int64)
        classes = np.array(list(self.mapping.values()), np.int64)
        order = np.argsort(keys, kind="stable")
        return keys[order], classes[order]

    def classes_of(self, values: np.ndarray) -> np.ndarray:
        """The class of each raw value (colours packed), ``-1`` where the mapping has none.

        ``ignore_index`` gets ``-1`` too (it is no class); instance ids map to 1, 0 to 0.

        >>> LabelMapping("classes", {0: 0, 255: 1}).classes_of(np.array([0, 255, 7])).tolist()
        [0, 1, -1]
        """
        values = np.asarray(values)
        if self.kind == "instances":
            out = np.where(values > 0, 1, np.where(values == 0, 0, -1)).astype(np.int64)
        elif self.is_identity:
            out = np.where((values >= 0) & (values < self.num_classes), values, -1).astype(np.int64)
        else:
            keys, classes = self._keys()
            if keys.size == 0:
                return np.full(values.shape, -1, np.int64)
            idx = np.clip(np.searchsorted(keys, values), 0, len(keys) - 1)
            out = np.where(keys[idx] == values, classes[idx], -1)
        if self.ignore_index is not None and self.kind != "colours":
            out = np.where(values == self.ignore_index, -1, out)
        return out

    def unmapped(self, mask: MaskValues) -> list[tuple[Any, int]]:
        """``(raw value, pixel count)`` of each value of one mask that is no class (``ignore_index`` aside).

        Colours come back as ``(r, g, b)``.
        """
        if mask.colour != (self.kind == "colours"):
            return [(_raw(v, mask.colour), int(n)) for v, n in zip(mask.values, mask.counts, strict=True)]
        classes = self.classes_of(mask.values)
        bad = classes < 0
        if self.ignore_index is not None and not mask.colour:
            bad &= mask.values != self.ignore_index
        return [(_raw(v, mask.colour), int(n)) for v, n in zip(mask.values[bad], mask.counts[bad], strict=True)]

    def class_counts(self, masks: Sequence[MaskValues]) -> tuple[list[int], int]:
        """Pixels per class over ``masks`` and the number of ``ignore_index`` pixels."""
        counts = np.zeros(self.num_classes, np.int64)
        ignored = 0
        for m in masks:
            if m.colour != (self.kind == "colours"):
                continue
            classes = self.classes_of(m.values)
            ok = (classes >= 0) & (classes < self.num_classes)
            np.add.at(counts, classes[ok], m.counts[ok])
            if self.ignore_index is not None and not m.colour:
                ignored += int(m.counts[m.values == self.ignore_index].sum())
        return counts.tolist(), ignored

    def apply(
        self, raw: np.ndarray, spatial_dims: int, file: str | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Map one raw mask.

        Returns:
            ``(mask, instances)``: int64 class indices (``ignore_index`` kept as is) and int32 instance ids
            (``None`` unless instances).

        Raises:
            DataError: the mask holds a value that is no class of the mapping (names ``file``).

        Shape:
            ``raw`` is ``(*S)`` or ``(*S, 3)``; both outputs are ``(*S)``.
        """
        colour = raw.ndim == spatial_dims + 1
        if colour != (self.kind == "colours"):
            what = "a colour" if colour else "a single-channel"
            raise DataError(
                f"{what} mask, but the label mapping is for {'colour' if not colour else 'single-channel'} masks "
                f"({self.describe()})",
                file=file,
                fix="use masks of the same kind as the ones the mapping (or model) was made from",
            )
        flat = pack_rgb(raw) if colour else raw
        ignore = (flat == self.ignore_index) if self.ignore_index is not None and not colour else None
        classes = self.classes_of(flat)
        unknown = classes < 0
        if ignore is not None:
            unknown &= ~ignore
        if unknown.any():
            vals, cnts = np.unique(flat[unknown], return_counts=True)
            bad = [(_raw(v, colour), int(n)) for v, n in zip(vals, cnts, strict=True)]
            raise DataError(
                f"mask values {values_text(bad)} are not classes of the label mapping ({self.describe()})",
                file=file,
                fix=f"repaint those pixels with class values, set an ignore index, or {PIN_FIX}",
            )
        mask = classes
        if ignore is not None:
            mask = np.where(ignore, int(self.ignore_index), mask)  # type: ignore[arg-type]
        if self.kind == "instances":
            ids = flat.astype(np.int64)
            if ignore is not None:
                ids[ignore] = 0
            return mask.astype(np.int64), ids.astype(np.int32)
        return mask.astype(np.int64), None


def _raw(v: Any, colour: bool) -> Any:
    if colour:
        return unpack_rgb(int(v))
    f = float(v)
    return int(f) if f.is_integer() else f


def _fmt(v: Any) -> str:
    if isinstance(v, tuple):
        return "rgb(" + ",".join(str(c) for c in v) + ")"
    return str(int(v)) if float(v).is_integer() else str(v)


def _key_text(v: Any) -> str:
    if isinstance(v, tuple):
        return "#" + "".join(f"{int(c):02x}" for c in v)
    return _fmt(v)


def _key_value(text: str, colour: bool) -> Any:
    if colour:
        h = str(text).lstrip("#")
        if len(h) != 6:
            raise ValueError(f"colour key {text!r} is not #rrggbb")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    f = float(text)
    return int(f) if f.is_integer() else f


def values_text(items: Sequence[tuple[Any, int]], limit: int = 6) -> str:
    """Raw values with pixel counts, for messages: ``{128: 5 px, rgb(1,2,3): 7 px}``."""
    shown = ", ".join(f"{_fmt(v)}: {n} px" for v, n in items[:limit])
    return "{" + shown + (", ..." if len(items) > limit else "") + "}"


def infer_mapping(
    masks: Sequence[MaskValues],
    *,
    mask_kind: MaskKind = "auto",
    ignore_index: int | None = None,
    num_classes: int | None = None,
    colours: Sequence[Sequence[int] | None] | None = None,
) -> LabelMapping:
    """Decide one :class:`LabelMapping` from the distinct values of every mask in a set (see the module).

    Args:
        masks: the values of every mask of the set.
        mask_kind: ``"auto"``, ``"classes"`` or ``"instances"``.
        ignore_index: a raw value that is no class.
        num_classes: pins the number of classes; ``None`` decides it from the values (strays left out).
        colours: the user's colour of each class; for colour masks, when every class has one, the mapping
            follows them.

    Raises:
        ConfigError: a bad ``mask_kind`` or ``num_classes``.
        DataError: masks that cannot be classes (non-integer values; colour instance masks).

    Example:
        >>> mv = MaskValues(np.array([0, 255]), np.array([3, 1]), False, np.dtype(np.uint8))
        >>> infer_mapping([mv]).describe()
        'classes: 0->0, 255->1'
        >>> infer_mapping([mv], ignore_index=255).describe()
        'classes: 0->0; ignore_index 255 kept'
        >>> stray = MaskValues(np.array([0, 128, 255]), np.array([5000, 2, 5000]), False, np.dtype(np.uint8))
        >>> infer_mapping([stray]).describe(), infer_mapping([stray], num_classes=3).describe()
        ('classes: 0->0, 255->1', 'classes: 0->0, 128->1, 255->2')
    """
    if mask_kind not in ("auto", "classes", "instances"):
        raise ConfigError(f"mask_kind={mask_kind!r}; expected 'auto', 'classes' or 'instances'")
    if num_classes is not None and num_classes < 2:
        raise ConfigError(f"num_classes={num_classes}; a mask set has at least 2 classes (class 0 is background)")
    if any(m.colour for m in masks):
        if mask_kind == "instances":
            raise DataError("colour (RGB) masks cannot be instance masks", fix="use mask_kind 'auto' or 'classes'")
        return _colour_mapping([m for m in masks if m.colour], num_classes, colours)
    values, counts = _totals(masks, colour=False)
    keep = values != ignore_index if ignore_index is not None else np.ones(values.shape, bool)
    values, counts = values[keep], counts[keep]
    if values.dtype.kind == "f" and not np.all(np.isfinite(values) & (values == np.round(values))):
        raise DataError("masks hold non-integer values", fix="masks must hold class indices or instance ids")
    pinned_other = num_classes is not None and num_classes != 2
    if mask_kind == "instances" or (
        mask_kind == "auto" and not pinned_other and _looks_like_instances(masks, ignore_index, values)
    ):
        return LabelMapping("instances", num_classes=2, ignore_index=ignore_index)
    ints = [int(v) for v in values]
    if num_classes is not None:
        identity = {k: k for k in range(num_classes)}
        if all(0 <= v < num_classes for v in ints):
            return LabelMapping("classes", identity, num_classes, ignore_index)
        keys = sorted(set(ints) | {0})
        if len(keys) > num_classes:
            # too many values for the pinned classes: keep the plausible ones; check names the masks with others
            plausible = {0: 0, 255: 1} if num_classes == 2 and 255 in ints else identity
            return LabelMapping("classes", plausible, num_classes, ignore_index)
        return LabelMapping("classes", {v: i for i, v in enumerate(keys)}, num_classes, ignore_index)
    kept = [v for v, stray in zip(ints, _strays(values, counts), strict=True) if not stray]
    keys = sorted(set(kept) | {0})
    return LabelMapping("classes", {v: i for i, v in enumerate(keys)}, len(keys), ignore_index)


def _totals(masks: Sequence[MaskValues], colour: bool) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values over ``masks`` and their total pixel counts."""
    chosen = [m for m in masks if m.colour == colour]
    if not chosen:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    values = np.concatenate([m.values for m in chosen])
    counts = np.concatenate([m.counts for m in chosen]).astype(np.int64)
    union, inverse = np.unique(values, return_inverse=True)
    totals = np.zeros(len(union), np.int64)
    np.add.at(totals, inverse.ravel(), counts)
    return union, totals


def _strays(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Which values are strays: under ``STRAY_FRACTION`` of the pixels, not 0, not the commonest non-zero one."""
    stray = counts < STRAY_FRACTION * max(int(counts.sum()), 1)
    stray &= values != 0
    nonzero = np.flatnonzero(values != 0)
    if nonzero.size:
        stray[nonzero[np.argmax(counts[nonzero])]] = False
    return stray


def _colour_mapping(
    masks: Sequence[MaskValues], num_classes: int | None, colours: Sequence[Sequence[int] | None] | None
) -> LabelMapping:
    if colours is not None and all(c is not None for c in colours) and num_classes in (None, len(colours)):
        given = [tuple(int(x) for x in c) for c in colours]  # type: ignore[union-attr]
        if len(set(given)) == len(given):
            return LabelMapping("colours", {c: k for k, c in enumerate(given)}, len(given))  # type: ignore[misc]
    values, counts = _totals(masks, colour=True)
    others = values != 0
    if num_classes is None:
        chosen = values[others & ~_strays(values, counts)]
    else:
        # black and the num_classes - 1 commonest colours; the others are reported by the check
        order = np.lexsort((values[others], -counts[others]))
        chosen = values[others][order][: num_classes - 1]
    rgb = [unpack_rgb(int(v)) for v in [0, *sorted(int(v) for v in chosen)]]
    return LabelMapping("colours", {c: i for i, c in enumerate(rgb)}, num_classes or len(rgb))


def _looks_like_instances(masks: Sequence[MaskValues], ignore_index: int | None, union: np.ndarray) -> bool:
    if len(union) > MAX_AUTO_CLASSES:
        return True
    for m in masks:
        if m.dtype.itemsize >= 2 and m.dtype.kind in "iu":
            ids = m.values[(m.values != 0) & (m.values != (ignore_index if ignore_index is not None else 0))]
            if len(ids) > INSTANCE_MIN_IDS:
                return True
    return False
