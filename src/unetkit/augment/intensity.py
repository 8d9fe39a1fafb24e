"""Intensity augmentation (image only): Gaussian noise, Gaussian blur, brightness, contrast and gamma.

Each transform runs batched on the samples that drew it (an index subset), on the tensors' device; the
others are left bit-identical. Statistics (std, mean, min, max) are per sample and channel, so the
transforms do not depend on the absolute intensity scale except brightness, which multiplies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from unetkit.augment.config import AugmentConfig
from unetkit.data.windows import fold_index


@dataclass(frozen=True)
class IntensityParams:
    """Per-sample intensity parameters; neutral values (0 for noise/blur, 1 for the factors) mean "off".

    Shape:
        every tensor ``(B,)`` float32; ``noise_seed`` seeds the noise, drawn on the image's device.
    """

    noise_std: torch.Tensor
    noise_seed: int
    blur_sigma: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    gamma: torch.Tensor

    def to(self, device: torch.device | str) -> IntensityParams:
        """The same parameters on ``device``."""
        return replace(
            self,
            noise_std=self.noise_std.to(device),
            blur_sigma=self.blur_sigma.to(device),
            brightness=self.brightness.to(device),
            contrast=self.contrast.to(device),
            gamma=self.gamma.to(device),
        )


def sample_intensity(config: AugmentConfig, batch_size: int, generator: torch.Generator | None) -> IntensityParams:
    """Draw intensity parameters for a batch (every number always drawn, in a fixed order)."""
    dev = generator.device if generator is not None else torch.device("cpu")

    def draw(p: float, lo: float, hi: float, neutral: float, log: bool = False) -> torch.Tensor:
        u = torch.rand((2, batch_size), generator=generator, device=dev, dtype=torch.float64)
        a, b = (math.log(lo), math.log(hi)) if log else (lo, hi)
        value = a + (b - a) * u[1]
        if log:
            value = torch.exp(value)
        return torch.where(u[0] < p, value, torch.full_like(value, neutral)).float()

    noise = draw(config.noise.p, *config.noise.std, neutral=0.0)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=dev).item())
    return IntensityParams(
        noise_std=noise,
        noise_seed=seed,
        blur_sigma=draw(config.blur.p, *config.blur.sigma, neutral=0.0),
        brightness=draw(config.brightness.p, *config.brightness.range, neutral=1.0),
        contrast=draw(config.contrast.p, *config.contrast.range, neutral=1.0),
        gamma=draw(config.gamma.p, *config.gamma.range, neutral=1.0, log=True),
    )


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a ``(b,)`` vector against ``(b, C, *S)``."""
    return v.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))


def _stats_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.dim()))


def gaussian_noise(x: torch.Tensor, std: torch.Tensor, seed: int) -> torch.Tensor:
    """Add N(0, (std * image std)^2) noise, std relative to each sample's and channel's own std.

    Shape:
        ``(b, C, *S) -> (b, C, *S)``; ``std (b,)``.
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    scale = x.std(dim=_stats_dims(x), keepdim=True) * _per_sample(std, x)
    return x + noise * scale


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """One normalised 1-D Gaussian per sigma.

    Shape:
        ``(b,) -> (b, 2 * radius + 1)``

    >>> gaussian_kernels(torch.tensor([1.0]), 3).sum().item()
    1.0
    """
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=sigma.device)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None].float()) ** 2)
    return k / k.sum(1, keepdim=True)


def blur_matrices(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Per-sample Gaussian blur along one axis of length ``size`` as a matrix, mirrored borders folded in.

    Row ``i`` holds the kernel centred on ``i``; taps beyond the border land on their mirror voxel (edge not
    repeated: :func:`unetkit.data.windows.fold_index`, the border rule of patches, tiles and the spatial
    resampling), so any sigma works on any size.

    Shape:
        ``sigma (b,) -> (b, size, size)``; each row sums to 1.

    >>> blur_matrices(torch.tensor([1.0]), 4).sum(2).round(decimals=5).tolist()
    [[1.0, 1.0, 1.0, 1.0]]
    """
    radius = max(1, math.ceil(3.0 * float(sigma.max())))
    kernels = gaussian_kernels(sigma, radius)  # (b, 2r+1)
    src = torch.arange(size, device=sigma.device)[:, None] + torch.arange(-radius, radius + 1, device=sigma.device)
    src = fold_index(src, size)
    b = sigma.shape[0]
    out = torch.zeros(b, size, size, dtype=kernels.dtype, device=sigma.device)
    return out.scatter_add_(2, src.expand(b, -1, -1), kernels[:, None, :].expand(-1, size, -1))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample, mirrored borders, any number of spatial dims.

    One batched matrix product per spatial axis (:func:`blur_matrices`): on CPU this is several times faster
    than grouped 3-D convolutions with per-sample kernels, and border handling needs no padding.

    Shape:
        ``(b, C, *S) -> (b, C, *S)``; ``sigma (b,)`` in pixels.
    """
    b, _, *spatial = x.shape
    y = x
    for axis, size in enumerate(spatial):
        m = blur_matrices(sigma.to(x.device), size).to(x.dtype).transpose(1, 2)
        y = y.movedim(2 + axis, -1)
        moved = y.shape
        y = torch.bmm(y.reshape(b, -1, size), m).reshape(moved).movedim(-1, 2 + axis)
    return y.contiguous()


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply the intensities by ``factor``. Shape: ``(b, C, *S) -> (b, C, *S)``."""
    return x * _per_sample(factor, x)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Stretch around the mean by ``factor``, clipped to the original min/max. Shape: as ``x``."""
    dims = _stats_dims(x)
    mean = x.mean(dim=dims, keepdim=True)
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    return torch.maximum(torch.minimum((x - mean) * _per_sample(factor, x) + mean, hi), lo)


def gamma(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``((x - min) / (max - min)) ** g`` mapped back to ``[min, max]``: negative (z-scored) values are safe and
    the range (hence the sign of its ends) is kept. Shape: as ``x``.
    """
    dims = _stats_dims(x)
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    span = (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)
    return ((x - lo) / span).clamp(0, 1).pow(_per_sample(g, x)) * span + lo


def apply_intensity(params: IntensityParams, image: torch.Tensor) -> torch.Tensor:
    """Noise, blur, brightness, contrast, gamma (in that order) on the samples that drew each.

    Shape:
        ``(B, C, *S) -> (B, C, *S)``; the input is not modified.
    """
    out = image
    steps = (
        (params.noise_std, 0.0, lambda x, v: gaussian_noise(x, v, params.noise_seed)),
        (params.blur_sigma, 0.0, gaussian_blur),
        (params.brightness, 1.0, brightness),
        (params.contrast, 1.0, contrast),
        (params.gamma, 1.0, gamma),
    )
    for values, neutral, fn in steps:
        chosen = torch.nonzero(values != neutral).flatten()
        if chosen.numel() == 0:
            continue
        if out is image:
            out = image.clone()
        if chosen.numel() == out.shape[0]:
            out = fn(out, values)
        else:
            out[chosen] = fn(out[chosen], values[chosen])
    return out
