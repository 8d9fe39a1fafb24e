"""UNETR (Hatamizadeh et al. 2022): a ViT encoder on image patches and a CNN decoder with skip connections.

The transformer's outputs of layers ``L/4, L/2, 3L/4`` (3, 6, 9 for 12 layers) are reshaped to the patch
grid and brought up to 1/8, 1/4 and 1/2 resolution by chains of deconvolution blocks (2x deconv, 3x3 conv,
norm, act); the last layer's output is the bottom of the decoder, which upsamples it step by step (2x
deconv, concatenation, two 3x3 convs) back to the input resolution, where a conv block on the image is
the last skip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from unetkit.models import layers
from unetkit.models.base import SegmentationModel
from unetkit.models.blocks import Up, conv_block
from unetkit.models.registry import register_class, register_preset
from unetkit.models.vit import ViT
from unetkit.shapes import ShapeContract


def deconv_block(spatial_dims: int, in_ch: int, out_ch: int, norm: str | None, activation: str) -> nn.Sequential:
    """UNETR's blue block: 2x transposed convolution, 3x3 convolution, norm, activation.

    Shape:
        ``(B, in_ch, *S) -> (B, out_ch, *2S)``
    """
    parts = [
        layers.transposed_conv(spatial_dims, in_ch, out_ch),
        layers.conv(spatial_dims, out_ch, out_ch, 3, padding=1),
        layers.norm(norm, spatial_dims, out_ch),
        layers.activation(activation),
    ]
    return nn.Sequential(*(p for p in parts if not isinstance(p, nn.Identity)))


class UNETR(SegmentationModel):
    """UNETR: ViT encoder on ``patch_size`` patches, skips from 4 evenly spaced layers, CNN decoder.

    Legal input sizes are the multiples of ``patch_size`` (a power of two; ``depth = log2(patch_size)``
    is the number of 2x up-samplings in the decoder). Position embeddings are learnt for ``img_size`` and
    resampled linearly for any other legal size, so tiling with any legal tile works.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output channels (logits).
        img_size: the reference input size (int or one per axis) the position embeddings are learnt for
            (the paper: 96 in 3D); each a multiple of ``patch_size``.
        patch_size: the patch edge (the paper: 16).
        hidden_size: the transformer width (the paper: 768).
        mlp_dim: the transformer MLP width (the paper: 3072).
        num_layers: transformer layers (the paper: 12); at least ``log2(patch_size)``.
        num_heads: attention heads (the paper: 12); must divide ``hidden_size``.
        width: the decoder's feature size at full resolution, doubling per level (the paper: 16).
        norm: normalisation in the CNN blocks (the paper: ``"batch"``).
        activation: activation in the CNN blocks (the paper: ``relu``).
        block: the decoder's conv blocks, ``"basic"`` (the paper) or ``"residual"``.
        dropout: dropout in the transformer (attention and MLP).
        padding: only ``"same"``.

    Shape:
        ``(B, in_channels, *S) -> (B, num_classes, *S)``, each ``S`` a multiple of ``patch_size``.

    Examples:
        >>> import torch
        >>> net = UNETR(2, 1, 2, img_size=32, patch_size=8, hidden_size=16, mlp_dim=32, num_layers=3,
        ...             num_heads=2, width=4)
        >>> net(torch.zeros(1, 1, 32, 48)).shape
        torch.Size([1, 2, 32, 48])
        >>> net.legal_size(50)
        48
        >>> UNETR(3, 1, 2, 16, 8, 16, 32, 3, 2, width=2)(torch.zeros(1, 1, 16, 16, 8)).shape
        torch.Size([1, 2, 16, 16, 8])
    """

    paddings: ClassVar[tuple[str, ...]] = ("same",)
    same_only_reason: ClassVar[str] = "its encoder works on whole patches"
    positive_ints: ClassVar[tuple[str, ...]] = (
        "in_channels", "num_classes", "width", "hidden_size", "mlp_dim", "num_layers", "num_heads",
    )  # fmt: skip

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        img_size: int | Sequence[int] = 96,
        patch_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        width: int = 16,
        norm: str | None = "batch",
        activation: str = "relu",
        block: str = "basic",
        dropout: float = 0.0,
        padding: str = "same",
    ) -> None:
        super().__init__()  # SegmentationModel checks and records the arguments (hparams, contract)
        depth = patch_size.bit_length() - 1
        sizes = [img_size] * spatial_dims if isinstance(img_size, int) else [int(s) for s in img_size]
        norm = None if norm in (None, "none") else norm
        self.spatial_dims, self.in_channels, self.num_classes = spatial_dims, in_channels, num_classes
        self.depth, self.padding, self.patch_size, self.hidden_size = depth, padding, patch_size, hidden_size
        #: 1-based transformer layers feeding the skips of levels 1 .. depth-1 (3, 6, 9 for 12 layers, depth 4)
        self.skip_layers = [num_layers * k // depth for k in range(1, depth)]

        self.vit = ViT(
            spatial_dims, in_channels, sizes, patch_size, hidden_size, mlp_dim, num_layers, num_heads, dropout
        )
        conv_kw: dict[str, Any] = dict(block=block, padding="same", norm=norm, activation=activation)
        widths = [width * 2**k for k in range(depth)]
        self.stem = conv_block(spatial_dims, in_channels, widths[0], **conv_kw)
        # level k's skip: depth - k deconv blocks from the patch grid (1/2**depth) up to 1/2**k resolution
        self.skip_paths = nn.ModuleList(
            nn.Sequential(
                *(
                    deconv_block(spatial_dims, hidden_size if j == 0 else widths[k], widths[k], norm, activation)
                    for j in range(depth - k)
                )
            )
            for k in range(1, depth)
        )
        self.up = nn.ModuleList(
            Up(spatial_dims, hidden_size if k == depth - 1 else widths[k + 1], widths[k], skip_ch=widths[k], **conv_kw)
            for k in reversed(range(depth))
        )
        self.head = layers.conv(spatial_dims, widths[0], num_classes, 1)

    @classmethod
    def check_arguments(cls, args: Mapping[str, Any]) -> None:
        super().check_arguments(args)
        args = {**UNETR.constructor_defaults(), **args}
        patch_size, img_size, dims = args["patch_size"], args["img_size"], args["spatial_dims"]
        if not isinstance(patch_size, int) or patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"patch_size must be a power of two >= 2, got {patch_size}")
        sizes = [img_size] * dims if isinstance(img_size, int) else list(img_size)
        if len(sizes) != dims or any(not isinstance(s, int) or s < patch_size or s % patch_size for s in sizes):
            raise ValueError(
                f"img_size {img_size} must give {dims} sizes, each a multiple of patch_size ({patch_size})"
            )
        depth = patch_size.bit_length() - 1
        if args["num_layers"] < depth:
            raise ValueError(
                f"num_layers ({args['num_layers']}) must be >= log2(patch_size) ({depth}): one skip per level"
            )  # fmt: skip
        if args["hidden_size"] % args["num_heads"]:
            raise ValueError(
                f"hidden_size ({args['hidden_size']}) must be divisible by num_heads ({args['num_heads']})"
            )  # fmt: skip

    @classmethod
    def _build_contract(cls, args: Mapping[str, Any]) -> ShapeContract:
        """Isotropic: multiples of the patch size, as ``log2(patch_size)`` 2x levels (the decoder's)."""
        args = {**UNETR.constructor_defaults(), **args}
        depth = args["patch_size"].bit_length() - 1
        return ShapeContract.unet(args["spatial_dims"], depth, "same", step_origin="the patch size")

    def _tokens_to_grid(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.hidden_size, *grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        grid = [s // self.patch_size for s in x.shape[2:]]
        hidden = self.vit(x)
        skips = [self.stem(x)]
        for layer, path in zip(self.skip_layers, self.skip_paths, strict=True):
            skips.append(path(self._tokens_to_grid(hidden[layer - 1], grid)))
        h = self._tokens_to_grid(hidden[-1], grid)
        for up in self.up:
            h = up(h, skips.pop())
        return self.head(h)


register_class(UNETR)
register_preset(
    "unetr2d_small", UNETR, "UNETR 2D: ViT on 16x16 patches, hidden 128, 4 layers, 4 heads, width 16, batch",
    spatial_dims=2, in_channels=1, num_classes=2, img_size=64, patch_size=16, hidden_size=128, mlp_dim=256,
    num_layers=4, num_heads=4, width=16, norm="batch",
)  # fmt: skip
register_preset(
    "unetr3d_small", UNETR, "UNETR 3D: ViT on 16^3 patches, hidden 96, 4 layers, 4 heads, width 8, instance",
    spatial_dims=3, in_channels=1, num_classes=2, img_size=32, patch_size=16, hidden_size=96, mlp_dim=192,
    num_layers=4, num_heads=4, width=8, norm="instance",
)  # fmt: skip
register_preset(
    "unetr3d_paper", UNETR, "Hatamizadeh et al. 2022: 3D, 96^3, patch 16, hidden 768, 12 layers/heads, mlp 3072",
    spatial_dims=3, in_channels=1, num_classes=2, img_size=96, patch_size=16, hidden_size=768, mlp_dim=3072,
    num_layers=12, num_heads=12, width=16, norm="batch",
)  # fmt: skip
