"""A post-processing pipeline written as one short string, shared by ``unetkit evaluate`` and prediction.

Syntax: comma-separated steps ``name[:value][@classes]``, applied in order, e.g.
``"crf,remove-islands:50,fill-holes:20@1+2,keep-largest@3"``.

=================  ==========================================================  ==================
step               what                                                        value
=================  ==========================================================  ==================
``remove-islands``  drop components smaller than the value                      size (required)
``fill-holes``      fill enclosed holes up to the value (all without a value)   size (optional)
``keep-largest``    keep the largest component per class                        -
``crf``             mean-field CRF refinement with the image                    iterations (5)
=================  ==========================================================  ==================

Sizes are pixels/voxels, or physical units (µm², mm³, ...) when a ``spacing`` is given. ``@1+2`` restricts a
step to classes 1 and 2 (default: every non-background class). ``crf`` uses the network's probabilities when
they are given and no earlier step changed the labels; otherwise it starts from the current labels with
confidence 0.8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetkit.errors import ConfigError
from unetkit.postprocess.crf import crf_refine
from unetkit.postprocess.islands import fill_holes, keep_largest_component, remove_small_islands

__all__ = ["STEPS", "PostprocessStep", "apply_postprocess", "parse_postprocess"]

STEPS = ("remove-islands", "fill-holes", "keep-largest", "crf")


@dataclass(frozen=True)
class PostprocessStep:
    """One parsed step: ``name``, optional ``value`` and the ``classes`` it applies to (None = all)."""

    name: str
    value: float | None = None
    classes: tuple[int, ...] | None = None

    def __str__(self) -> str:
        out = self.name
        if self.value is not None:
            out += f":{self.value:g}"
        if self.classes is not None:
            out += "@" + "+".join(map(str, self.classes))
        return out


def parse_postprocess(spec: str | None) -> list[PostprocessStep]:
    """Parse a pipeline string (see the module docstring); empty or None gives no steps.

    >>> [str(s) for s in parse_postprocess("remove-islands:50, fill-holes@1+2, crf")]
    ['remove-islands:50', 'fill-holes@1+2', 'crf']
    """
    steps: list[PostprocessStep] = []
    for raw in (spec or "").split(","):
        item = raw.strip()
        if not item:
            continue
        body, _, cls = item.partition("@")
        name, _, value = body.partition(":")
        name = name.strip().lower().replace("_", "-")
        where = f"postprocess step {item!r}"
        if name not in STEPS:
            raise ConfigError(f"{where}: unknown step {name!r}; use one of {', '.join(STEPS)}")
        try:
            val = float(value) if value.strip() else None
            classes = tuple(int(c) for c in cls.split("+")) if cls.strip() else None
        except ValueError as exc:
            raise ConfigError(f"{where}: write it as name[:number][@class+class], e.g. remove-islands:50@1") from exc
        if name == "remove-islands" and val is None:
            raise ConfigError(f"{where}: needs a size, e.g. remove-islands:50")
        if val is not None and val < 0:
            raise ConfigError(f"{where}: the value must be >= 0")
        if name == "crf" and classes is not None:
            raise ConfigError(f"{where}: crf acts on all classes at once; drop the @classes")
        steps.append(PostprocessStep(name, val, classes))
    return steps


def _pseudo_probs(labels: np.ndarray, num_classes: int, confidence: float = 0.8) -> np.ndarray:
    probs = np.full((num_classes, *labels.shape), (1 - confidence) / max(num_classes - 1, 1), np.float32)
    np.put_along_axis(probs, labels[None].astype(np.int64), confidence, axis=0)
    return probs


def apply_postprocess(
    labels: Any,
    steps: Sequence[PostprocessStep] | str,
    *,
    num_classes: int | None = None,
    probs: np.ndarray | None = None,
    image: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Apply a pipeline to a label image.

    Args:
        labels: integer class labels, 2D or 3D.
        steps: parsed steps or a pipeline string.
        num_classes: number of classes (for ``crf`` from labels; default ``labels.max() + 1``).
        probs: the network's probabilities ``(K, *spatial)``, used by a leading ``crf``.
        image: the image ``(C, *spatial)`` or ``(*spatial)`` for ``crf``'s appearance kernel.
        spacing: voxel size per axis; makes sizes physical.

    Shape:
        ``(*spatial)`` -> ``(*spatial)``.

    >>> lab = np.zeros((5, 5), int); lab[1:4, 1:4] = 1; lab[2, 2] = 0; lab[0, 4] = 1
    >>> apply_postprocess(lab, "remove-islands:2,fill-holes").sum()
    np.int64(9)
    """
    parsed = parse_postprocess(steps) if isinstance(steps, str) else list(steps)
    out = np.asarray(labels)
    k = int(num_classes) if num_classes is not None else int(out.max(initial=0)) + 1
    changed = False
    for step in parsed:
        if step.name == "remove-islands":
            out = remove_small_islands(out, step.value or 0.0, classes=step.classes, spacing=spacing)
        elif step.name == "fill-holes":
            out = fill_holes(out, step.value, classes=step.classes, spacing=spacing)
        elif step.name == "keep-largest":
            out = keep_largest_component(out, classes=step.classes)
        else:
            start = probs if probs is not None and not changed else _pseudo_probs(out, k)
            iterations = int(step.value) if step.value is not None else 5
            out = crf_refine(start, image, iterations=iterations).argmax(0).astype(out.dtype)
        changed = True
    return out
