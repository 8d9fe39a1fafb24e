"""Learning-rate schedules with linear warm-up: poly (nnU-Net's), cosine, constant."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, total: int, kind: str, warmup: int = 0, power: float = 0.9) -> float:
    """The multiplier of the base learning rate at ``step`` of ``total``.

    >>> round(lr_factor(0, 100, "poly"), 3), round(lr_factor(50, 100, "cosine"), 3)
    (1.0, 0.5)
    >>> lr_factor(4, 100, "constant", warmup=10)
    0.5
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    if kind == "poly":
        return (1 - t) ** power
    if kind == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if kind == "constant":
        return 1.0
    raise ValueError(f"schedule must be poly, cosine or constant, got {kind!r}")


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, kind: str, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` following :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, kind, warmup_steps))
