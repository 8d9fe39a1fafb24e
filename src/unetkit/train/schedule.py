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


class LRFactor:
    """The per-step multiplier :func:`lr_factor` as a callable object, so ``LambdaLR`` checkpoints its state.

    ``total`` can shrink during a run (:meth:`end_at`): a time budget that runs out before the planned
    steps still ends the schedule (poly and cosine reach zero when the time is up, not at a step never
    reached). ``LambdaLR.state_dict`` saves the object's ``__dict__``, so a resumed run continues the same
    schedule exactly.
    """

    def __init__(self, total: int, kind: str, warmup: int = 0) -> None:
        self.total, self.kind, self.warmup = int(total), kind, int(warmup)

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total, self.kind, self.warmup)

    def end_at(self, total: int) -> bool:
        """End the schedule at step ``total``, the run's real end when a time budget stops it early (never
        lengthen it, never inside the warm-up); ``True`` if changed.

        >>> f = LRFactor(1000, "poly")
        >>> f.end_at(300), f.total
        (True, 300)
        >>> f.end_at(400), f.total
        (False, 300)
        """
        new = max(int(total), self.warmup + 1)
        if new >= self.total:
            return False
        self.total = new
        return True


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, kind: str, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` following :func:`lr_factor` (its :class:`LRFactor` is ``lr_lambdas[0]``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(total_steps, kind, warmup_steps))
