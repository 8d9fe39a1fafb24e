"""Reading the image for the tiler one band at a time: each row of tiles is served from one read of the band
its input windows span, and the next row's band is read by a background thread while the network runs."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from unetkit.data.windows import read_window
from unetkit.infer.tiling import TilePlan

#: A row of tiles is read as one band unless the band would exceed this many bytes (huge 3D rows).
BAND_BYTES = 512 * 2**20


def band_box(image: Any, plan: TilePlan, tiles: Sequence[tuple[int, ...]]) -> tuple[list[int], list[int]] | None:
    """The band ``(start, size)`` spanning the input windows of one row of tiles, or ``None`` when too large."""
    starts = [[ax.spans[j].in_start for ax, j in zip(plan.axes, t, strict=True)] for t in tiles]
    lo = [min(s[a] for s in starts) for a in range(len(plan.axes))]
    hi = [max(s[a] for s in starts) + n for a, n in enumerate(plan.tile_in)]
    size = [b - a for a, b in zip(lo, hi, strict=True)]
    itemsize = np.dtype(getattr(image, "dtype", np.float32)).itemsize
    if math.prod(size) * int(image.shape[0]) * itemsize > BAND_BYTES:
        return None
    return lo, size


class BandPrefetcher:
    """Tile reads for each row of tiles, served from one band read of the image (mirror-padded).

    The band spans the row's input windows along every axis; each tile is then a slice of it, so every input
    pixel is read about once per row (strips and chunks under the band are decoded once). While row ``i`` is
    computed, row ``i + 1``'s band is read by one background thread, so reading (and decoding) overlaps the
    network. Only one read is ever in flight: a row whose band is too large (huge 3D rows) is read tile by
    tile on the calling thread, and then nothing is prefetched beside it.
    """

    def __init__(self, image: Any, plan: TilePlan, rows: Sequence[Sequence[tuple[int, ...]]]) -> None:
        self.image = image
        self.boxes = [band_box(image, plan, tiles) for tiles in rows]
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unetkit-read")
        self.pending: dict[int, Future[np.ndarray]] = {}

    def _submit(self, i: int) -> None:
        box = self.boxes[i] if i < len(self.boxes) else None
        if box is not None and i not in self.pending:
            self.pending[i] = self.pool.submit(read_window, self.image, *box)

    def reader(self, i: int) -> Callable[[Sequence[int], Sequence[int]], np.ndarray]:
        """The tile reader of row ``i``; starts reading row ``i + 1`` in the background."""
        box = self.boxes[i]
        if box is None:
            return lambda start, sz: read_window(self.image, start, sz)
        self._submit(i)
        band = self.pending.pop(i).result()
        self._submit(i + 1)
        lo = box[0]

        def read(start: Sequence[int], sz: Sequence[int]) -> np.ndarray:
            key = tuple(slice(a - b, a - b + n) for a, b, n in zip(start, lo, sz, strict=True))
            return band[(slice(None), *key)]

        return read

    def close(self) -> None:
        """Drop reads still in flight (a consumer that stops early) and stop the thread."""
        for f in self.pending.values():
            f.cancel()
        self.pool.shutdown(wait=True)
        self.pending.clear()
