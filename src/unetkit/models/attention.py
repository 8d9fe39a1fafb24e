"""Additive attention gates on the skip connections (Oktay et al. 2018, "Attention U-Net").

The Attention U-Net is :class:`unetkit.models.UNet` with ``attention=True``: each expanding step gates its
(cropped) skip with this module before the concatenation. Presets: ``attention_unet2d_small`` and
``attention_unet3d_small``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models import layers


class AttentionGate(nn.Module):
    """Weigh a skip feature ``x`` by attention coefficients computed with a coarser gating feature ``g``.

    ``alpha = sigmoid(psi(relu(W_x x + W_g g)))``, where ``W_x`` is a 2x2 stride-2 convolution (in general
    ``stride``-sized with stride ``stride``: the level's pool size, per axis in anisotropic nets) bringing
    ``x`` to the grid of ``g``, ``W_g`` and ``psi`` are 1x1 convolutions; ``alpha`` (one channel) is resampled
    linearly back to ``x``'s grid and multiplies ``x``. Works for valid nets: the gated ``x`` is the
    centre-cropped skip, whose size is exactly ``stride`` times ``g``'s.

    Args:
        spatial_dims: 2 or 3.
        skip_ch: channels of ``x``.
        gate_ch: channels of ``g`` (the decoder feature before its up-sampling).
        inter_ch: channels of the joint space (default ``max(1, skip_ch // 2)``, as in the paper).
        stride: the factor between ``x``'s and ``g``'s grids, one or per axis (default 2).

    Shape:
        ``x (B, skip_ch, *S)``, ``g (B, gate_ch, *S/stride)`` -> ``(B, skip_ch, *S)``

    Examples:
        >>> import torch
        >>> gate = AttentionGate(2, skip_ch=4, gate_ch=8)
        >>> gate(torch.zeros(1, 4, 16, 16), torch.zeros(1, 8, 8, 8)).shape
        torch.Size([1, 4, 16, 16])
        >>> AttentionGate(3, 4, 8)(torch.zeros(1, 4, 8, 8, 8), torch.zeros(1, 8, 4, 4, 4)).shape
        torch.Size([1, 4, 8, 8, 8])
    """

    def __init__(
        self, spatial_dims: int, skip_ch: int, gate_ch: int, inter_ch: int | None = None, stride: layers.Size = 2
    ) -> None:
        super().__init__()
        inter = inter_ch or max(1, skip_ch // 2)
        self.theta_x = layers.conv(spatial_dims, skip_ch, inter, stride, stride=stride, bias=False)
        self.phi_g = layers.conv(spatial_dims, gate_ch, inter, 1)
        self.psi = layers.conv(spatial_dims, inter, 1, 1)
        self.mode = layers.linear_mode(spatial_dims)

    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The attention map ``alpha`` in ``[0, 1]`` on ``x``'s grid, shape ``(B, 1, *S)``."""
        q = self.psi(F.relu(self.theta_x(x) + self.phi_g(g)))
        return F.interpolate(torch.sigmoid(q), size=x.shape[2:], mode=self.mode, align_corners=False)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x * self.coefficients(x, g)
