"""Learning-rate schedules with linear warm-up: poly (nnU-Net's), cosine, constant.

A schedule is a shape over the run's progress ``t`` in [0, 1]. Without a time budget ``t`` is the step's share
of the planned steps. Under a budget the run's end is a forecast that moves as the steps speed up or slow
down, so :class:`LRFactor` re-anchors: from the step where the forecast changed, what is left of ``t`` is
spread over the steps the forecast now says are left. ``t`` never moves back, so the rate never rises, and it
reaches 1 where the run really ends, neither at a step never reached nor long before the time is up.
"""

from __future__ import annotations

import math

import torch

POWER = 0.9  # nnU-Net's poly exponent


def _shape(t: float, kind: str, power: float = POWER) -> float:
    """The multiplier at progress ``t`` (0 = start, 1 = end)."""
    if kind == "poly":
        return (1 - t) ** power
    if kind == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if kind == "constant":
        return 1.0
    raise ValueError(f"schedule must be poly, cosine or constant, got {kind!r}")


def lr_factor(step: int, total: int, kind: str, warmup: int = 0, power: float = POWER) -> float:
    """The multiplier of the base learning rate at ``step`` of ``total``.

    >>> round(lr_factor(0, 100, "poly"), 3), round(lr_factor(50, 100, "cosine"), 3)
    (1.0, 0.5)
    >>> lr_factor(4, 100, "constant", warmup=10)
    0.5
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return _shape(min(max(step - warmup, 0) / max(total - warmup, 1), 1.0), kind, power)


class LRFactor:
    """The per-step multiplier as a callable object, so ``LambdaLR`` checkpoints its state.

    Progress runs linearly from ``(anchor, t_anchor)`` to 1 at step ``total``; at the start the anchor is the
    end of the warm-up at ``t = 0``, which is :func:`lr_factor` exactly. :meth:`end_at` moves the end (a time
    budget's forecast) and re-anchors at the current step. ``LambdaLR.state_dict`` saves the object's
    ``__dict__``, so a resumed run continues the same schedule exactly.
    """

    def __init__(self, total: int, kind: str, warmup: int = 0) -> None:
        self.total, self.kind, self.warmup = int(total), kind, int(warmup)
        self.planned = self.total
        self.anchor, self.t_anchor = self.warmup, 0.0

    def progress(self, step: int) -> float:
        """The schedule's progress ``t`` at ``step`` (0 until the warm-up ends, 1 from ``total`` on).

        >>> LRFactor(100, "poly", warmup=10).progress(55)
        0.5
        """
        if step <= self.anchor:
            return self.t_anchor if step >= self.warmup else 0.0
        span = max(self.total - self.anchor, 1)
        return min(self.t_anchor + (1.0 - self.t_anchor) * (step - self.anchor) / span, 1.0)

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        return _shape(self.progress(step), self.kind)

    def end_at(self, step: int, total: int) -> bool:
        """From ``step`` on, spread the rest of the schedule over the steps until ``total`` (capped at the
        planned steps; not inside the warm-up); ``True`` if the end moved.

        Shortening makes the rate fall faster from here, lengthening slower; it never rises.

        >>> f = LRFactor(1000, "poly")
        >>> f.end_at(100, 300), f.total, f.progress(100), f.progress(200)
        (True, 300, 0.1, 0.55)
        >>> f.end_at(200, 650), f.total, f.progress(200), f.progress(425)  # the steps sped up: the end moves out
        (True, 650, 0.55, 0.775)
        >>> f.end_at(200, 5000), f.total  # never past the planned steps
        (True, 1000)
        """
        step = int(step)
        new = min(max(int(total), step + 1), self.planned)
        if step < self.warmup or new == self.total:
            return False
        self.t_anchor, self.anchor, self.total = self.progress(step), step, new
        return True


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, kind: str, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` following :func:`lr_factor` (its :class:`LRFactor` is ``lr_lambdas[0]``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(total_steps, kind, warmup_steps))
