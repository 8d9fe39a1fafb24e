"""unetkit: U-Net image segmentation in 2D and 3D.

The public Python API in one place::

    >>> import unetkit
    >>> model = unetkit.create_model("unet2d_small", in_channels=1, num_classes=2)
    >>> model.spatial_dims
    2
"""

from __future__ import annotations

from unetkit._version import __version__
from unetkit.errors import InputShapeError, ModelFileError, UnetkitError
from unetkit.modelfile import ModelDescription, load_model, read_description, save_model
from unetkit.models import UNet, create_model, list_models, model_info

__all__ = [
    "InputShapeError",
    "ModelDescription",
    "ModelFileError",
    "UNet",
    "UnetkitError",
    "__version__",
    "create_model",
    "list_models",
    "load_model",
    "model_info",
    "read_description",
    "save_model",
]
