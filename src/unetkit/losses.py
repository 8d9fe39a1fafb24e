"""Segmentation losses for any ``spatial_dims``: logits ``(B, K, *S)`` against class indices ``(B, *S)``.

Every loss takes an optional per-pixel ``weight`` ``(B, *S)`` (the paper's weight map) and an
``ignore_index`` whose pixels contribute nothing.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.errors import ConfigError

LossName = Literal["ce", "weighted_ce", "bce", "dice", "dice_ce", "focal"]
LOSSES: tuple[str, ...] = ("ce", "weighted_ce", "bce", "dice", "dice_ce", "focal")


def _valid_mask(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    return torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index


def _weighted_mean(per_pixel: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    w = valid.to(per_pixel.dtype)
    if weight is not None:
        w = w * weight.to(per_pixel.dtype)
    # The mean over valid pixels (not over their weights), as Caffe's weighted softmax loss in the paper.
    return (per_pixel * w).sum() / valid.sum().clamp_min(1)


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy, optionally weighted per pixel (the paper's energy function).

    Shape:
        ``logits (B, K, *S)``, ``target (B, *S)`` int64, ``weight (B, *S)`` -> scalar.

    >>> logits = torch.zeros(1, 2, 4, 4); target = torch.zeros(1, 4, 4, dtype=torch.long)
    >>> round(cross_entropy(logits, target).item(), 4)  # log(2)
    0.6931
    """
    valid = _valid_mask(target, ignore_index)
    safe = torch.where(valid, target, torch.zeros_like(target))
    per_pixel = F.cross_entropy(logits.float(), safe, weight=class_weights, reduction="none")
    return _weighted_mean(per_pixel, valid, weight)


def binary_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Sigmoid BCE. ``target (B, *S)`` class indices become one-hot over the ``K`` channels; with ``K == 1``
    the single channel is the foreground (``target > 0``). Multi-label targets ``(B, K, *S)`` in {0, 1} are
    used as they are.

    Shape:
        ``logits (B, K, *S)`` -> scalar.
    """
    if target.shape == logits.shape:
        onehot = target.float()
        valid = torch.ones(target.shape[:1] + target.shape[2:], dtype=torch.bool, device=target.device)
    else:
        valid = _valid_mask(target, ignore_index)
        safe = torch.where(valid, target, torch.zeros_like(target))
        onehot = (safe > 0).float().unsqueeze(1) if logits.shape[1] == 1 else _one_hot(safe, logits.shape[1])
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), onehot, reduction="none").mean(1)
    return _weighted_mean(per_pixel, valid, weight)


def _one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(target, num_classes).movedim(-1, 1).float()


def soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int | None = None,
    include_background: bool = False,
    smooth: float = 1e-5,
    batch_dice: bool = True,
) -> torch.Tensor:
    """``1 - mean soft Dice`` over classes from softmax probabilities.

    ``batch_dice`` pools the whole batch per class (nnU-Net's choice for patch training: stable when a patch
    lacks a class). Background is left out by default when there are several classes.

    Shape:
        ``logits (B, K, *S)``, ``target (B, *S)`` -> scalar.
    """
    valid = _valid_mask(target, ignore_index).unsqueeze(1).float()
    safe = torch.where(valid[:, 0].bool(), target, torch.zeros_like(target))
    probs = logits.float().softmax(1) * valid
    onehot = _one_hot(safe, logits.shape[1]) * valid
    dims = (0, *range(2, logits.ndim)) if batch_dice else tuple(range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    if not include_background and logits.shape[1] > 1:
        dice = dice[..., 1:]
    return 1 - dice.mean()


def focal(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int | None = None,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_t) ** gamma``.

    Shape:
        ``logits (B, K, *S)``, ``target (B, *S)`` -> scalar.
    """
    valid = _valid_mask(target, ignore_index)
    safe = torch.where(valid, target, torch.zeros_like(target))
    logp = F.log_softmax(logits.float(), 1).gather(1, safe.unsqueeze(1)).squeeze(1)
    per_pixel = -((1 - logp.exp()) ** gamma) * logp
    return _weighted_mean(per_pixel, valid, weight)


class SegmentationLoss(nn.Module):
    """A loss by name, called as ``loss(logits, target, weight=None)``.

    Names: ``ce`` (softmax cross-entropy), ``weighted_ce`` (the paper's: cross-entropy times the weight map),
    ``bce`` (sigmoid), ``dice`` (soft Dice), ``dice_ce`` (Dice + CE, nnU-Net's default), ``focal``.
    Only ``weighted_ce`` and ``focal`` and ``ce`` use the per-pixel ``weight``; ``dice_ce`` applies it to its
    CE term.

    >>> loss = SegmentationLoss("dice_ce")
    >>> logits = torch.randn(2, 3, 8, 8, 8); target = torch.randint(0, 3, (2, 8, 8, 8))
    >>> loss(logits, target).ndim
    0
    """

    def __init__(self, name: str = "dice_ce", ignore_index: int | None = None, focal_gamma: float = 2.0) -> None:
        super().__init__()
        if name not in LOSSES:
            raise ConfigError(f"loss {name!r} is unknown; choose one of {', '.join(LOSSES)}")
        self.name, self.ignore_index, self.focal_gamma = name, ignore_index, focal_gamma

    @property
    def uses_weight_map(self) -> bool:
        return self.name == "weighted_ce"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        ii = self.ignore_index
        if self.name in ("ce", "weighted_ce"):
            return cross_entropy(logits, target, weight if self.name == "weighted_ce" else None, ii)
        if self.name == "bce":
            return binary_cross_entropy(logits, target, weight, ii)
        if self.name == "dice":
            return soft_dice(logits, target, ii)
        if self.name == "focal":
            return focal(logits, target, weight, ii, self.focal_gamma)
        return soft_dice(logits, target, ii) + cross_entropy(logits, target, weight, ii)
