"""The shape contract of a network: which input sizes are legal, what comes out, and how sizes are rounded.

A :class:`ShapeContract` is a plain value (no torch, nothing built): the networks make theirs from their
constructor arguments (``UNet.contract_from_args(**args)``), a model description gives one without the
weights (:func:`unetkit.modelfile.shape_contract`), and every place that picks a size (training patches,
prediction tiles, the ONNX export) asks it through :meth:`ShapeContract.round`, the one rounding rule.

Along each axis a U-Net is a chain of stages: the conv block of level ``i`` loses ``enc[i]`` pixels
(``convs * (k - 1)`` for kernel ``k`` with valid padding, 0 with same padding), a pool ``p_i`` divides (it
must divide exactly), the bridge loses ``enc[depth]``; on the way up, an up-sampling multiplies by ``p_i``
and the decoder block of level ``i`` loses ``dec[i]``. Everything is decided by the size ``b`` at the bottom
(after the bridge), so per axis ``input = S * b + a`` and ``output = S * b - c`` with ``S = prod(p_i)`` (the
step), ``b >= b_min`` (the smallest bottom whose output is not empty); same nets are the case
``a = c = 0``. :class:`AxisContract` holds one axis' stages, so anisotropic kernels and pools (e.g.
``1x3x3`` kernels with ``(1, 2, 2)`` pools) need nothing special.

Examples:
    >>> c = ShapeContract.unet(2, depth=4, padding="valid")  # the paper's U-Net
    >>> c.output_shape((572, 572)), c.input_shape_for((388, 388)), c.margin(), c.min_input_size()
    ((388, 388), (572, 572), (92, 92), (188, 188))
    >>> c.round(570, "patch")  # valid nets: the nearest legal size
    (572, 572)
    >>> aniso = ShapeContract.unet(3, 2, "same", pool_sizes=[(1, 2, 2), 2])
    >>> aniso.steps(), aniso.round((5, 30, 30), "patch")  # same nets: up to a legal size
    ((2, 4, 4), (6, 32, 32))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from unetkit.errors import ConfigError, InputShapeError

PADDINGS = ("same", "valid")
MODES = ("floor", "ceil", "nearest")
#: what a size is rounded for -> how messages name it
PURPOSES = {"patch": "data.patch_size", "tile": "tile", "export": "export size", "size": "size"}


def per_level(
    value: int | Sequence[int | Sequence[int]] | None,
    levels: int,
    spatial_dims: int,
    default: int,
    name: str,
    odd: bool = False,
) -> tuple[tuple[int, ...], ...]:
    """Expand a per-level argument to one size per level and axis.

    ``value`` is None (``default`` everywhere), one int (every level and axis), or ``levels`` entries, each
    an int (every axis) or one int per axis.

    >>> per_level([(1, 2, 2), 2], 2, 3, 2, "pool_sizes")
    ((1, 2, 2), (2, 2, 2))
    >>> per_level(None, 2, 2, 3, "kernel_sizes", odd=True)
    ((3, 3), (3, 3))
    """
    if value is None:
        value = default
    entries = [value] * levels if isinstance(value, int) else list(value)
    if len(entries) != levels:
        raise ValueError(f"{name} needs {levels} entries (one per level), got {len(entries)}: {value!r}")
    out = []
    for level, entry in enumerate(entries):
        sizes = (entry,) * spatial_dims if isinstance(entry, int) else tuple(entry)
        if len(sizes) != spatial_dims:
            raise ValueError(
                f"{name}[{level}] = {entry!r}: give one int or {spatial_dims} (one per spatial axis)"
            )  # fmt: skip
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, int) or s < 1 or (odd and s % 2 == 0):
                what = "odd integers >= 1" if odd else "integers >= 1"
                raise ValueError(f"{name}[{level}] = {entry!r}: sizes must be {what}")
        out.append(sizes)
    return tuple(out)


def _uniform(values: Sequence[int]) -> int | tuple[int, ...]:
    """One number when every axis agrees, else the tuple (for messages)."""
    return values[0] if len(set(values)) == 1 else tuple(values)


@dataclass(frozen=True)
class AxisContract:
    """The size arithmetic of a network along one axis (see the module docstring).

    Attributes:
        pools: the down-sampling factor of each level ``0 .. depth-1`` (the up-sampling uses the same).
        encoder_loss: pixels lost by the conv block of each level ``0 .. depth`` (the last is the bridge).
        decoder_loss: pixels lost by the decoder block of each level ``0 .. depth-1``.
    """

    pools: tuple[int, ...]
    encoder_loss: tuple[int, ...]
    decoder_loss: tuple[int, ...]

    def __post_init__(self) -> None:
        d = len(self.pools)
        if len(self.encoder_loss) != d + 1 or len(self.decoder_loss) != d:
            raise ValueError(f"an axis with {d} pools needs {d + 1} encoder and {d} decoder losses")
        if min(self.pools, default=1) < 1 or min((*self.encoder_loss, *self.decoder_loss)) < 0:
            raise ValueError("pools must be >= 1 and losses >= 0")
        if (self.offset_in + self.offset_out) % 2:
            raise ValueError("the input and output sizes must differ by an even number (a centred output)")

    @property
    def step(self) -> int:
        """The stride of the legal sizes: the product of the pools."""
        return math.prod(self.pools)

    def input_for_bottom(self, b: int) -> int:
        """The input size whose bottom (after the bridge) has size ``b``."""
        x = b
        for i in reversed(range(len(self.pools))):
            x = (x + self.encoder_loss[i + 1]) * self.pools[i]
        return x + self.encoder_loss[0]

    def output_for_bottom(self, b: int) -> int:
        """The output size for a bottom of size ``b``."""
        y = b
        for i in reversed(range(len(self.pools))):
            y = y * self.pools[i] - self.decoder_loss[i]
        return y

    @property
    def offset_in(self) -> int:
        """``a`` in ``input = step * b + a``."""
        return self.input_for_bottom(0)

    @property
    def offset_out(self) -> int:
        """``c`` in ``output = step * b - c``."""
        return -self.output_for_bottom(0)

    @property
    def bottom_min(self) -> int:
        """The smallest bottom size whose output is not empty (then no stage on the way is empty either)."""
        return max(1, -(-(self.offset_out + 1) // self.step))

    def bottom_of(self, n: int) -> int | None:
        """The bottom size of a legal input ``n``, or None if ``n`` is not legal."""
        b, rem = divmod(n - self.offset_in, self.step)
        return b if rem == 0 and b >= self.bottom_min else None

    def neighbours(self, n: int) -> tuple[int | None, int]:
        """The largest legal size ``<= n`` (None if there is none) and the smallest legal size ``>= n``."""
        b = (n - self.offset_in) // self.step
        lo = self.input_for_bottom(b) if b >= self.bottom_min else None
        hi = n if lo == n else self.input_for_bottom(max(b + 1, self.bottom_min))
        return lo, hi


@dataclass(frozen=True)
class ShapeContract:
    """Which spatial input sizes a network takes and what it returns, per axis; no torch needed.

    Build one with :meth:`unet` (every unetkit network maps onto it), or get a network's from
    ``model.contract``, ``cls.contract_from_args(**args)`` or :func:`unetkit.modelfile.shape_contract`.

    Attributes:
        axes: one :class:`AxisContract` per spatial axis.
        padding: ``"same"`` or ``"valid"``; decides the rounding rule (:meth:`round`).
        step_origin: how messages name the step, e.g. ``"2**depth"`` or ``"the patch size"``.

    Methods taking ``axis`` accept None when every axis has the same rule (isotropic networks).
    """

    axes: tuple[AxisContract, ...]
    padding: str = "same"
    step_origin: str = "2**depth"

    def __post_init__(self) -> None:
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if not self.axes or len({len(a.pools) for a in self.axes}) != 1:
            raise ValueError("a shape contract needs at least one axis, every axis with the same depth")

    # ---- construction --------------------------------------------------------------------------------
    @classmethod
    def unet(
        cls,
        spatial_dims: int,
        depth: int,
        padding: str = "same",
        pool_sizes: int | Sequence[int | Sequence[int]] | None = None,
        kernel_sizes: int | Sequence[int | Sequence[int]] | None = None,
        convs_per_block: int = 2,
        step_origin: str | None = None,
    ) -> ShapeContract:
        """The contract of a U-Net: ``depth`` levels of ``convs_per_block`` convolutions, pools between them.

        Args:
            spatial_dims: number of spatial axes.
            depth: number of poolings.
            padding: ``"same"`` or ``"valid"``.
            pool_sizes: per level (``depth`` entries), an int or one per axis; default 2.
            kernel_sizes: per level and the bridge (``depth + 1`` entries), odd; default 3. The decoder
                block of a level uses that level's kernel.
            convs_per_block: convolutions per block (each loses ``k - 1`` with valid padding).
            step_origin: the step's name in messages; default ``"2**depth"`` when every pool is 2, else
                ``"the product of the pool sizes"``.
        """
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        pools = per_level(pool_sizes, depth, spatial_dims, 2, "pool_sizes")
        kernels = per_level(kernel_sizes, depth + 1, spatial_dims, 3, "kernel_sizes", odd=True)
        axes = []
        for ax in range(spatial_dims):
            enc = tuple(convs_per_block * (k[ax] - 1) if padding == "valid" else 0 for k in kernels)
            axes.append(AxisContract(tuple(p[ax] for p in pools), enc, enc[:depth]))
        if step_origin is None:
            step_origin = (
                "2**depth" if all(p == 2 for level in pools for p in level) else "the product of the pool sizes"
            )
        return cls(tuple(axes), padding, step_origin)

    # ---- per axis ------------------------------------------------------------------------------------
    @property
    def spatial_dims(self) -> int:
        return len(self.axes)

    @property
    def depth(self) -> int:
        return len(self.axes[0].pools)

    @property
    def isotropic(self) -> bool:
        """Whether every axis has the same rule."""
        return len(set(self.axes)) == 1

    def _axis(self, axis: int | None) -> AxisContract:
        if axis is None:
            if not self.isotropic:
                raise ValueError(
                    f"this network's legal sizes differ per axis (steps {self.steps()}); give axis= (0 .. "
                    f"{self.spatial_dims - 1})"
                )
            return self.axes[0]
        return self.axes[axis]

    def steps(self) -> tuple[int, ...]:
        """The stride of the legal sizes per axis (the product of the pools)."""
        return tuple(a.step for a in self.axes)

    def is_legal(self, n: int, axis: int | None = None) -> bool:
        """Whether ``n`` is a legal input size along ``axis``."""
        return self._axis(axis).bottom_of(int(n)) is not None

    def legal_size(self, n: int, axis: int | None = None, mode: str = "nearest") -> int:
        """A legal input size near ``n`` along ``axis``: ``"floor"``, ``"ceil"`` or ``"nearest"`` (ties go up).

        ``"floor"`` gives the smallest legal size when none is ``<= n``.

        >>> c = ShapeContract.unet(2, 4, "valid")
        >>> c.legal_size(570), c.legal_size(563), c.legal_size(565, mode="floor"), c.legal_size(10)
        (572, 556, 556, 188)
        """
        if mode not in MODES:
            raise ValueError(f"mode must be 'floor', 'ceil' or 'nearest', got {mode!r}")
        n = int(n)
        lo, hi = self._axis(axis).neighbours(n)
        if mode == "ceil" or lo is None:
            return hi
        if mode == "floor":
            return lo
        return hi if hi - n <= n - lo else lo

    def min_input_size(self) -> tuple[int, ...]:
        """The smallest legal input size per axis."""
        return tuple(a.input_for_bottom(a.bottom_min) for a in self.axes)

    def margin(self) -> tuple[int, ...]:
        """Pixels lost per side per axis, ``(input - output) / 2`` (0 for same nets)."""
        return tuple((a.offset_in + a.offset_out) // 2 for a in self.axes)

    # ---- whole shapes --------------------------------------------------------------------------------
    def _size_rule(self) -> str:
        if self.padding == "same":
            steps = _uniform(self.steps())
            return f"a multiple of {steps}{' per axis' if isinstance(steps, tuple) else ''} ({self.step_origin})"
        return f"a size the valid convolutions reduce evenly (smallest {_uniform(self.min_input_size())})"

    def _check_axes(self, shape: Sequence[int], what: str) -> tuple[int, ...]:
        shape = tuple(int(n) for n in shape)
        if len(shape) != self.spatial_dims:
            raise InputShapeError(
                f"this {self.spatial_dims}D network needs {self.spatial_dims} spatial axes, got {what} "
                f"{shape} ({len(shape)} axes)"
            )
        return shape

    def check(self, shape: Sequence[int]) -> None:
        """Raise :class:`InputShapeError` naming the nearest legal sizes per axis if ``shape`` is not legal.

        >>> ShapeContract.unet(2, 4, "valid").check((570, 572))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        unetkit.errors.InputShapeError: input size (570, 572) is not legal ... axis 0: 570 -> use 556 or 572. ...
        """
        shape = self._check_axes(shape, "shape")
        parts = []
        for ax, n in enumerate(shape):
            if not self.is_legal(n, ax):
                lo, hi = self.axes[ax].neighbours(n)
                near = f"{lo} or {hi}" if lo is not None else f"{hi} (the smallest legal size)"
                parts.append(f"axis {ax}: {n} -> use {near}")
        if parts:
            raise InputShapeError(
                f"input size {shape} is not legal for this {self.padding}-padded network of depth {self.depth}: "
                f"each size must be {self._size_rule()}; " + "; ".join(parts) + ". Pad or crop the image, or "
                "let the tiler pick the size (unetkit predict --tile)."
            )

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial output size for a legal spatial input size (checked)."""
        self.check(input_shape)
        return tuple(a.output_for_bottom(a.bottom_of(int(n)) or 0) for a, n in zip(self.axes, input_shape, strict=True))

    def input_shape_for(self, output_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial input size that yields exactly ``output_shape``.

        For ``same`` nets the output equals the input, so ``output_shape`` must itself be legal.
        """
        if self.padding == "same":
            self.check(output_shape)
            return tuple(int(n) for n in output_shape)
        output_shape = self._check_axes(output_shape, "output shape")
        result = []
        for ax, (a, n) in enumerate(zip(self.axes, output_shape, strict=True)):
            b, rem = divmod(n + a.offset_out, a.step)
            if rem or b < a.bottom_min:
                ok = sorted({a.output_for_bottom(bb) for bb in (max(b, a.bottom_min), max(b + 1, a.bottom_min))})
                raise InputShapeError(
                    f"output size {n} on axis {ax} cannot be produced by this valid network; "
                    f"nearest producible sizes: {ok}"
                )
            result.append(a.input_for_bottom(b))
        return tuple(result)

    # ---- the rounding rule ---------------------------------------------------------------------------
    def round(
        self, sizes: int | Sequence[int], purpose: str = "size", image: Sequence[int] | None = None
    ) -> tuple[int, ...]:
        """Round requested input sizes to legal ones: THE rule every size choice in unetkit goes through.

        ``valid`` nets take the nearest legal size (ties up): their output is smaller than their input
        anyway, so neither direction is special. ``same`` nets round up (a tile or patch at least as large
        as asked), and, given ``image`` (a prediction tile's image size), never beyond what covers the image.
        A same net's size is at least one step above the smallest legal size, so the bottom feature map
        keeps two pixels per axis (normalisation layers cannot normalise one).

        Args:
            sizes: one size for every axis, or one per axis.
            purpose: what the size is for, ``"patch"`` (training patch), ``"tile"`` (prediction tile),
                ``"export"`` (the ONNX trace) or ``"size"``; it names the setting in error messages.
            image: the image's spatial size, for ``same``-net tiles.

        Raises:
            ConfigError: the wrong number of sizes, or a size below 1.

        >>> ShapeContract.unet(2, 3).round((100, 1000), "tile", image=(100, 300))
        (104, 304)
        """
        label = PURPOSES.get(purpose)
        if label is None:
            raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
        d = self.spatial_dims
        req = (int(sizes),) * d if isinstance(sizes, int) else tuple(int(s) for s in sizes)
        if len(req) != d:
            raise ConfigError(f"{label}: {len(req)} sizes given for a {d}D network; give one size or {d}")
        if min(req) < 1:
            raise ConfigError(f"{label}: sizes must be positive, got {req}")
        if self.padding == "valid":  # the valid convolutions keep the bottom above one pixel already
            return tuple(self.legal_size(n, ax, "nearest") for ax, n in enumerate(req))
        # never a one-pixel bottom: instance (and batch-of-one) norm cannot normalise a single pixel
        floor = tuple(m + s for m, s in zip(self.min_input_size(), self.steps(), strict=True))
        if image is not None:
            req = tuple(min(n, int(m)) for n, m in zip(req, image, strict=True))
        return tuple(max(self.legal_size(n, ax, "ceil"), floor[ax]) for ax, n in enumerate(req))
