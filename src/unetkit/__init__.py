"""unetkit: U-Net image segmentation and restoration in 2D and 3D.

The public Python API in one place (imported on first use, so ``import unetkit`` is cheap)::

    >>> import unetkit, numpy as np
    >>> model = unetkit.create_model("unet2d_small", in_channels=1, num_classes=2)
    >>> model.spatial_dims
    2
    >>> unetkit.predict(model, np.zeros((64, 64), np.float32), device="cpu").shape
    (64, 64)

``unetkit.predict(model, image)`` and ``unetkit.train(data_dir, out)`` are the one-call jobs
(:mod:`unetkit.api`); ``unetkit.train`` (the training package, callable) also takes a ready
:class:`~unetkit.config.Config`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from unetkit._version import __version__
from unetkit.errors import ConfigError, DataError, InputShapeError, ModelFileError, UnetkitError

_LAZY = {
    "ModelDescription": "unetkit.modelfile",
    "load_model": "unetkit.modelfile",
    "read_description": "unetkit.modelfile",
    "save_model": "unetkit.modelfile",
    "UNet": "unetkit.models",
    "create_model": "unetkit.models",
    "list_models": "unetkit.models",
    "model_info": "unetkit.models",
    "Predictor": "unetkit.infer",
    "load_dataset": "unetkit.data",
    "check_dataset": "unetkit.data",
    "load_config": "unetkit.config",
    "predict": "unetkit.api",
}

if TYPE_CHECKING:
    from unetkit.api import predict
    from unetkit.config import load_config
    from unetkit.data import check_dataset, load_dataset
    from unetkit.infer import Predictor
    from unetkit.modelfile import ModelDescription, load_model, read_description, save_model
    from unetkit.models import UNet, create_model, list_models, model_info
    from unetkit.train.folder import train


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name == "train":  # the package unetkit.train, callable: unetkit.train(data_dir, out, **overrides)
        return importlib.import_module("unetkit.train")
    raise AttributeError(f"module 'unetkit' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "DataError",
    "InputShapeError",
    "ModelDescription",
    "ModelFileError",
    "Predictor",
    "UNet",
    "UnetkitError",
    "__version__",
    "check_dataset",
    "create_model",
    "list_models",
    "load_config",
    "load_dataset",
    "load_model",
    "model_info",
    "predict",
    "read_description",
    "save_model",
    "train",
]
