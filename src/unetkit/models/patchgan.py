"""pix2pix's PatchGAN discriminator, 2D and 3D: a small convolutional net that scores every patch of an image.

Conditional as in pix2pix: it sees the network's input and an output (real target or generated) stacked on
the channel axis, and returns one logit per receptive field ("is this patch a real pair?"). With three strided
layers each logit sees 70 pixels (pix2pix's 70x70 PatchGAN); fewer layers fit smaller patches.

Spectral normalisation (Miyato et al. 2018) on every convolution bounds the discriminator's Lipschitz
constant, so it cannot grow arbitrarily confident and its gradients to the generator stay bounded: the main
thing that keeps adversarial training stable with the tiny batches of a CPU run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from unetkit.models.layers import conv

__all__ = ["PatchGAN", "patchgan_layers"]


def patchgan_layers(patch: Sequence[int], wanted: int = 3) -> int:
    """The strided layers a patch allows: up to ``wanted`` (pix2pix: 3), while the smallest axis keeps at least
    8 pixels before the two stride-1 convolutions (each of which removes one).

    >>> patchgan_layers([256, 256]), patchgan_layers([32, 32]), patchgan_layers([16, 64, 64])
    (3, 2, 1)
    """
    smallest = min(int(p) for p in patch)
    return max(1, min(wanted, int(math.log2(max(smallest, 2))) - 3))


class PatchGAN(nn.Module):
    """C(w) - C(2w) - ... (stride 2, 4-wide kernels, LeakyReLU 0.2) - C (stride 1) - 1-channel logits.

    Args:
        in_channels: input channels + output channels (the pair it judges).
        spatial_dims: 2 or 3.
        width: channels of the first layer (pix2pix: 64), doubled per layer, capped at ``8 * width``.
        layers: strided layers (pix2pix: 3; see :func:`patchgan_layers`).
        spectral_norm: spectral normalisation on every convolution (recommended; see the module note).
        norm: ``"none"`` or ``"instance"`` after every convolution but the first and the last.

    Shape:
        ``(B, in_channels, *S)`` -> ``(B, 1, *S')`` with ``S' = S / 2**layers - 2`` (per axis).
    """

    def __init__(
        self,
        in_channels: int,
        spatial_dims: int = 2,
        width: int = 64,
        layers: int = 3,
        spectral_norm: bool = True,
        norm: str = "none",
    ) -> None:
        super().__init__()
        if norm not in ("none", "instance"):
            raise ValueError(f"PatchGAN norm must be none or instance, got {norm!r}")
        if layers < 1:
            raise ValueError(f"PatchGAN needs at least one strided layer, got {layers}")
        self.spatial_dims, self.layers = spatial_dims, layers

        def sn(module: nn.Module) -> nn.Module:
            return nn.utils.parametrizations.spectral_norm(module) if spectral_norm else module

        def normed(ch: int) -> list[nn.Module]:
            if norm == "none":
                return []
            cls = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
            return [cls(ch, affine=True)]

        body: list[nn.Module] = [sn(conv(spatial_dims, in_channels, width, 4, 1, 2)), nn.LeakyReLU(0.2)]
        ch = width
        for i in range(1, layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < layers else 1  # pix2pix: the last feature layer keeps the resolution
            body += [sn(conv(spatial_dims, ch, out, 4, 1, stride)), *normed(out), nn.LeakyReLU(0.2)]
            ch = out
        body.append(sn(conv(spatial_dims, ch, 1, 4, 1, 1)))
        self.body = nn.Sequential(*body)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(pair)
        return out
