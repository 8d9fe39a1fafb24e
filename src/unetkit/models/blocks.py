"""The U-Net's named parts: a double convolution, a contracting step and an expanding step."""

from __future__ import annotations

import torch
from torch import nn

from unetkit.models import layers


def center_crop(x: torch.Tensor, spatial: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Crop the trailing spatial axes of ``x`` to ``spatial``, keeping the centre.

    Shape:
        ``(B, C, *S_in) -> (B, C, *spatial)``
    """
    slices = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], spatial, strict=True):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return x[tuple(slices)]


class DoubleConv(nn.Sequential):
    """Two 3x3 (3x3x3) convolutions, each followed by optional norm and the activation.

    With ``padding="valid"`` each convolution trims one pixel per side (the paper's unpadded convs).

    Shape:
        ``(B, in_ch, *S) -> (B, out_ch, *S')`` with ``S' = S - 4`` (valid) or ``S' = S`` (same).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_ch: int,
        out_ch: int,
        padding: str = "same",
        norm: str | None = None,
        activation: str = "relu",
    ) -> None:
        pad = 1 if padding == "same" else 0
        parts: list[nn.Module] = []
        for c_in in (in_ch, out_ch):
            parts += [
                layers.conv(spatial_dims, c_in, out_ch, 3, padding=pad),
                layers.norm(norm, spatial_dims, out_ch),
                layers.activation(activation),
            ]
        super().__init__(*(p for p in parts if not isinstance(p, nn.Identity)))


class Down(nn.Sequential):
    """One contracting step: 2x2 max-pool, then a double convolution with more channels."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, **conv_kwargs: object) -> None:
        super().__init__(
            layers.max_pool(spatial_dims),
            DoubleConv(spatial_dims, in_ch, out_ch, **conv_kwargs),  # type: ignore[arg-type]
        )


class Up(nn.Module):
    """One expanding step: upsample halving channels, concatenate the (cropped) skip, double conv.

    Shape:
        ``x (B, in_ch, *S)``, ``skip (B, in_ch // 2, *S_skip)`` -> ``(B, out_ch, *S_out)``
    """

    def __init__(
        self, spatial_dims: int, in_ch: int, out_ch: int, upsample: str = "transpose", **conv_kwargs: object
    ) -> None:
        super().__init__()
        self.up = layers.upsample(spatial_dims, upsample, in_ch, in_ch // 2)
        self.conv = DoubleConv(spatial_dims, in_ch // 2 * 2, out_ch, **conv_kwargs)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if skip.shape[2:] != x.shape[2:]:
            skip = center_crop(skip, x.shape[2:])
        return self.conv(torch.cat([skip, x], dim=1))
