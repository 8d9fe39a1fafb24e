"""Data augmentation for segmentation: spatial transforms in one resampling, intensity transforms, 2D and 3D.

>>> import torch
>>> aug = Augmenter(AugmentConfig(), spatial_dims=2)
>>> out = aug(torch.rand(4, 1, 64, 64), torch.randint(0, 2, (4, 64, 64)), generator=torch.Generator().manual_seed(1))
>>> tuple(out.image.shape), out.mask.dtype
((4, 1, 64, 64), torch.int64)
"""

from __future__ import annotations

from unetkit.augment.compose import Augmenter, AugmentParams, AugmentResult
from unetkit.augment.config import AugmentConfig

__all__ = ["AugmentConfig", "AugmentParams", "AugmentResult", "Augmenter"]
