"""Dimension-generic layer factories: one code path for 2D and 3D, keyed by ``spatial_dims``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

NORMS = ("none", "batch", "instance", "group")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "prelu")
UPSAMPLES = ("transpose", "nearest", "linear")


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


def conv(
    spatial_dims: int,
    in_ch: int,
    out_ch: int,
    kernel_size: int,
    padding: int = 0,
    stride: int = 1,
    bias: bool = True,
) -> nn.Module:
    """A ``Conv2d`` or ``Conv3d``."""
    _check_dims(spatial_dims)
    cls = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return cls(in_ch, out_ch, kernel_size, padding=padding, stride=stride, bias=bias)


def transposed_conv(spatial_dims: int, in_ch: int, out_ch: int) -> nn.Module:
    """The paper's 2x2 up-convolution (stride 2), doubling each spatial size."""
    _check_dims(spatial_dims)
    cls = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
    return cls(in_ch, out_ch, kernel_size=2, stride=2)


def linear_mode(spatial_dims: int) -> str:
    """The ``interpolate`` mode for linear resampling: ``bilinear`` (2D) or ``trilinear`` (3D)."""
    _check_dims(spatial_dims)
    return "bilinear" if spatial_dims == 2 else "trilinear"


def max_pool(spatial_dims: int) -> nn.Module:
    """2x2 (2x2x2) max-pooling with stride 2."""
    _check_dims(spatial_dims)
    return nn.MaxPool2d(2) if spatial_dims == 2 else nn.MaxPool3d(2)


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


def upsample(spatial_dims: int, mode: str, in_ch: int, out_ch: int) -> nn.Module:
    """Double the spatial size and map ``in_ch`` to ``out_ch`` channels.

    ``transpose`` is the paper's learned 2x2 up-convolution; ``nearest`` and ``linear`` interpolate, then
    apply a 1x1 convolution (no checkerboard artefacts, fewer parameters).
    """
    if mode == "transpose":
        return transposed_conv(spatial_dims, in_ch, out_ch)
    if mode in ("nearest", "linear"):
        interp = "nearest" if mode == "nearest" else linear_mode(spatial_dims)
        kwargs = {} if interp == "nearest" else {"align_corners": False}
        return nn.Sequential(nn.Upsample(scale_factor=2, mode=interp, **kwargs), conv(spatial_dims, in_ch, out_ch, 1))
    raise ValueError(f"upsample must be one of {UPSAMPLES}, got {mode!r}")
