"""Spacing and network topology rules: target spacing, per-axis pooling and kernels, legal patches.

Pure functions on numbers; the planner (:mod:`unetkit.plan.planner`) explains their results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: An axis is "much coarser" than the finest one beyond this ratio: it is not pooled and gets kernel 1.
POOL_RATIO = 2.0
#: A dataset axis whose median spacing exceeds the finest by this ratio is "strongly anisotropic".
ANISOTROPY_RATIO = 3.0
#: Lower percentile of the spacings taken as target on a strongly anisotropic axis.
ANISOTROPIC_PERCENTILE = 10.0
#: The deepest feature map keeps at least this many voxels per pooled axis.
MIN_FEATURE = 4


def target_spacing(spacings: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], int | None]:
    """The spacing every image is resampled to, and the strongly anisotropic axis (or ``None``).

    The median per axis; on an axis whose median is over ``ANISOTROPY_RATIO`` x the finest, the
    ``ANISOTROPIC_PERCENTILE``-th percentile instead (finer than the median, so fewer slices are invented by
    interpolation away from the typical case), never finer than the other axes.

    >>> target_spacing([(1.0, 1.0), (1.0, 1.0)])
    ((1.0, 1.0), None)
    >>> target_spacing([(5.0, 1.0, 1.0), (3.0, 0.8, 0.8), (4.0, 1.0, 1.0)])
    ((3.2, 1.0, 1.0), 0)
    """
    arr = np.asarray(spacings, dtype=np.float64)
    med = np.median(arr, axis=0)
    worst = int(np.argmax(med))
    finest = float(med.min())
    if med[worst] <= ANISOTROPY_RATIO * finest:
        return tuple(float(x) for x in med), None
    others = float(np.delete(med, worst).max())
    target = med.copy()
    target[worst] = max(float(np.percentile(arr[:, worst], ANISOTROPIC_PERCENTILE)), others)
    return tuple(float(round(x, 6)) for x in target), worst


@dataclass(frozen=True)
class Topology:
    """Per-level, per-axis pooling and kernels of a U-Net.

    Attributes:
        pools: one per-axis pooling factor tuple per level (``len == depth``).
        kernels: one per-axis kernel tuple per level and the bridge (``len == depth + 1``).
    """

    pools: tuple[tuple[int, ...], ...]
    kernels: tuple[tuple[int, ...], ...]

    @property
    def depth(self) -> int:
        """The number of poolings."""
        return len(self.pools)

    @property
    def divisor(self) -> tuple[int, ...]:
        """Per axis, the product of the poolings: a same-padded patch must be a multiple of it."""
        dims = len(self.kernels[0])
        return tuple(int(math.prod(p[a] for p in self.pools)) for a in range(dims))

    def describe(self) -> str:
        """``"pools 2x2, 2x2, 2x2; kernels 3x3 ..."`` in words."""

        def fmt(t: tuple[int, ...]) -> str:
            return "x".join(str(v) for v in t)

        return f"pools {', '.join(fmt(p) for p in self.pools)}; kernels {', '.join(fmt(k) for k in self.kernels)}"


def _kernel(spacing: Sequence[float]) -> tuple[int, ...]:
    finest = min(spacing)
    return tuple(3 if s <= POOL_RATIO * finest else 1 for s in spacing)


def plan_topology(
    patch: Sequence[int], spacing: Sequence[float] | None = None, *, max_depth: int = 6, min_feature: int = MIN_FEATURE
) -> Topology:
    """Pool an axis only while its spacing is within ``POOL_RATIO`` of the finest and its feature map stays
    ``>= min_feature`` voxels; kernels are 1 on an axis still much coarser than the finest, else 3.

    Pooling an axis doubles its effective spacing, so a coarse axis joins the others once they have been
    pooled up to it (the 1x3x3 then 3x3x3 pattern of anisotropic stacks).

    >>> plan_topology((256, 256)).describe()
    'pools 2x2, 2x2, 2x2, 2x2, 2x2, 2x2; kernels 3x3, 3x3, 3x3, 3x3, 3x3, 3x3, 3x3'
    >>> plan_topology((20, 128, 128), (4.0, 1.0, 1.0), max_depth=4).describe()
    'pools 1x2x2, 2x2x2, 2x2x2, 1x2x2; kernels 1x3x3, 3x3x3, 3x3x3, 3x3x3, 3x3x3'
    """
    dims = len(patch)
    sp = [float(s) for s in (spacing or [1.0] * dims)]
    size = [int(n) for n in patch]
    pools: list[tuple[int, ...]] = []
    kernels = [_kernel(sp)]
    while len(pools) < max_depth:
        finest = min(sp)
        pool = tuple(2 if sp[a] <= POOL_RATIO * finest and size[a] // 2 >= min_feature else 1 for a in range(dims))
        if all(p == 1 for p in pool):
            break
        pools.append(pool)
        size = [n // p for n, p in zip(size, pool, strict=True)]
        sp = [s * p for s, p in zip(sp, pool, strict=True)]
        kernels.append(_kernel(sp))
    return Topology(tuple(pools), tuple(kernels))


def fit_patch(
    patch: Sequence[float], spacing: Sequence[float] | None = None, *, max_depth: int = 6
) -> tuple[tuple[int, ...], Topology]:
    """The largest patch ``<= patch`` (per axis) that its own topology divides, and that topology.

    >>> size, topo = fit_patch((250, 250)); size, topo.depth
    ((224, 224), 5)
    """
    size = tuple(max(1, int(n)) for n in patch)
    for _ in range(8):  # the topology depends on the patch and the patch on the topology: iterate to a fixpoint
        topo = plan_topology(size, spacing, max_depth=max_depth)
        fitted = tuple(max(d, (n // d) * d) for n, d in zip(size, topo.divisor, strict=True))
        if fitted == size:
            return size, topo
        size = fitted
    return size, plan_topology(size, spacing, max_depth=max_depth)


def widths(base: int, depth: int, cap: int) -> list[int]:
    """Channel widths per level: doubling from ``base``, capped at ``cap``.

    >>> widths(32, 6, 320)
    [32, 64, 128, 256, 320, 320, 320]
    """
    return [min(base * 2**i, cap) for i in range(depth + 1)]
