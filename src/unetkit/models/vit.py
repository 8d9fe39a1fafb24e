"""A plain ViT encoder for 2D and 3D images (Dosovitskiy et al. 2021), the encoder of UNETR.

Non-overlapping ``patch``-sized patches are embedded by one strided convolution, learnable position
embeddings are defined on the patch grid of a reference image size and resampled linearly (bilinear /
trilinear) for any other grid (also in an exported ONNX graph, whose spatial axes stay dynamic), then
pre-norm transformer layers run; every layer's output is returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models import layers


class PatchEmbedding(nn.Module):
    """Patch projection plus position embeddings, interpolated when the patch grid differs from the reference.

    Shape:
        ``(B, in_ch, *S) -> (B, prod(S / patch), hidden)``
    """

    def __init__(self, spatial_dims: int, in_ch: int, hidden: int, patch: int, grid: Sequence[int]) -> None:
        super().__init__()
        self.proj = layers.conv(spatial_dims, in_ch, hidden, patch, stride=patch)
        self.grid = tuple(int(g) for g in grid)
        self.mode = layers.linear_mode(spatial_dims)
        n = 1
        for g in self.grid:
            n *= g
        self.position = nn.Parameter(torch.zeros(1, n, hidden))
        if layers.has_values(self.position):
            nn.init.trunc_normal_(self.position, std=0.02)

    def position_for(self, grid: Sequence[int]) -> torch.Tensor:
        """The position embeddings on ``grid`` (the learnt ones on the reference grid, else resampled).

        While tracing (ONNX export) the resampling is always recorded, with the grid taken from the traced
        input shape, so the exported graph resamples to whatever size it is run at (on the reference grid
        linear resampling with ``align_corners=False`` is the identity) instead of freezing the export size.
        """
        if torch.jit.is_tracing():
            size: Sequence[Any] = grid  # traced sizes: kept symbolic (int() would freeze them)
        else:
            size = tuple(int(g) for g in grid)
            if size == self.grid:
                return self.position
        hidden = self.position.shape[-1]
        pos = self.position.transpose(1, 2).reshape(1, hidden, *self.grid)
        pos = F.interpolate(pos, size=size, mode=self.mode, align_corners=False)  # type: ignore[arg-type]
        return pos.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return h.flatten(2).transpose(1, 2) + self.position_for(h.shape[2:])


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: multi-head self-attention and a GELU MLP, each with a residual.

    Shape:
        ``(B, N, hidden) -> (B, N, hidden)``
    """

    def __init__(self, hidden: int, heads: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden_size ({hidden}) must be divisible by num_heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, hidden), nn.Dropout(dropout)
        )

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        h = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj(h.transpose(1, 2).reshape(b, n, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding and ``num_layers`` transformer layers; returns every layer's output.

    The last output is layer-normalised (the encoder's final norm).

    Shape:
        ``(B, in_ch, *S) -> [(B, prod(S / patch), hidden)] * num_layers``

    Examples:
        >>> import torch
        >>> vit = ViT(2, 1, img_size=(32, 32), patch=16, hidden=8, mlp_dim=16, num_layers=2, heads=2)
        >>> [tuple(h.shape) for h in vit(torch.zeros(1, 1, 32, 48))]
        [(1, 6, 8), (1, 6, 8)]
        >>> ViT(3, 1, (16, 16, 16), 8, 8, 16, 1, 2)(torch.zeros(1, 1, 16, 16, 16))[0].shape
        torch.Size([1, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_ch: int,
        img_size: Sequence[int],
        patch: int,
        hidden: int,
        mlp_dim: int,
        num_layers: int,
        heads: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = PatchEmbedding(spatial_dims, in_ch, hidden, patch, [s // patch for s in img_size])
        self.layers = nn.ModuleList(TransformerLayer(hidden, heads, mlp_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden)
        for m in self.modules():
            if isinstance(m, nn.Linear) and layers.has_values(m.weight):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.embed(x)
        out = []
        for layer in self.layers:
            h = layer(h)
            out.append(h)
        out[-1] = self.norm(out[-1])
        return out
