"""The U-Net (Ronneberger et al., 2015), for 2D and 3D from one implementation.

Two options turn it into a variant, alone or together: ``block="residual"`` (Residual U-Net: residual
blocks at every level) and ``attention=True`` (Attention U-Net, Oktay et al. 2018: additive attention
gates on the skips). Both keep the shape contract, valid padding included.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unetkit.models import layers
from unetkit.models.base import PADDINGS, SegmentationModel
from unetkit.models.blocks import BLOCKS, Down, Up, conv_block


class UNet(SegmentationModel):
    """U-Net: contracting path, bridge, expanding path with skip connections, 1x1 head. Returns logits.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output channels (one logit per class; class 0 is background).
        depth: number of 2x2 max-poolings (the paper: 4).
        width: channels of the first level; they double at each level (the paper: 64 -> 1024).
        padding: ``"same"`` (zero-padded 3x3 convs, output size = input size) or ``"valid"`` (the
            paper's unpadded convs; the skips are centre-cropped and the output is smaller).
        norm: ``None``/``"none"``, ``"batch"``, ``"instance"`` or ``"group"`` after every conv.
        activation: ``relu`` (the paper), ``leaky_relu``, ``elu``, ``gelu``, ``silu`` or ``prelu``.
        dropout: channel dropout at the end of the contracting path (deepest level and bridge), as in
            the paper.
        upsample: ``"transpose"`` (the paper's 2x2 up-convolution) or ``"nearest"``/``"linear"``
            interpolation followed by a 1x1 convolution.
        block: ``"basic"`` (the paper's two conv-norm-act) or ``"residual"`` (conv-norm-act-conv-norm plus
            a shortcut, then act: the Residual U-Net).
        attention: gate each skip with an additive attention gate driven by the coarser decoder feature
            (the Attention U-Net).

    Shape:
        ``(B, in_channels, *S) -> (B, num_classes, *model.output_shape(S))``

    Examples:
        >>> import torch
        >>> net = UNet(2, in_channels=1, num_classes=2, depth=2, width=4)
        >>> net(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 2, 32, 32])
        >>> net3d = UNet(3, in_channels=1, num_classes=3, depth=2, width=4, padding="valid")
        >>> s = net3d.input_shape_for((4, 4, 4)); s
        (44, 44, 44)
        >>> net3d(torch.zeros(1, 1, *s)).shape
        torch.Size([1, 3, 4, 4, 4])
        >>> res = UNet(2, 1, 2, depth=2, width=4, padding="valid", block="residual", attention=True)
        >>> res(torch.zeros(1, 1, *res.input_shape_for((8, 8)))).shape
        torch.Size([1, 2, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        depth: int = 4,
        width: int = 64,
        padding: str = "same",
        norm: str | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
        upsample: str = "transpose",
        block: str = "basic",
        attention: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if depth < 1 or width < 1 or in_channels < 1 or num_classes < 1:
            raise ValueError("depth, width, in_channels and num_classes must all be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        norm = None if norm in (None, "none") else norm
        self.hparams = dict(
            spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, depth=depth,
            width=width, padding=padding, norm=norm, activation=activation, dropout=dropout,
            upsample=upsample, block=block, attention=bool(attention),
        )  # fmt: skip
        self.spatial_dims, self.in_channels, self.num_classes = spatial_dims, in_channels, num_classes
        self.depth, self.padding = depth, padding

        conv_kw: dict[str, Any] = dict(block=block, padding=padding, norm=norm, activation=activation)
        widths = [width * 2**i for i in range(depth + 1)]
        self.stem = conv_block(spatial_dims, in_channels, widths[0], **conv_kw)
        self.down = nn.ModuleList(Down(spatial_dims, widths[i], widths[i + 1], **conv_kw) for i in range(depth))
        # The paper's dropout sits at the end of the contracting path: after the deepest level and the bridge.
        self.drop_deep = layers.dropout(spatial_dims, dropout)
        self.drop_bridge = layers.dropout(spatial_dims, dropout)
        self.up = nn.ModuleList(
            Up(spatial_dims, widths[i + 1], widths[i], upsample=upsample, attention=attention, **conv_kw)
            for i in reversed(range(depth))
        )
        self.head = layers.conv(spatial_dims, widths[0], num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: He-normal weights (std sqrt(2/N)), zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        h, skips = self.stem(x), []
        for i, down in enumerate(self.down):
            if i == self.depth - 1:  # the deepest contracting level, as the paper's "drop4"
                h = self.drop_deep(h)
            skips.append(h)
            h = down(h)
        h = self.drop_bridge(h)
        for up in self.up:
            h = up(h, skips.pop())
        return self.head(h)
