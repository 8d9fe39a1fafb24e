"""Training: losses with the paper's weight map, the Fabric loop, checkpoints and resume.

The package is callable: ``unetkit.train(data_dir, out, **overrides)`` is :func:`unetkit.train.folder.train`
(a package and a function cannot both be ``unetkit.train``; a callable package keeps
``import unetkit.train.data`` working after the call).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from unetkit.train.callbacks import BaseCallback
from unetkit.train.loop import TrainResult, legal_patch, train
from unetkit.train.weightmap import weight_map

__all__ = ["BaseCallback", "TrainResult", "legal_patch", "train", "weight_map"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``unetkit.train(data_dir, out, **overrides)``: see :func:`unetkit.train.folder.train`."""
        from unetkit.train.folder import train as train_folder

        return train_folder(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
