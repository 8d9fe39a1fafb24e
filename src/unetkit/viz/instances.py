"""Instance overlays: one colour per object, neighbouring objects told apart, every object outlined.

Colours come from :data:`INSTANCE_COLOURS`, bright hues a golden-ratio step apart. Objects are coloured in
id order, greedily on their adjacency graph: each starts from the colour its id hashes to and takes the
first one that none of its already coloured neighbours has (objects touching or at most ``gap`` pixels
apart are neighbours). So the colouring is deterministic, colours vary across the picture, and two
neighbours share a colour only when an object has at least as many neighbours as there are colours.
The painting itself is the overlays' one rule (:func:`unetkit.viz.overlay.paint`): fill at alpha, outlines
opaque.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.classes import RGB
from unetkit.errors import DataError
from unetkit.viz._save import save_rgb
from unetkit.viz.downsample import MAX_SIDE, grey_preview, preview_step
from unetkit.viz.legend import LegendEntry, add_legend
from unetkit.viz.overlay import paint, to_display

__all__ = ["INSTANCE_COLOURS", "instance_colours", "instance_overlay", "save_instance_overlay"]


def _hues(n: int) -> tuple[RGB, ...]:
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.9 if i % 2 == 0 else 0.55, 1.0)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(out)


INSTANCE_COLOURS: tuple[RGB, ...] = _hues(12)
"""The colours objects are painted in (12 bright hues, alternately saturated and pale)."""


def _ids_2d(instances: Any) -> np.ndarray:
    lab = np.asarray(instances.detach().cpu() if hasattr(instances, "detach") else instances)
    if lab.ndim != 2 or lab.dtype.kind not in "iub":
        raise DataError(f"instance ids of shape {lab.shape} and dtype {lab.dtype}; pass a 2D integer array (H, W)")
    if lab.size and int(lab.min()) < 0:
        raise DataError("instance ids must be >= 0 (0 = background)")
    return lab


def _neighbour_pairs(lab: np.ndarray, gap: int) -> np.ndarray:
    """``(N, 2)`` pairs ``(a, b)``, ``a < b``, of different non-zero labels at most ``gap`` pixels apart
    (Chebyshev distance ``gap + 1`` at most between their pixels)."""
    h, w = lab.shape
    reach = gap + 1
    codes = []
    n = int(lab.max(initial=0)) + 1
    for dy in range(reach + 1):
        for dx in range(-reach, reach + 1):
            if dy == 0 and dx <= 0:
                continue  # one of each pair of opposite shifts
            a = lab[: h - dy, max(0, -dx) : w - max(0, dx)]
            b = lab[dy:, max(0, dx) : w + min(0, dx)]
            hit = (a != b) & (a > 0) & (b > 0)
            lo, hi = np.minimum(a[hit], b[hit]).astype(np.int64), np.maximum(a[hit], b[hit]).astype(np.int64)
            codes.append(np.unique(lo * n + hi))
    flat = np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.int64)
    return np.stack([flat // n, flat % n], axis=1)


def _hash_slot(i: int, slots: int) -> int:
    return ((i * 2654435761) % 2**32 >> 8) % slots  # Knuth's multiplicative hash: neighbouring ids spread out


def _colour_table(lab: np.ndarray, gap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, compact, lut)``: the ids present (0 first), the labels renumbered ``0..len(ids) - 1`` and one
    colour per compact label (row 0, the background, black)."""
    ids, compact = np.unique(lab, return_inverse=True)
    compact = compact.reshape(lab.shape)
    if ids.size == 0 or ids[0] != 0:
        ids, compact = np.concatenate([[0], ids]).astype(lab.dtype), compact + 1
    neighbours: list[list[int]] = [[] for _ in range(ids.size)]
    for a, b in _neighbour_pairs(compact, gap).tolist():
        neighbours[a].append(b)
        neighbours[b].append(a)
    slots = len(INSTANCE_COLOURS)
    slot = np.full(ids.size, -1, np.int64)
    for k in range(1, ids.size):
        taken = {int(slot[j]) for j in neighbours[k] if slot[j] >= 0}
        start = _hash_slot(int(ids[k]), slots)
        slot[k] = next((s for s in ((start + i) % slots for i in range(slots)) if s not in taken), start)
    lut = np.zeros((ids.size, 3), np.uint8)
    lut[1:] = np.asarray(INSTANCE_COLOURS, np.uint8)[slot[1:]]
    return ids, compact, lut


def instance_colours(instances: Any, *, gap: int = 2) -> dict[int, RGB]:
    """The colour each object gets in :func:`instance_overlay` (see the module docstring).

    Args:
        instances: ``(H, W)`` integer object ids, 0 = background.
        gap: objects at most this many pixels apart count as neighbours (and get different colours).

    Returns:
        ``{id: (r, g, b)}`` for every non-zero id present.

    >>> ids = np.array([[1, 1, 2, 2]])
    >>> c = instance_colours(ids); sorted(c), c[1] != c[2]
    ([1, 2], True)
    """
    ids, _, lut = _colour_table(_ids_2d(instances), gap)
    return {int(i): tuple(int(v) for v in lut[k]) for k, i in enumerate(ids) if i != 0}  # type: ignore[misc]


def _paint_instances(picture: np.ndarray, lab: np.ndarray, alpha: float, contours: bool, gap: int) -> np.ndarray:
    _, compact, lut = _colour_table(lab, gap)
    return paint(picture, compact, lut, alpha=alpha, contours=contours, background=0)


def instance_overlay(
    image: Any, instances: Any, *, alpha: float = 0.5, contours: bool = True, gap: int = 2
) -> np.ndarray:
    """Objects over an image: each object filled in its own colour (:func:`instance_colours`, neighbours
    differ) at ``alpha``, and outlined opaque in it; background pixels show the image.

    Args:
        image: the image (see :func:`unetkit.viz.overlay.to_display`), same height and width.
        instances: ``(H, W)`` integer object ids, 0 = background (e.g. ``unetkit predict --instances``'s
            ``<stem>_instances.tif``, or :func:`unetkit.postprocess.separate_instances`).
        alpha: opacity of the fill (0: outlines only).
        contours: draw every object's outline.
        gap: objects at most this many pixels apart get different colours.

    Shape:
        ``image (C, H, W)`` or ``(H, W)``, ``instances (H, W)`` -> ``uint8 (H, W, 3)``.

    >>> ids = np.zeros((6, 8), np.int32); ids[1:5, 1:4] = 1; ids[1:5, 4:7] = 2
    >>> rgb = instance_overlay(np.zeros((6, 8)), ids)
    >>> rgb.shape, rgb[0, 0].tolist(), bool((rgb[2, 2] != rgb[2, 5]).any())
    ((6, 8, 3), [0, 0, 0], True)
    """
    return _paint_instances(to_display(image), _ids_2d(instances), alpha, contours, gap)


def save_instance_overlay(
    path: str | os.PathLike[str],
    image: Any,
    instances: Any,
    *,
    count: int | None = None,
    note: str = "",
    max_side: int = MAX_SIDE,
    alpha: float = 0.5,
) -> Path:
    """Write an instance overlay PNG (atomically): :func:`instance_overlay` over the grey image, shown
    downsampled to a longest side of at most ``max_side`` (every ``step``-th pixel of image and ids: a lazy
    image is read in strided blocks), with a legend line giving the object count.

    Args:
        path: the ``.png`` to write.
        image: the ``(C, H, W)`` image (an array or a lazy image, :func:`unetkit.data.io.open_image`).
        instances: ``(H, W)`` object ids.
        count: the number of objects for the legend (default: the distinct non-zero ids).
        note: added to the legend line after the count, e.g. the separation method.
        max_side: longest side of the picture.
        alpha: opacity of the fill.

    Shape:
        ``image (C, H, W)``, ``instances (H, W)``.
    """
    lab = _ids_2d(instances)
    if len(image.shape) == 2:  # a grey (H, W) array
        image = np.asarray(image)[None]
    if tuple(int(s) for s in image.shape[-2:]) != lab.shape:
        raise DataError(f"instance ids of shape {lab.shape} for an image of shape {tuple(image.shape)}", file=path)
    step = preview_step(lab.shape, max_side)
    picture = _paint_instances(grey_preview(image, step), lab[::step, ::step], alpha, True, gap=2)
    n = count if count is not None else int(np.count_nonzero(np.unique(lab)))
    text = f"{n} object{'s' if n != 1 else ''}" + (f" ({note})" if note else "")
    if step > 1:
        text += f"; shown at 1/{step} scale"
    save_rgb(path, add_legend(picture, [LegendEntry(text)], alpha=alpha))
    return Path(path)
