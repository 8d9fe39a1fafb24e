"""Networks: the U-Net family, one implementation for 2D and 3D, and the preset registry.

``UNet`` covers the Residual U-Net (``block="residual"``) and the Attention U-Net (``attention=True``);
``MultiResUNet`` and ``UNETR`` are their own classes. Importing this package registers all of them.
"""

from __future__ import annotations

from unetkit.models.base import SegmentationModel, memory_format
from unetkit.models.multires import MultiResUNet
from unetkit.models.registry import (
    MODEL_CLASSES,
    create_model,
    get_preset,
    list_models,
    model_info,
    register_class,
    register_preset,
)
from unetkit.models.unet import UNet
from unetkit.models.unetr import UNETR

__all__ = [
    "MODEL_CLASSES",
    "UNETR",
    "MultiResUNet",
    "SegmentationModel",
    "UNet",
    "create_model",
    "get_preset",
    "list_models",
    "memory_format",
    "model_info",
    "register_class",
    "register_preset",
]
