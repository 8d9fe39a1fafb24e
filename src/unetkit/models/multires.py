"""MultiResUNet (Ibtehaz & Rahman 2020): MultiRes blocks in place of the double convolutions, Res paths on the skips.

A MultiRes block chains three 3x3 convolutions (their receptive fields are 3x3, 5x5 and 7x7), concatenates
the three outputs and adds a 1x1 residual; a Res path sends each skip through a chain of residual 3x3 convs
(4, 3, 2, 1 of them from the top level for depth 4) to narrow the semantic gap to the decoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from unetkit.models import layers
from unetkit.models.base import SegmentationModel
from unetkit.models.registry import register_class, register_preset
from unetkit.shapes import ShapeContract


def _conv_norm_act(
    spatial_dims: int, in_ch: int, out_ch: int, kernel: int, norm: str | None, activation: str | None
) -> nn.Sequential:
    """Convolution (no bias when a norm follows, as in the paper), norm, optional activation."""
    parts = [
        layers.conv(spatial_dims, in_ch, out_ch, kernel, padding=kernel // 2, bias=norm is None),
        layers.norm(norm, spatial_dims, out_ch),
        layers.activation(activation) if activation else nn.Identity(),
    ]
    return nn.Sequential(*(p for p in parts if not isinstance(p, nn.Identity)))


class MultiResBlock(nn.Module):
    """Three chained 3x3 convs (3x3, 5x5, 7x7 receptive fields) concatenated, plus a 1x1 residual.

    With ``W = alpha * u`` the three convs have ``int(0.167 W)``, ``int(0.333 W)`` and ``int(0.5 W)``
    channels (the paper's 1/6, 1/3, 1/2, with its reference code's factors), each at least 1;
    ``out_channels`` is their sum.

    Shape:
        ``(B, in_ch, *S) -> (B, out_channels, *S)``

    Examples:
        >>> import torch
        >>> b = MultiResBlock(2, 1, u=32); b.out_channels
        51
        >>> b(torch.zeros(1, 1, 8, 8)).shape
        torch.Size([1, 51, 8, 8])
        >>> MultiResBlock(3, 4, u=4, norm="instance")(torch.zeros(1, 4, 4, 4, 4)).shape
        torch.Size([1, 6, 4, 4, 4])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_ch: int,
        u: int,
        alpha: float = 1.67,
        norm: str | None = "batch",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        w = alpha * u
        c3, c5, c7 = (max(1, int(w * f)) for f in (0.167, 0.333, 0.5))
        self.out_channels = c3 + c5 + c7
        self.shortcut = _conv_norm_act(spatial_dims, in_ch, self.out_channels, 1, norm, None)
        self.conv3 = _conv_norm_act(spatial_dims, in_ch, c3, 3, norm, activation)
        self.conv5 = _conv_norm_act(spatial_dims, c3, c5, 3, norm, activation)
        self.conv7 = _conv_norm_act(spatial_dims, c5, c7, 3, norm, activation)
        self.norm_cat = layers.norm(norm, spatial_dims, self.out_channels)
        self.act = layers.activation(activation)
        self.norm_out = layers.norm(norm, spatial_dims, self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv3(x)
        b = self.conv5(a)
        c = self.conv7(b)
        h = self.norm_cat(torch.cat([a, b, c], dim=1)) + self.shortcut(x)
        return self.norm_out(self.act(h))


class ResPath(nn.Sequential):
    """``length`` residual units (3x3 conv-norm-act plus a 1x1 conv-norm shortcut, act, norm) on a skip.

    Shape:
        ``(B, in_ch, *S) -> (B, out_ch, *S)``
    """

    def __init__(
        self,
        spatial_dims: int,
        in_ch: int,
        out_ch: int,
        length: int,
        norm: str | None = "batch",
        activation: str = "relu",
    ) -> None:
        super().__init__(
            *(
                _ResUnit(spatial_dims, in_ch if i == 0 else out_ch, out_ch, norm, activation)
                for i in range(max(1, length))
            )
        )


class _ResUnit(nn.Module):
    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, norm: str | None, activation: str) -> None:
        super().__init__()
        self.shortcut = _conv_norm_act(spatial_dims, in_ch, out_ch, 1, norm, None)
        self.conv = _conv_norm_act(spatial_dims, in_ch, out_ch, 3, norm, activation)
        self.act = layers.activation(activation)
        self.norm = layers.norm(norm, spatial_dims, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.conv(x) + self.shortcut(x)))


class MultiResUNet(SegmentationModel):
    """MultiResUNet: MultiRes blocks at every level, Res paths of length ``depth - level`` on the skips.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output channels (logits).
        depth: number of 2x2 max-poolings (the paper: 4).
        width: ``U`` of the first level, doubling per level (the paper: 32 -> 512).
        alpha: the width multiplier ``W = alpha * U`` (the paper: 1.67).
        padding: only ``"same"`` (the blocks chain padded convolutions).
        norm: normalisation after every convolution (the paper: ``"batch"``).
        activation: the activation (the paper: ``relu``).
        upsample: ``"transpose"`` (the paper) or ``"nearest"``/``"linear"`` + 1x1 convolution.

    Shape:
        ``(B, in_channels, *S) -> (B, num_classes, *S)``, each ``S`` a multiple of ``2**depth``.

    Examples:
        >>> import torch
        >>> net = MultiResUNet(2, 1, 2, depth=2, width=4)
        >>> net(torch.zeros(1, 1, 16, 16)).shape
        torch.Size([1, 2, 16, 16])
        >>> MultiResUNet(3, 1, 3, depth=2, width=4, norm="instance")(torch.zeros(1, 1, 8, 8, 8)).shape
        torch.Size([1, 3, 8, 8, 8])
    """

    paddings: ClassVar[tuple[str, ...]] = ("same",)
    same_only_reason: ClassVar[str] = "its MultiRes blocks chain padded convolutions"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        depth: int = 4,
        width: int = 32,
        alpha: float = 1.67,
        padding: str = "same",
        norm: str | None = "batch",
        activation: str = "relu",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()  # SegmentationModel checks and records the arguments (hparams, contract)
        norm = None if norm in (None, "none") else norm
        self.spatial_dims, self.in_channels, self.num_classes = spatial_dims, in_channels, num_classes
        self.depth, self.padding = depth, padding

        kw: dict[str, Any] = dict(norm=norm, activation=activation)
        us = [width * 2**i for i in range(depth + 1)]
        self.pool = layers.max_pool(spatial_dims)
        self.encoder = nn.ModuleList()
        ch = in_channels
        enc_channels = []
        for u in us:
            block = MultiResBlock(spatial_dims, ch, u, alpha, **kw)
            self.encoder.append(block)
            ch = block.out_channels
            enc_channels.append(ch)
        self.res_paths = nn.ModuleList(
            ResPath(spatial_dims, enc_channels[i], us[i], depth - i, **kw) for i in range(depth)
        )
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(depth)):
            self.up.append(layers.upsample(spatial_dims, upsample, ch, us[i]))
            block = MultiResBlock(spatial_dims, 2 * us[i], us[i], alpha, **kw)
            self.decoder.append(block)
            ch = block.out_channels
        self.head = layers.conv(spatial_dims, ch, num_classes, 1)

    @classmethod
    def check_arguments(cls, args: Mapping[str, Any]) -> None:
        super().check_arguments(args)
        alpha = {**MultiResUNet.constructor_defaults(), **args}["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0:
            raise ValueError(f"alpha must be a number > 0, got {alpha!r}")

    @classmethod
    def _build_contract(cls, args: Mapping[str, Any]) -> ShapeContract:
        """Isotropic: 2x2 poolings, padded convolutions."""
        a = {**MultiResUNet.constructor_defaults(), **args}
        return ShapeContract.unet(a["spatial_dims"], a["depth"], "same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        skips = []
        h = x
        for i, block in enumerate(self.encoder):
            h = block(h if i == 0 else self.pool(h))
            if i < self.depth:
                skips.append(self.res_paths[i](h))
        for up, block in zip(self.up, self.decoder, strict=True):
            h = block(torch.cat([up(h), skips.pop()], dim=1))
        return self.head(h)


register_class(MultiResUNet)
register_preset(
    "multires_unet2d_small", MultiResUNet, "MultiResUNet 2D (Ibtehaz 2020): same, depth 3, U=16, alpha 1.67, batch",
    spatial_dims=2, in_channels=1, num_classes=2, depth=3, width=16, alpha=1.67, norm="batch",
)  # fmt: skip
