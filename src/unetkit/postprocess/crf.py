"""CRF refinement: mean-field inference in a fully-connected-style CRF with Potts compatibility.

The energy is the one of Krähenbühl & Koltun (2011): a unary ``-log P`` from the network's probabilities and
a pairwise Potts term (a cost for two pixels taking different labels) weighted by two kernels:

- a spatial Gaussian ``w_s exp(-|p_i - p_j|² / 2σ_s²)`` (smoothness), computed exactly with a separable filter;
- a bilateral (appearance) kernel ``w_b exp(-|p_i - p_j|² / 2σ_b² - |I_i - I_j|² / 2σ_c²)`` (pixels that look
  alike and lie close should agree), approximated on a local window of offsets (strided for large σ_b)
  instead of a permutohedral lattice.

Each mean-field iteration passes messages (the kernels applied to the current marginals ``Q``, the pixel
itself left out, normalised by the kernel mass), applies the Potts compatibility (for Potts, the cost of label
``l`` is the message mass of all other labels, which equals ``-message_l`` up to a per-pixel constant) and
renormalises ``Q = softmax(log P + w_s m_s + w_b m_b)``. Everything runs in torch, 2D and 3D alike.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unetkit.errors import DataError

__all__ = ["crf_refine"]


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter over every spatial axis of ``x`` ``(K, *S)``, zero outside."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    out = x
    for axis in range(1, x.ndim):
        moved = out.movedim(axis, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        flat = F.conv1d(F.pad(flat, (radius, radius)), kernel.view(1, 1, -1))
        out = flat.reshape(shape).movedim(-1, axis)
    return out


def _shift(xp: torch.Tensor, offset: tuple[int, ...], pad: int, spatial: tuple[int, ...]) -> torch.Tensor:
    """View of padded ``xp`` ``(C, *S+2pad)`` shifted by ``offset``: ``out[i] = x[i + offset]``."""
    index = [slice(None)] + [slice(pad + o, pad + o + n) for o, n in zip(offset, spatial, strict=True)]
    return xp[tuple(index)]


def _prepare(probs: Any, image: Any | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    p = torch.as_tensor(np.array(probs, np.float32) if not isinstance(probs, torch.Tensor) else probs).float().cpu()
    if p.ndim < 3:
        raise DataError(f"probabilities have shape {tuple(p.shape)}; pass (K, *spatial) with K >= 2 classes")
    if p.shape[0] < 2:
        raise DataError("probabilities have one channel; pass (K, *spatial) with K >= 2 (e.g. [1 - p, p])")
    if image is None:
        return p, None
    img = torch.as_tensor(np.array(image, np.float32) if not isinstance(image, torch.Tensor) else image).float().cpu()
    if img.ndim == p.ndim - 1:
        img = img.unsqueeze(0)
    if tuple(img.shape[1:]) != tuple(p.shape[1:]):
        raise DataError(
            f"image spatial shape {tuple(img.shape[1:])} differs from the probabilities' {tuple(p.shape[1:])}"
        )
    # per-channel z-score so that ``color_sigma`` is in standard deviations whatever the image's range
    flat = img.reshape(img.shape[0], -1)
    img = (img - flat.mean(1).view(-1, *[1] * (img.ndim - 1))) / flat.std(1).clamp_min(1e-6).view(
        -1, *[1] * (img.ndim - 1)
    )
    return p, img


def crf_refine(
    probs: Any,
    image: Any | None = None,
    *,
    iterations: int = 5,
    spatial_sigma: float = 1.0,
    spatial_weight: float = 1.0,
    bilateral_sigma: float = 5.0,
    color_sigma: float = 0.5,
    bilateral_weight: float = 4.0,
    window: int = 5,
) -> np.ndarray:
    """Refine class probabilities with mean-field CRF inference.

    Args:
        probs: class probabilities (or any positive scores; they are renormalised), ``(K, *spatial)``.
        image: the image the probabilities came from, ``(C, *spatial)`` or ``(*spatial)``; without it only the
            spatial kernel acts.
        iterations: mean-field iterations.
        spatial_sigma: σ_s of the smoothness kernel, in pixels.
        spatial_weight: w_s.
        bilateral_sigma: σ_b of the appearance kernel's spatial part, in pixels.
        color_sigma: σ_c of the appearance kernel, in standard deviations of each image channel.
        bilateral_weight: w_b.
        window: offsets per axis on each side of the appearance window; the window spans ``±2σ_b``, strided
            when ``2σ_b > window`` (cost grows as ``(2 window + 1) ** spatial_dims``).

    Returns:
        Refined probabilities, ``float32 (K, *spatial)``; ``argmax(0)`` gives labels.

    Shape:
        ``probs (K, *spatial)``, ``image (C, *spatial)`` -> ``(K, *spatial)``.

    >>> p = np.full((2, 5, 5), 0.4, np.float32); p[1, :, 3:] = 0.9; p[0] = 1 - p[1]
    >>> crf_refine(p, np.tile(np.arange(5.0) >= 3, (5, 1))).argmax(0)[0].tolist()
    [0, 0, 0, 1, 1]
    """
    if iterations < 0 or window < 1:
        raise DataError(f"iterations={iterations}, window={window}: need iterations >= 0 and window >= 1")
    if min(spatial_sigma, bilateral_sigma, color_sigma) <= 0:
        raise DataError("spatial_sigma, bilateral_sigma and color_sigma must be > 0")
    p, img = _prepare(probs, image)
    spatial = tuple(p.shape[1:])
    unary = torch.log(p.clamp_min(1e-8) / p.clamp_min(1e-8).sum(0, keepdim=True))
    ones = torch.ones((1, *spatial))
    g0 = 1.0  # the kernel's centre weight, left out so a pixel sends itself no message
    spatial_norm = (_gaussian_blur(ones, spatial_sigma) - g0).clamp_min(1e-6)

    offsets: list[tuple[int, ...]] = []
    pad = 0
    bil_weights: list[torch.Tensor] = []
    if img is not None and bilateral_weight > 0:
        reach = max(1, math.ceil(2 * bilateral_sigma))
        stride = max(1, math.ceil(reach / window))
        steps = range(-(reach // stride), reach // stride + 1)
        offsets = [tuple(s * stride for s in o) for o in itertools.product(steps, repeat=len(spatial)) if any(o)]
        pad = (reach // stride) * stride
        img_p = F.pad(img.unsqueeze(0), (pad, pad) * len(spatial)).squeeze(0)
        valid_p = F.pad(ones.unsqueeze(0), (pad, pad) * len(spatial)).squeeze(0)
        # the appearance weights depend on the image only: compute them once
        for off in offsets:
            diff = ((img - _shift(img_p, off, pad, spatial)) ** 2).sum(0, keepdim=True)
            d2 = float(sum(o * o for o in off))
            w = torch.exp(-d2 / (2 * bilateral_sigma**2) - diff / (2 * color_sigma**2))
            bil_weights.append(w * _shift(valid_p, off, pad, spatial))
        bil_norm = torch.stack(bil_weights).sum(0).clamp_min(1e-6)

    q = torch.softmax(unary, dim=0)
    for _ in range(iterations):
        energy = unary + spatial_weight * (_gaussian_blur(q, spatial_sigma) - g0 * q) / spatial_norm
        if bil_weights:
            q_p = F.pad(q.unsqueeze(0), (pad, pad) * len(spatial)).squeeze(0)
            msg = torch.zeros_like(q)
            for off, w in zip(offsets, bil_weights, strict=True):
                msg += w * _shift(q_p, off, pad, spatial)
            energy = energy + bilateral_weight * msg / bil_norm
        q = torch.softmax(energy, dim=0)
    return q.numpy().astype(np.float32)
