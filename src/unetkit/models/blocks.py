"""The U-Net's named parts: a double convolution (or residual block), a contracting and an expanding step."""

from __future__ import annotations

import torch
from torch import nn

from unetkit.models import layers
from unetkit.models.attention import AttentionGate

BLOCKS = ("basic", "residual")


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

    ``kernel_size`` may be another odd size, or one per axis (e.g. ``(1, 3, 3)`` for anisotropic volumes).
    With ``padding="valid"`` each convolution trims ``(k - 1) / 2`` pixels per side (the paper's unpadded
    convs: one).

    Shape:
        ``(B, in_ch, *S) -> (B, out_ch, *S')`` with ``S' = S - 2 * (k - 1)`` (valid) or ``S' = S`` (same).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_ch: int,
        out_ch: int,
        padding: str = "same",
        norm: str | None = None,
        activation: str = "relu",
        kernel_size: layers.Size = 3,
    ) -> None:
        pad = layers.same_padding(kernel_size) if padding == "same" else 0
        parts: list[nn.Module] = []
        for c_in in (in_ch, out_ch):
            parts += [
                layers.conv(spatial_dims, c_in, out_ch, kernel_size, padding=pad),
                layers.norm(norm, spatial_dims, out_ch),
                layers.activation(activation),
            ]
        super().__init__(*(p for p in parts if not isinstance(p, nn.Identity)))


class ResidualBlock(nn.Module):
    """conv-norm-act-conv-norm, plus a shortcut, then the activation (He et al. 2016, as in ResUNet).

    The shortcut is a 1x1 convolution (+ norm) when the channel count changes, the identity otherwise; with
    ``padding="valid"`` it is centre-cropped to the trimmed size, so the block keeps the shape contract of
    :class:`DoubleConv`.

    Shape:
        ``(B, in_ch, *S) -> (B, out_ch, *S')`` with ``S' = S - 2 * (k - 1)`` (valid) or ``S' = S`` (same).

    Examples:
        >>> import torch
        >>> ResidualBlock(2, 1, 4, padding="valid")(torch.zeros(1, 1, 12, 12)).shape
        torch.Size([1, 4, 8, 8])
        >>> ResidualBlock(3, 4, 4, norm="instance")(torch.zeros(1, 4, 8, 8, 8)).shape
        torch.Size([1, 4, 8, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_ch: int,
        out_ch: int,
        padding: str = "same",
        norm: str | None = None,
        activation: str = "relu",
        kernel_size: layers.Size = 3,
    ) -> None:
        super().__init__()
        pad = layers.same_padding(kernel_size) if padding == "same" else 0
        self.conv1 = layers.conv(spatial_dims, in_ch, out_ch, kernel_size, padding=pad)
        self.norm1 = layers.norm(norm, spatial_dims, out_ch)
        self.act1 = layers.activation(activation)
        self.conv2 = layers.conv(spatial_dims, out_ch, out_ch, kernel_size, padding=pad)
        self.norm2 = layers.norm(norm, spatial_dims, out_ch)
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_ch == out_ch
            else nn.Sequential(layers.conv(spatial_dims, in_ch, out_ch, 1), layers.norm(norm, spatial_dims, out_ch))
        )
        self.act = layers.activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if x.shape[2:] != h.shape[2:]:
            x = center_crop(x, h.shape[2:])
        return self.act(h + self.shortcut(x))


def conv_block(
    spatial_dims: int,
    in_ch: int,
    out_ch: int,
    block: str = "basic",
    padding: str = "same",
    norm: str | None = None,
    activation: str = "relu",
    kernel_size: layers.Size = 3,
) -> nn.Module:
    """The two-convolution block of one level: ``basic`` (:class:`DoubleConv`) or ``residual``.

    Shape:
        ``(B, in_ch, *S) -> (B, out_ch, *S')`` with ``S' = S - 2 * (k - 1)`` (valid) or ``S' = S`` (same).
    """
    kw = dict(padding=padding, norm=norm, activation=activation, kernel_size=kernel_size)
    if block == "basic":
        return DoubleConv(spatial_dims, in_ch, out_ch, **kw)  # type: ignore[arg-type]
    if block == "residual":
        return ResidualBlock(spatial_dims, in_ch, out_ch, **kw)  # type: ignore[arg-type]
    raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")


class Down(nn.Sequential):
    """One contracting step: 2x2 max-pool (or ``pool``, per axis), then a two-convolution block with more channels.

    Shape:
        ``(B, in_ch, *S) -> (B, out_ch, *S')`` with ``S' = S / pool`` less the block's loss.
    """

    def __init__(
        self, spatial_dims: int, in_ch: int, out_ch: int, pool: layers.Size = 2, **conv_kwargs: object
    ) -> None:
        super().__init__(
            layers.max_pool(spatial_dims, pool),
            conv_block(spatial_dims, in_ch, out_ch, **conv_kwargs),  # type: ignore[arg-type]
        )


class Up(nn.Module):
    """One expanding step: upsample, (gate and) concatenate the (cropped) skip, two-convolution block.

    Args:
        spatial_dims: 2 or 3.
        in_ch: channels of the coarse input.
        out_ch: channels of the output.
        upsample: see :func:`unetkit.models.layers.upsample`.
        skip_ch: channels of the skip; the up-sampling maps ``in_ch`` to it (default ``in_ch // 2``).
        attention: gate the skip with an :class:`~unetkit.models.attention.AttentionGate` driven by the
            coarse input (Attention U-Net).
        scale: the up-sampling factor, one or per axis: the pool size of this level (default 2).
        **conv_kwargs: ``block``, ``padding``, ``norm``, ``activation``, ``kernel_size`` of :func:`conv_block`.

    Shape:
        ``x (B, in_ch, *S)``, ``skip (B, skip_ch, *S_skip)`` -> ``(B, out_ch, *S_out)``, ``S_out`` being
        ``S * scale`` less the block's loss.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_ch: int,
        out_ch: int,
        upsample: str = "transpose",
        skip_ch: int | None = None,
        attention: bool = False,
        scale: layers.Size = 2,
        **conv_kwargs: object,
    ) -> None:
        super().__init__()
        skip_ch = in_ch // 2 if skip_ch is None else skip_ch
        self.up = layers.upsample(spatial_dims, upsample, in_ch, skip_ch, scale)
        self.gate = AttentionGate(spatial_dims, skip_ch, in_ch, stride=scale) if attention else None
        self.conv = conv_block(spatial_dims, skip_ch * 2, out_ch, **conv_kwargs)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        g, x = x, self.up(x)
        if skip.shape[2:] != x.shape[2:]:
            skip = center_crop(skip, x.shape[2:])
        if self.gate is not None:
            skip = self.gate(skip, g)
        return self.conv(torch.cat([skip, x], dim=1))
