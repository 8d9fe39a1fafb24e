"""Networks: the U-Net family, one implementation for 2D and 3D, and the preset registry."""

from __future__ import annotations

from unetkit.models.base import SegmentationModel
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

__all__ = [
    "MODEL_CLASSES",
    "SegmentationModel",
    "UNet",
    "create_model",
    "get_preset",
    "list_models",
    "model_info",
    "register_class",
    "register_preset",
]
