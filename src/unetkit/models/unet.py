"""The U-Net (Ronneberger et al., 2015), for 2D and 3D from one implementation.

Two options turn it into a variant, alone or together: ``block="residual"`` (Residual U-Net: residual
blocks at every level) and ``attention=True`` (Attention U-Net, Oktay et al. 2018: additive attention
gates on the skips). Both keep the shape contract, valid padding included.

Per-level, per-axis ``pool_sizes`` and ``kernel_sizes`` make anisotropic networks (as nnU-Net plans for
volumes whose slices are thicker than their pixels are wide: ``1x3x3`` kernels and ``(1, 2, 2)`` pools at
the top levels), and ``max_width`` caps the channel count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from unetkit.models import layers
from unetkit.models.base import SegmentationModel
from unetkit.models.blocks import Down, Up, center_crop, conv_block
from unetkit.shapes import ShapeContract, per_level


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
        pool_sizes: the pooling of each level ``0 .. depth-1`` (``depth`` entries), each an int or one per
            axis, e.g. ``[(1, 2, 2), (1, 2, 2), 2]``; the up-sampling back to that level uses the same factor
            (and the attention gate's ``W_x`` the same stride). Default 2 everywhere (the paper).
        kernel_sizes: the convolution kernel of each level and the bridge (``depth + 1`` entries), each an odd
            int or one per axis, e.g. ``[(1, 3, 3), 3, 3]``; a level's decoder block uses that level's kernel.
            Default 3 everywhere (the paper).
        max_width: cap on the channel count (nnU-Net caps at 320 in 3D, 512 in 2D): level ``i`` has
            ``min(width * 2**i, max_width)`` channels. Default: no cap.
        init: ``"he"`` (the paper's: He-normal weights, std ``sqrt(2/N)``, zero biases) or ``"pytorch"``
            (PyTorch's layer default: weights and biases uniform within ``+-1/sqrt(fan_in)``, a 2.4x smaller
            std). The planner picks ``pytorch`` for restoration, where it trains measurably faster
            (docs/restoration.md), and keeps the paper's for segmentation.
        residual_input: add the input to the head's output, so the network learns the correction to its
            input (CSBDeep's CARE default for restoration); needs ``in_channels == num_classes``. With
            ``"valid"`` padding the input's centre, cropped to the output, is added.

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
        >>> aniso = UNet(3, 1, 2, depth=2, width=4, pool_sizes=[(1, 2, 2), 2], kernel_sizes=[(1, 3, 3), 3, 3])
        >>> aniso.contract.steps(), aniso(torch.zeros(1, 1, 6, 16, 16)).shape
        ((2, 4, 4), torch.Size([1, 2, 6, 16, 16]))
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
        pool_sizes: Sequence[int | Sequence[int]] | None = None,
        kernel_sizes: Sequence[int | Sequence[int]] | None = None,
        max_width: int | None = None,
        init: str = "he",
        residual_input: bool = False,
    ) -> None:
        super().__init__()  # SegmentationModel checks and records the arguments (hparams, contract)
        norm = None if norm in (None, "none") else norm
        self.spatial_dims, self.in_channels, self.num_classes = spatial_dims, in_channels, num_classes
        self.depth, self.padding = depth, padding
        pools = per_level(pool_sizes, depth, spatial_dims, 2, "pool_sizes")
        kernels = per_level(kernel_sizes, depth + 1, spatial_dims, 3, "kernel_sizes", odd=True)
        widths = self.level_widths(width, depth, max_width)

        conv_kw: dict[str, Any] = dict(block=block, padding=padding, norm=norm, activation=activation)
        self.stem = conv_block(spatial_dims, in_channels, widths[0], kernel_size=kernels[0], **conv_kw)
        self.down = nn.ModuleList(
            Down(spatial_dims, widths[i], widths[i + 1], pool=pools[i], kernel_size=kernels[i + 1], **conv_kw)
            for i in range(depth)
        )
        # The paper's dropout sits at the end of the contracting path: after the deepest level and the bridge.
        self.drop_deep = layers.dropout(spatial_dims, dropout)
        self.drop_bridge = layers.dropout(spatial_dims, dropout)
        up_kw: dict[str, Any] = dict(upsample=upsample, attention=attention, **conv_kw)
        self.up = nn.ModuleList(
            Up(
                spatial_dims,
                widths[i + 1],
                widths[i],
                skip_ch=widths[i],
                scale=pools[i],
                kernel_size=kernels[i],
                **up_kw,
            )
            for i in reversed(range(depth))
        )
        self.head = layers.conv(spatial_dims, widths[0], num_classes, 1)
        self.init = init
        self.residual_input = residual_input
        self.reset_parameters()

    @staticmethod
    def level_widths(width: int, depth: int, max_width: int | None = None) -> list[int]:
        """The channels of levels ``0 .. depth`` (the last is the bridge): doubling, capped at ``max_width``.

        >> UNet.level_widths(32, 5, max_width=320)
        [32, 64, 128, 256, 320, 320]
        """
        return [width * 2**i if max_width is None else min(width * 2**i, max_width) for i in range(depth + 1)]

    @classmethod
    def check_arguments(cls, args: Mapping[str, Any]) -> None:
        super().check_arguments(args)
        a = {**UNet.constructor_defaults(), **args}
        max_width, width = a["max_width"], a["width"]
        if max_width is not None and (
            isinstance(max_width, bool) or not isinstance(max_width, int) or max_width < width
        ):
            raise ValueError(f"max_width must be None or an integer >= width ({width}), got {max_width!r}")
        cls._build_contract(a)  # pool_sizes and kernel_sizes: the right number of valid entries
        if a["residual_input"] and a["in_channels"] != a["num_classes"]:
            raise ValueError(
                f"residual_input adds the input to the output, so in_channels ({a['in_channels']}) must equal "
                f"num_classes ({a['num_classes']}); drop residual_input"
            )

    @classmethod
    def _build_contract(cls, args: Mapping[str, Any]) -> ShapeContract:
        a = {**UNet.constructor_defaults(), **args}
        return ShapeContract.unet(a["spatial_dims"], a["depth"], a["padding"], a["pool_sizes"], a["kernel_sizes"])

    def reset_parameters(self) -> None:
        """Initialise every convolution as ``init`` says: ``he``, the paper's (He-normal weights, std
        ``sqrt(2/N)``, zero biases), or ``pytorch``, the layer's own default (uniform within ``1/sqrt(fan_in)``)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d) and layers.has_values(
                m.weight
            ):
                if self.init == "pytorch":
                    m.reset_parameters()
                    continue
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
        out = self.head(h)
        if self.residual_input:
            out = out + center_crop(x, out.shape[2:])
        return out
