"""Dimension-generic layer factories: one code path for 2D and 3D, keyed by ``spatial_dims``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

NORMS = ("none", "batch", "instance", "group")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "prelu")
UPSAMPLES = ("transpose", "nearest", "linear")
#: Weight initialisations of the U-Nets: the paper's He-normal, or PyTorch's layer default (see ``UNet``).
INITS = ("he", "pytorch")

#: a size given once for every axis, or one per axis
Size = int | Sequence[int]


def squeeze(size: Size) -> int | tuple[int, ...]:
    """One int when every axis agrees, else the per-axis tuple (so defaults build exactly today's layers).

    >>> squeeze((2, 2)), squeeze((1, 2, 2)), squeeze(3)
    (2, (1, 2, 2), 3)
    """
    if isinstance(size, int):
        return size
    sizes = tuple(int(s) for s in size)
    return sizes[0] if len(set(sizes)) == 1 else sizes


def has_values(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds values to initialise: not on PyTorch's ``meta`` device.

    A model file's shape check builds its network on ``meta`` (:func:`unetkit.modelfile.load_model`); random
    initialisation there would be thrown away and PyTorch's first random op on ``meta`` costs about a second
    of start-up (it loads its Python decompositions), so initialisers skip such tensors.
    """
    return not tensor.is_meta


def same_padding(kernel_size: Size) -> int | tuple[int, ...]:
    """The zero padding that keeps the size for an odd kernel: ``(k - 1) // 2`` per axis."""
    k = squeeze(kernel_size)
    return (k - 1) // 2 if isinstance(k, int) else tuple((s - 1) // 2 for s in k)


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


def conv(
    spatial_dims: int,
    in_ch: int,
    out_ch: int,
    kernel_size: Size,
    padding: Size = 0,
    stride: Size = 1,
    bias: bool = True,
) -> nn.Module:
    """A ``Conv2d`` or ``Conv3d``; sizes are one int or one per axis."""
    _check_dims(spatial_dims)
    cls: Any = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return cls(in_ch, out_ch, squeeze(kernel_size), padding=squeeze(padding), stride=squeeze(stride), bias=bias)


def transposed_conv(spatial_dims: int, in_ch: int, out_ch: int, scale: Size = 2) -> nn.Module:
    """The paper's 2x2 up-convolution (stride 2), or ``scale``-sized with stride ``scale`` (per axis)."""
    _check_dims(spatial_dims)
    cls: Any = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
    return cls(in_ch, out_ch, kernel_size=squeeze(scale), stride=squeeze(scale))


def linear_mode(spatial_dims: int) -> str:
    """The ``interpolate`` mode for linear resampling: ``bilinear`` (2D) or ``trilinear`` (3D)."""
    _check_dims(spatial_dims)
    return "bilinear" if spatial_dims == 2 else "trilinear"


def max_pool(spatial_dims: int, size: Size = 2) -> nn.Module:
    """2x2 (2x2x2) max-pooling with stride 2, or ``size`` (per axis) with stride ``size``."""
    _check_dims(spatial_dims)
    k = squeeze(size)
    return nn.MaxPool2d(k) if spatial_dims == 2 else nn.MaxPool3d(k)


def dropout(spatial_dims: int, p: float) -> nn.Module:
    """Channel-wise dropout (whole feature maps), or identity when ``p == 0``."""
    if p <= 0:
        return nn.Identity()
    return nn.Dropout2d(p) if spatial_dims == 2 else nn.Dropout3d(p)


def norm(kind: str | None, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation layer: ``none``, ``batch``, ``instance`` (affine) or ``group`` (up to 8 groups)."""
    kind = (kind or "none").lower()
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels) if spatial_dims == 2 else nn.BatchNorm3d(channels)
    if kind == "instance":
        cls = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
        return cls(channels, affine=True)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


_ACT: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
    "prelu": nn.PReLU,
}


def activation(name: str) -> nn.Module:
    """An activation module by name (see ``ACTIVATIONS``)."""
    try:
        return _ACT[name.lower()]()
    except KeyError:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}") from None


def upsample(spatial_dims: int, mode: str, in_ch: int, out_ch: int, scale: Size = 2) -> nn.Module:
    """Multiply the spatial size by ``scale`` (2, or one factor per axis) and map ``in_ch`` to ``out_ch`` channels.

    ``transpose`` is the paper's learned 2x2 up-convolution; ``nearest`` and ``linear`` interpolate, then
    apply a 1x1 convolution (no checkerboard artefacts, fewer parameters).
    """
    if mode == "transpose":
        return transposed_conv(spatial_dims, in_ch, out_ch, scale)
    if mode in ("nearest", "linear"):
        interp = "nearest" if mode == "nearest" else linear_mode(spatial_dims)
        kwargs = {} if interp == "nearest" else {"align_corners": False}
        s = squeeze(scale)
        factor: float | tuple[float, ...] = float(s) if isinstance(s, int) else tuple(float(f) for f in s)
        return nn.Sequential(
            nn.Upsample(scale_factor=factor, mode=interp, **kwargs), conv(spatial_dims, in_ch, out_ch, 1)
        )
    raise ValueError(f"upsample must be one of {UPSAMPLES}, got {mode!r}")
