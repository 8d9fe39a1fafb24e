"""The contract every unetkit network keeps: channels, classes, and which input sizes are legal."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unetkit.errors import InputShapeError

PADDINGS = ("same", "valid")


class SegmentationModel(nn.Module):
    """Base class: a network mapping ``(B, in_channels, *S)`` images to ``(B, num_classes, *S_out)`` logits.

    Subclasses set ``spatial_dims``, ``in_channels``, ``num_classes``, ``depth``, ``padding`` and
    ``shrink`` (pixels lost per side-pair by one double convolution with ``valid`` padding), and record
    their constructor arguments in ``self.hparams`` so that a model file can rebuild them.

    For ``same`` nets a legal size is a multiple of ``2**depth`` and the output has the input's size.
    For ``valid`` nets (the paper's) a legal size is ``2**d * (b + c) + c * (2**d - 1)`` for a bottom
    size ``b >= b_min`` (``d`` = depth, ``c`` = shrink); the output is ``2**d * b - c * (2**d - 1)``.
    """

    spatial_dims: int
    in_channels: int
    num_classes: int
    depth: int
    padding: str
    shrink: int = 4
    hparams: dict[str, Any]

    # ---- per-axis arithmetic -------------------------------------------------------------------------
    @property
    def _step(self) -> int:
        """The stride of the legal sizes: the total down-sampling factor (``2**depth``)."""
        return 2**self.depth

    def _size_rule(self) -> str:
        """The legal-size rule in words, for error messages (subclasses may name their step's origin)."""
        if self.padding == "same":
            return f"a multiple of {self._step} (2**depth)"
        return f"a size the valid convolutions reduce evenly (smallest {self.min_input_size()})"

    def _bottom_min(self) -> int:
        c, s = self.shrink, self._step
        return max(1, math.ceil((c * (s - 1) + 1) / s))

    def _input_for_bottom(self, b: int) -> int:
        c, s = self.shrink, self._step
        return s * (b + c) + c * (s - 1)

    def _output_for_bottom(self, b: int) -> int:
        c, s = self.shrink, self._step
        return s * b - c * (s - 1)

    def min_input_size(self) -> int:
        """The smallest legal input size along one axis."""
        return self._step if self.padding == "same" else self._input_for_bottom(self._bottom_min())

    def is_legal_size(self, n: int) -> bool:
        """Whether ``n`` is a legal input size along one axis."""
        if self.padding == "same":
            return n >= self._step and n % self._step == 0
        c, s = self.shrink, self._step
        return n >= self.min_input_size() and (n - c * (s - 1)) % s == 0

    def legal_size(self, n: int, mode: str = "nearest") -> int:
        """A legal input size near ``n``: ``"floor"``, ``"ceil"`` or ``"nearest"`` (ties go up).

        >>> from unetkit import create_model
        >>> create_model("unet_paper").legal_size(570)
        572
        """
        lo_n, hi_n = self._neighbours(n)
        if mode == "floor":
            return lo_n if lo_n is not None else hi_n
        if mode == "ceil":
            return hi_n
        if mode != "nearest":
            raise ValueError(f"mode must be 'floor', 'ceil' or 'nearest', got {mode!r}")
        if lo_n is None or hi_n - n <= n - lo_n:
            return hi_n
        return lo_n

    def _neighbours(self, n: int) -> tuple[int | None, int]:
        """The largest legal size <= n (None if there is none) and the smallest legal size >= n."""
        if self.padding == "same":
            s = self._step
            floor, ceil = (n // s) * s, -(-n // s) * s
            return (floor if floor >= s else None), max(ceil, s)
        c, s = self.shrink, self._step
        b_lo = (n - c * (s - 1)) // s - c
        b_min = self._bottom_min()
        lo = self._input_for_bottom(b_lo) if b_lo >= b_min else None
        hi = self._input_for_bottom(max(b_lo + (0 if lo == n else 1), b_min))
        return lo, hi

    # ---- public shape contract -----------------------------------------------------------------------
    def check_input_shape(self, spatial: Sequence[int]) -> None:
        """Raise :class:`InputShapeError` naming the nearest legal sizes if ``spatial`` is not legal."""
        spatial = tuple(int(n) for n in spatial)
        if len(spatial) != self.spatial_dims:
            raise InputShapeError(
                f"this {self.spatial_dims}D network needs {self.spatial_dims} spatial axes, got shape "
                f"{spatial} ({len(spatial)} axes)"
            )
        bad = [(ax, n) for ax, n in enumerate(spatial) if not self.is_legal_size(n)]
        if not bad:
            return
        parts = []
        for ax, n in bad:
            lo, hi = self._neighbours(n)
            near = f"{lo} or {hi}" if lo is not None else f"{hi} (the smallest legal size)"
            parts.append(f"axis {ax}: {n} -> use {near}")
        raise InputShapeError(
            f"input size {spatial} is not legal for this {self.padding}-padded network of depth "
            f"{self.depth}: each size must be {self._size_rule()}; " + "; ".join(parts) + ". Pad or crop the image, or "
            "let the tiler pick the size (unetkit predict --tile)."
        )

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial output size for a legal spatial input size.

        >>> from unetkit import create_model
        >>> create_model("unet_paper").output_shape((572, 572))
        (388, 388)
        """
        self.check_input_shape(input_shape)
        if self.padding == "same":
            return tuple(int(n) for n in input_shape)
        c, s = self.shrink, self._step
        return tuple(self._output_for_bottom((int(n) - c * (s - 1)) // s - c) for n in input_shape)

    def input_shape_for(self, output_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial input size that yields exactly ``output_shape``.

        For ``same`` nets the output equals the input, so ``output_shape`` must itself be legal.

        >>> from unetkit import create_model
        >>> create_model("unet_paper").input_shape_for((388, 388))
        (572, 572)
        """
        if self.padding == "same":
            self.check_input_shape(output_shape)
            return tuple(int(n) for n in output_shape)
        c, s = self.shrink, self._step
        result = []
        for ax, n in enumerate(output_shape):
            b, rem = divmod(int(n) + c * (s - 1), s)
            if rem or b < self._bottom_min():
                ok = [self._output_for_bottom(bb) for bb in (max(b, self._bottom_min()), b + 1)]
                raise InputShapeError(
                    f"output size {n} on axis {ax} cannot be produced by this valid network; "
                    f"nearest producible sizes: {sorted(set(ok))}"
                )
            result.append(self._input_for_bottom(b))
        return tuple(result)

    def margin(self) -> int:
        """Pixels lost per side by a valid net (0 for same nets): ``(input - output) / 2``."""
        if self.padding == "same":
            return 0
        n = self.min_input_size()
        return (n - self.output_shape((n,) * self.spatial_dims)[0]) // 2

    def count_parameters(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise InputShapeError(
                f"expected a tensor of shape (B, {self.in_channels}, "
                f"{', '.join('S' + str(i) for i in range(self.spatial_dims))}), got {tuple(x.shape)}"
            )
        self.check_input_shape(x.shape[2:])
