"""Noise2Void's blind spot: hide some pixels of each patch behind a random neighbour's value.

The loss is then taken on the hidden pixels only, against their original (noisy) values: the network has to
predict each from its surroundings, and since pixel noise is independent, it learns the clean signal.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch


def blind_spot(
    image: torch.Tensor, fraction: float, radius: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace ``fraction`` of each patch's pixels (all channels) with a random neighbour's value.

    The neighbour lies within ``radius`` along every axis and is never the pixel itself: an offset that
    would leave the patch is mirrored (``p - d`` instead of ``p + d``), which stays nonzero. Neighbours are
    read from the original patch, and a pixel that is some hidden pixel's neighbour is not hidden itself, so no
    hidden pixel's own value reaches the input anywhere.

    Returns:
        ``(masked image, mask)``: the mask is 1 at the hidden pixels.

    Shape:
        ``image (B, C, *S)`` -> ``(B, C, *S)``, mask ``(B, *S)`` float32.
    """
    b, c, *spatial = image.shape
    n = max(1, round(fraction * math.prod(spatial)))
    out = image.clone()
    mask = torch.zeros((b, *spatial), dtype=torch.float32)
    flat_in = image.reshape(b, c, -1)
    flat_out = out.reshape(b, c, -1)
    for i in range(b):
        pos = torch.stack([torch.randint(0, s, (n,), generator=generator) for s in spatial])  # (D, n)
        while True:
            off = torch.randint(-radius, radius + 1, (len(spatial), n), generator=generator)
            if bool((off != 0).any(0).all()):
                break
            zero = ~(off != 0).any(0)  # redraw only the all-zero offsets
            off[:, zero] = torch.randint(-radius, radius + 1, (len(spatial), int(zero.sum())), generator=generator)
            if bool((off != 0).any(0).all()):
                break
        size = torch.tensor(spatial).unsqueeze(1)
        nb = pos + off
        nb = torch.where((nb < 0) | (nb >= size), pos - off, nb).clamp(min=torch.zeros_like(size), max=size - 1)
        strides = torch.tensor([math.prod(spatial[k + 1 :]) for k in range(len(spatial))]).unsqueeze(1)
        p_idx, n_idx = (pos * strides).sum(0), (nb * strides).sum(0)
        keep = ~torch.isin(p_idx, n_idx)  # a pixel whose value is shown elsewhere is not hidden (nor scored)
        p_idx, n_idx = p_idx[keep], n_idx[keep]
        flat_out[i][:, p_idx] = flat_in[i][:, n_idx]
        mask.view(b, -1)[i, p_idx] = 1.0
    return out, mask.to(image.device)


def blind_spot_loss(
    predict: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    fraction: float,
    radius: int,
    seed: int,
) -> tuple[float, np.ndarray]:
    """Noise2Void's validation score of one whole image: hide pixels as in training (a fixed draw for
    ``seed``, so every validation hides the same pixels), predict the masked image and take ``loss`` on the
    hidden pixels against their noisy values.

    With clean targets absent this is the honest measure: a hidden pixel's noise is independent of what the
    network saw, so the expected loss is the error against the clean signal plus a constant (the noise), and
    the lowest loss marks the best denoiser. Scoring the unmasked output against the noisy image instead
    rewards the network that denoises least (the identity scores perfectly).

    Returns:
        ``(loss, output)``: the output is the prediction of the masked image (the same as the unmasked one
        but at the hidden pixels, which the network predicts from their neighbours either way).

    Shape:
        ``image (C, *S)``, ``predict: (C, *S) -> (C_out, *S)``.
    """
    generator = torch.Generator().manual_seed(seed)
    masked, mask = blind_spot(torch.from_numpy(np.ascontiguousarray(image))[None], fraction, radius, generator)
    output = predict(masked[0].numpy())
    value = loss(torch.from_numpy(output)[None], torch.from_numpy(np.asarray(image, np.float32))[None], mask)
    return float(value), output
