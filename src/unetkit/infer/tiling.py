"""The tiler's pure parts: a grid of tiles, blend windows and their normalisers.

Nothing here runs a network or touches a file; tiles are read, mirrored at the image border, by
:func:`unetkit.data.windows.read_window`. A :class:`TilePlan` lays tiles over an image of any size:

- ``valid`` nets (the paper's overlap-tile strategy): output tiles abut exactly, with no blending. The
  output stride is the largest multiple of ``2**depth`` that fits in the output tile, so every tile sees
  the pooling grid at the same phase as a single whole-image pass over the mirror-padded image would:
  the tiled result equals that pass.
- ``same`` nets: tiles overlap by a fraction of the tile and are blended with a window (``gaussian``,
  ``hann``, ``linear``, ``constant``), or each pixel is taken from the tile whose centre is nearest
  (``center``, no blending at all).

The grid is a product of per-axis 1D layouts (:class:`Axis`), so one code path serves 2D and 3D.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from unetkit.errors import ConfigError
from unetkit.shapes import ShapeContract

BLEND_MODES = ("gaussian", "hann", "linear", "constant", "center")


@dataclass(frozen=True)
class Span:
    """One tile along one axis.

    ``in_start`` is where the network's input window starts (image coordinates, may be negative or run
    past the image: those pixels come from mirroring); the tile's output covers image coordinates
    ``[out_start, out_start + out_size)``; of that, ``[keep_start, keep_stop)`` is written (image
    coordinates, inside the image).
    """

    in_start: int
    out_start: int
    keep_start: int
    keep_stop: int


@dataclass(frozen=True)
class Axis:
    """The 1D layout of tiles along one axis: input and output tile sizes and the spans."""

    size: int
    tile_in: int
    tile_out: int
    spans: tuple[Span, ...]
    blended: bool

    def overlapping(self, start: int, stop: int) -> list[int]:
        """Indices of the spans whose kept range meets ``[start, stop)``."""
        return [i for i, s in enumerate(self.spans) if s.keep_start < stop and s.keep_stop > start]


def window_1d(n: int, mode: str) -> np.ndarray:
    """A strictly positive 1D blend window of length ``n`` (sampled at pixel centres).

    ``gaussian``: sigma = n / 8 (as nnU-Net and MONAI); ``hann``: sin^2; ``linear``: a tent;
    ``constant`` and ``center``: ones.

    >>> window_1d(4, "linear").tolist()
    [0.25, 0.75, 0.75, 0.25]
    """
    x = (np.arange(n, dtype=np.float64) + 0.5) / n  # in (0, 1)
    if mode == "gaussian":
        w = np.exp(-0.5 * ((x - 0.5) * n / (n / 8.0)) ** 2)
    elif mode == "hann":
        w = np.sin(np.pi * x) ** 2
    elif mode == "linear":
        w = 1.0 - np.abs(2.0 * x - 1.0)
    elif mode in ("constant", "center"):
        w = np.ones(n)
    else:
        raise ConfigError(f"blend: unknown mode {mode!r}; choose one of {', '.join(BLEND_MODES)}")
    return np.maximum(w, 1e-6).astype(np.float32)


def _same_axis(size: int, tile: int, overlap: float, blend: str) -> Axis:
    """Overlapping tiles of a same-padded net along one axis (``tile`` already legal)."""
    step = max(1, tile - round(overlap * tile))
    if size <= tile:
        starts = [0]
    else:
        count = math.ceil((size - tile) / step) + 1
        starts = [i * step for i in range(count - 1)] + [size - tile]
    if blend == "center":
        # Each pixel comes from the tile whose centre is nearest: cut halfway through each overlap.
        cuts = [0] + [(starts[i] + tile + starts[i + 1]) // 2 for i in range(len(starts) - 1)] + [size]
        spans = tuple(Span(a, a, cuts[i], cuts[i + 1]) for i, a in enumerate(starts))
        return Axis(size, tile, tile, spans, blended=False)
    spans = tuple(Span(a, a, a, min(a + tile, size)) for a in starts)
    return Axis(size, tile, tile, spans, blended=len(spans) > 1)


def _valid_axis(size: int, tile_in: int, tile_out: int, margin: int, step: int) -> Axis:
    """Abutting tiles of a valid-padded net along one axis: stride = multiple of ``step`` (2**depth)."""
    stride = (tile_out // step) * step
    if stride < 1:
        raise ConfigError(f"tile: output tile {tile_out} is smaller than 2**depth = {step}; use a larger --tile")
    count = math.ceil(size / stride)
    spans = tuple(Span(k * stride - margin, k * stride, k * stride, min((k + 1) * stride, size)) for k in range(count))
    return Axis(size, tile_in, tile_out, spans, blended=False)


@dataclass(frozen=True)
class TilePlan:
    """Tiles over an image of spatial shape ``shape``: a product of per-axis layouts.

    Build one with :func:`plan_tiles`. ``weights()`` is the blend window of every tile, and
    ``normaliser(region)`` the sum of all windows over a region, so ``sum(w * p) / normaliser`` is the
    blended result with no weight buffer.

    Examples:
        >>> p = plan_tiles((100, 70), padding="same", tile=(64, 64), overlap=0.25, blend="gaussian")
        >>> [len(a.spans) for a in p.axes], p.tile_in
        ([2, 2], (64, 64))
        >>> p3 = plan_tiles((9, 9, 9), padding="valid", tile=(44,) * 3, tile_out=(4,) * 3, margin=20, step=4)
        >>> [len(a.spans) for a in p3.axes]
        [3, 3, 3]
    """

    shape: tuple[int, ...]
    axes: tuple[Axis, ...]
    blend: str
    _windows: tuple[np.ndarray, ...] = field(repr=False, default=())
    _norms: tuple[np.ndarray, ...] = field(repr=False, default=())

    @property
    def tile_in(self) -> tuple[int, ...]:
        return tuple(a.tile_in for a in self.axes)

    @property
    def tile_out(self) -> tuple[int, ...]:
        return tuple(a.tile_out for a in self.axes)

    @property
    def blended(self) -> bool:
        """Whether tiles overlap in their kept output (then they must be accumulated and normalised)."""
        return any(a.blended for a in self.axes)

    @property
    def num_tiles(self) -> int:
        return math.prod(len(a.spans) for a in self.axes)

    def tiles(self, region: Sequence[tuple[int, int]] | None = None) -> Iterator[tuple[int, ...]]:
        """Tile indices (one span index per axis) in raster order, optionally only those meeting ``region``."""
        per_axis = [
            a.overlapping(*r) if region is not None else range(len(a.spans))
            for a, r in zip(self.axes, region or [(0, 0)] * len(self.axes), strict=True)
        ]
        yield from itertools.product(*per_axis)

    def weights(self) -> np.ndarray | None:
        """The blend window of every tile (``tile_out`` shaped, float32), or None when tiles do not overlap."""
        if not self.blended:
            return None
        return _outer(self._windows)

    def normaliser(self, region: Sequence[tuple[int, int]]) -> np.ndarray:
        """The sum of every tile's window over ``region`` (an outer product of per-axis sums)."""
        return _outer(tuple(n[a:b] for n, (a, b) in zip(self._norms, region, strict=True)))


def _outer(vectors: Sequence[np.ndarray]) -> np.ndarray:
    out = vectors[0]
    for v in vectors[1:]:
        out = np.multiply.outer(out, v)
    return np.ascontiguousarray(out, dtype=np.float32)


def plan_tiles(
    shape: Sequence[int],
    *,
    padding: str,
    tile: Sequence[int],
    tile_out: Sequence[int] | None = None,
    margin: int | Sequence[int] = 0,
    step: int | Sequence[int] = 1,
    overlap: float = 0.25,
    blend: str = "gaussian",
) -> TilePlan:
    """Lay tiles over an image of spatial ``shape``.

    Args:
        shape: the image's spatial size.
        padding: the network's ``"same"`` or ``"valid"``.
        tile: the network's input window per axis, already legal (see :func:`choose_tile`).
        tile_out: the network's output for ``tile`` (valid nets; same nets: ``tile``).
        margin: pixels lost per side (valid nets), one or per axis.
        step: the product of the pools (``2**depth``), one or per axis: valid tiles advance by a multiple of it.
        overlap: fraction of the tile shared by neighbours (same nets), in ``[0, 1)``.
        blend: ``gaussian``, ``hann``, ``linear``, ``constant`` or ``center`` (same nets).

    Returns:
        The plan.
    """
    if blend not in BLEND_MODES:
        raise ConfigError(f"blend: unknown mode {blend!r}; choose one of {', '.join(BLEND_MODES)}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap: {overlap} is not a fraction in [0, 1); try 0.25")
    shape = tuple(int(n) for n in shape)
    if padding == "valid":
        if tile_out is None:
            raise ConfigError("plan_tiles: valid nets need tile_out")
        margins = (margin,) * len(shape) if isinstance(margin, int) else tuple(margin)
        steps = (step,) * len(shape) if isinstance(step, int) else tuple(step)
        axes = tuple(
            _valid_axis(n, t, o, m, s)
            for n, t, o, m, s in zip(shape, tile, tile_out, margins, steps, strict=True)
        )  # fmt: skip
        return TilePlan(shape, axes, "center")
    axes = tuple(_same_axis(n, t, overlap, blend) for n, t in zip(shape, tile, strict=True))
    # An axis with a single tile needs no window: p * w / w would only add rounding.
    windows = tuple(window_1d(a.tile_out, blend if a.blended else "constant") for a in axes)
    norms = []
    for a, w in zip(axes, windows, strict=True):
        total = np.zeros(max(a.size, max(s.out_start for s in a.spans) + a.tile_out), np.float32)
        for s in a.spans:
            total[s.out_start : s.out_start + a.tile_out] += w
        norms.append(total[: a.size])
    return TilePlan(shape, axes, blend, windows, tuple(norms))


#: The default network input window per axis, by spatial dims, when neither the caller nor the model file
#: names one (and the floor of the output window a trained model records): in 2D a 512 tile is the
#: fastest on every CPU backend measured (benchmarks/tile_choice.py: 1.13-1.23x the 256 tile; 768 falls out
#: of the caches), and it wastes less on overlaps and halos; in 3D 96 keeps a tile's activations small.
DEFAULT_TILE = {2: 512, 3: 96}


def default_tile(spatial_dims: int) -> int:
    """The default tile edge for ``spatial_dims`` (2 or 3); see :data:`DEFAULT_TILE`.

    >>> default_tile(2), default_tile(3)
    (512, 96)
    """
    return DEFAULT_TILE[int(spatial_dims)]


def choose_tile(model: object, requested: Sequence[int] | int | None, shape: Sequence[int]) -> tuple[int, ...]:
    """The legal input tile per axis for ``model`` (a network, or its :class:`~unetkit.shapes.ShapeContract`).

    The requested tile (default :func:`default_tile`: 512 in 2D, 96 in 3D) goes through the one rounding rule,
    :meth:`ShapeContract.round`: the nearest legal size for valid nets; for same nets up to a legal size,
    never larger than the image needs (``shape`` rounded up).

    >>> from unetkit import create_model
    >>> choose_tile(create_model("unet_paper"), 570, (1000, 1000))
    (572, 572)
    >>> choose_tile(create_model("unet2d_small"), 500, (100, 1000))
    (104, 504)
    """
    contract: ShapeContract = model if isinstance(model, ShapeContract) else model.contract  # type: ignore[attr-defined]
    if requested is None:
        requested = default_tile(contract.spatial_dims)
    return contract.round(requested, "tile", image=shape)
