"""Training: losses with the paper's weight map, the Fabric loop, checkpoints and resume."""

from __future__ import annotations

from unetkit.train.callbacks import BaseCallback
from unetkit.train.loop import TrainResult, legal_patch, train
from unetkit.train.weightmap import weight_map

__all__ = ["BaseCallback", "TrainResult", "legal_patch", "train", "weight_map"]
