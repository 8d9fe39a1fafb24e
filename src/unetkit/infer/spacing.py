"""Prediction at the model's spacing, streamed: resample tiles in, probabilities back, one slab at a time.

The image is seen at the model's spacing through :class:`~unetkit.data.resample.ResampledImage` (each tile
band resampled as it is read), the predictor streams slabs of probabilities on that grid, and
:class:`BackResampler` turns them into slabs on the input grid (linear interpolation, as
:func:`~unetkit.data.resample.resample_probabilities`) as soon as the rows they need have arrived. Memory
follows a slab, never the image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from unetkit.data.resample import ResampledImage, axis_coordinates, interpolate_axis
from unetkit.data.windows import fold_index
from unetkit.infer.predictor import Predictor, Slab

log = logging.getLogger(__name__)


#: Warn when an image's spacing is this far (ratio, any axis) from the model's: the content is at a scale
#: the model saw only through resampling.
SPACING_WARN_RATIO = 2.0


def resampling_for(
    path: Any, spacing: Sequence[float] | None, desc: Any, warn: bool = True
) -> tuple[float, ...] | None:
    """The model spacing ``path`` must be resampled to, or ``None`` (no spacing on either side, or equal).

    A spacing far from the model's gives a warning line (the model only saw such scales by resampling).
    """
    from unetkit.data.resample import needs_resampling

    target = tuple(float(x) for x in desc.spacing) if desc is not None and desc.spacing else None
    if target is None or spacing is None or len(spacing) != len(target):
        return None
    ratios = [float(s) / t for s, t in zip(spacing, target, strict=True)]
    if warn and any(r > SPACING_WARN_RATIO or r < 1 / SPACING_WARN_RATIO for r in ratios):
        log.warning(
            "%s: spacing %s is far from the model's %s (ratio %s): predicted after resampling, check the result",
            path, list(spacing), list(target), ", ".join(f"{r:.2g}" for r in ratios),
        )  # fmt: skip
    return target if needs_resampling(spacing, target) else None


class BackResampler:
    """Slabs of probabilities on the model's grid in, slabs on the input grid out (linear, streamed).

    Args:
        grid: the model-grid spatial shape the slabs tile (in raster order along axis 0, whole other axes).
        shape: the input grid's spatial shape.

    Example:
        >>> import numpy as np
        >>> from unetkit.data.resample import resample_probabilities
        >>> p = np.random.default_rng(0).random((2, 12, 5)).astype(np.float32)
        >>> back = BackResampler((12, 5), (6, 10))
        >>> out = [s for a in range(0, 12, 5) for s in back.push(Slab((a, 0), p[:, a : a + 5]))]
        >>> np.allclose(np.concatenate([s.proba for s in out], 1), resample_probabilities(p, (6, 10)), atol=1e-5)
        True
    """

    def __init__(self, grid: Sequence[int], shape: Sequence[int]) -> None:
        self.grid, self.shape = tuple(int(n) for n in grid), tuple(int(n) for n in shape)
        self.buffer: np.ndarray | None = None  # model-grid rows [lo, lo + len) along axis 0
        self.lo = 0
        self.next = 0  # the next input row to emit
        coords = axis_coordinates(self.grid[0], self.shape[0], 0, self.shape[0])
        base = np.floor(coords).astype(np.int64)
        # the model-grid rows each input row taps (mirrored at the ends)
        self.first = np.minimum(fold_index(base, self.grid[0]), fold_index(base + 1, self.grid[0]))
        self.last = np.maximum(fold_index(base, self.grid[0]), fold_index(base + 1, self.grid[0]))
        self.coords = coords

    def push(self, slab: Slab) -> Iterator[Slab]:
        """Add one model-grid slab; yield the input-grid slabs it completes."""
        proba = slab.proba
        if self.buffer is None:
            self.buffer, self.lo = proba, slab.start
        else:
            self.buffer = np.concatenate([self.buffer, proba], axis=1)
        have = self.lo + self.buffer.shape[1]
        stop = self.next
        while stop < self.shape[0] and self.last[stop] < have:
            stop += 1
        if stop == self.next:
            return
        rows = slice(self.next, stop)
        out = interpolate_axis(self.buffer, 1, self.coords[rows], 1, self.lo, self.grid[0])
        for axis in range(1, len(self.shape)):
            if self.grid[axis] != self.shape[axis]:
                c = axis_coordinates(self.grid[axis], self.shape[axis], 0, self.shape[axis])
                out = interpolate_axis(out, axis + 1, c, 1, 0, self.grid[axis])
        yield Slab((self.next, *(0 for _ in self.shape[1:])), out.astype(np.float32))
        self.next = stop
        if stop < self.shape[0]:  # drop the model-grid rows no later input row taps
            keep = int(self.first[stop:].min())
            if keep > self.lo:
                self.buffer = self.buffer[:, keep - self.lo :]
                self.lo = keep


def resampled_slabs(
    predictor: Predictor,
    image: Any,
    spacing: Sequence[float],
    target: Sequence[float],
    on_tiles: Callable[[int], None] | None = None,
) -> Iterator[Slab]:
    """Predict ``image`` (``(C, *S)`` at ``spacing``) at the model's spacing ``target``; yield input-grid slabs.

    Shape:
        slabs of ``(K, rows, *S[1:])`` probabilities covering ``S`` in raster order.
    """
    view = ResampledImage(image, spacing, target)
    spatial = tuple(int(n) for n in image.shape[1:])
    log.info("predicting %s at spacing %s on the model's grid %s (spacing %s), streamed",
             "x".join(map(str, spatial)), list(spacing), "x".join(map(str, view.spatial)), list(target))  # fmt: skip
    back = BackResampler(view.spatial, spatial)
    for slab in predictor.iter_slabs(view, on_tiles=on_tiles):
        yield from back.push(slab)
