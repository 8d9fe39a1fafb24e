"""Which metric judges a training run's best epoch, and which way is better: one rule for the training loop,
the progress display and the curves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The metrics "best" may be judged by, in order of preference; the losses are lower-is-better.
SCORE_KEYS = ("val_dice", "val_psnr", "val_loss", "train_loss")
LOWER_IS_BETTER = frozenset({"val_loss", "train_loss"})


def score_key(row: Mapping[str, Any]) -> str:
    """The metric "best" is judged by: ``val_dice`` for a validated epoch (``val_psnr`` for restoration,
    ``val_loss`` for Noise2Void, which has no clean target to score), else ``train_loss``.

    >>> score_key({"train_loss": 0.5, "val_dice": 0.8}), score_key({"train_loss": 0.5, "val_loss": 0.4})
    ('val_dice', 'val_loss')
    >>> score_key({"train_loss": 0.5})
    'train_loss'
    """
    return next(k for k in SCORE_KEYS if k in row or k == "train_loss")


def epoch_score(row: Mapping[str, Any]) -> float:
    """What "best" means, higher is better: :func:`score_key`'s value, negated for a loss.

    >>> epoch_score({"train_loss": 0.5, "val_dice": 0.8}), epoch_score({"train_loss": 0.5})
    (0.8, -0.5)
    """
    key = score_key(row)
    return -float(row[key]) if key in LOWER_IS_BETTER else float(row[key])
