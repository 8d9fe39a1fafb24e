"""Named presets: tiny functions with literal numbers, looked up by ``create_model(name, **overrides)``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from unetkit.errors import UnetkitError
from unetkit.models.base import SegmentationModel
from unetkit.models.unet import UNet

#: Network classes a model file may name. A closed set: nothing is imported by name from a file.
MODEL_CLASSES: dict[str, type[SegmentationModel]] = {"UNet": UNet}


@dataclass(frozen=True)
class Preset:
    """A registered preset: its network class, its literal arguments and a one-line description."""

    name: str
    cls: type[SegmentationModel]
    args: dict[str, Any]
    description: str


_PRESETS: dict[str, Preset] = {}


def register_preset(name: str, cls: type[SegmentationModel], description: str, **args: Any) -> None:
    """Register a preset (used below and by variant modules)."""
    if name in _PRESETS:
        raise ValueError(f"preset {name!r} is already registered")
    _PRESETS[name] = Preset(name, cls, dict(args), description)


def register_class(cls: type[SegmentationModel]) -> type[SegmentationModel]:
    """Allow model files to name ``cls`` (a class decorator for network variants)."""
    MODEL_CLASSES[cls.__name__] = cls
    return cls


register_preset(
    "unet_paper", UNet, "Ronneberger et al. 2015: 1 channel, 2 classes, valid padding, 64..1024 channels",
    spatial_dims=2, in_channels=1, num_classes=2, depth=4, width=64, padding="valid",
)  # fmt: skip
register_preset(
    "unet2d_small", UNet, "2D, same padding, depth 3, width 16, batch norm: CPU training in minutes",
    spatial_dims=2, in_channels=1, num_classes=2, depth=3, width=16, padding="same", norm="batch",
)  # fmt: skip
register_preset(
    "unet2d_medium", UNet, "2D, same padding, depth 4, width 32, batch norm: GPU work",
    spatial_dims=2, in_channels=1, num_classes=2, depth=4, width=32, padding="same", norm="batch",
)  # fmt: skip
register_preset(
    "unet3d_small", UNet, "3D, same padding, depth 3, width 8, instance norm: CPU-sized volumes",
    spatial_dims=3, in_channels=1, num_classes=2, depth=3, width=8, padding="same", norm="instance",
)  # fmt: skip
register_preset(
    "unet3d_medium", UNet, "3D, same padding, depth 4, width 32, instance norm: GPU work",
    spatial_dims=3, in_channels=1, num_classes=2, depth=4, width=32, padding="same", norm="instance",
)  # fmt: skip
# Residual and Attention U-Nets are UNet options (block=, attention=); MultiResUNet and UNETR register their
# presets in their own modules.
register_preset(
    "resunet2d_small", UNet, "Residual U-Net 2D: residual blocks, same, depth 3, width 16, batch norm",
    spatial_dims=2, in_channels=1, num_classes=2, depth=3, width=16, padding="same", norm="batch", block="residual",
)  # fmt: skip
register_preset(
    "resunet3d_small", UNet, "Residual U-Net 3D: residual blocks, same, depth 3, width 8, instance norm",
    spatial_dims=3, in_channels=1, num_classes=2, depth=3, width=8, padding="same", norm="instance",
    block="residual",
)  # fmt: skip
register_preset(
    "attention_unet2d_small", UNet, "Attention U-Net 2D (Oktay 2018): gated skips, same, depth 3, width 16, batch",
    spatial_dims=2, in_channels=1, num_classes=2, depth=3, width=16, padding="same", norm="batch", attention=True,
)  # fmt: skip
register_preset(
    "attention_unet3d_small", UNet, "Attention U-Net 3D (Oktay 2018): gated skips, same, depth 3, width 8, instance",
    spatial_dims=3, in_channels=1, num_classes=2, depth=3, width=8, padding="same", norm="instance", attention=True,
)  # fmt: skip
# The planner's families (`unetkit plan`): nnU-Net-like defaults that the plan reshapes (pool_sizes, kernel_sizes,
# depth, width) to the data; used as they are, they are sound general-purpose nets.
register_preset(
    "unet2d", UNet, "Planned 2D U-Net: instance norm, leaky ReLU, widths 32..512; `unetkit plan` sets its shape",
    spatial_dims=2, in_channels=1, num_classes=2, depth=5, width=32, max_width=512, padding="same", norm="instance",
    activation="leaky_relu",
)  # fmt: skip
register_preset(
    "unet3d", UNet, "Planned 3D U-Net: instance norm, leaky ReLU, widths 32..320; `unetkit plan` sets its shape",
    spatial_dims=3, in_channels=1, num_classes=2, depth=4, width=32, max_width=320, padding="same", norm="instance",
    activation="leaky_relu",
)  # fmt: skip


def list_models() -> list[str]:
    """The registered preset names, sorted.

    >>> "unet_paper" in list_models()
    True
    """
    return sorted(_PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or an error listing the known ones."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise UnetkitError(
            f"unknown model {name!r}; known models: {', '.join(list_models())} (see `unetkit models`)"
        ) from None


def build(cls: type[SegmentationModel], args: dict[str, Any], what: str) -> SegmentationModel:
    """Instantiate ``cls(**args)``, turning unknown or bad arguments into a clear error."""
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise UnetkitError(f"{what}: unknown argument(s) {unknown} for {cls.__name__}; accepted: {', '.join(accepted)}")
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise UnetkitError(f"{what}: {exc}") from exc


def create_model(name: str, **overrides: Any) -> SegmentationModel:
    """Build a preset, with any constructor argument overridden.

    Args:
        name: a name from :func:`list_models`.
        **overrides: constructor arguments, e.g. ``in_channels=3, num_classes=4, padding="valid"``.

    Returns:
        The network, with ``model.preset`` set to ``name``.

    Examples:
        >>> m = create_model("unet2d_small", in_channels=3, num_classes=4)
        >>> (m.spatial_dims, m.in_channels, m.num_classes)
        (2, 3, 4)
        >>> create_model("unet3d_small").spatial_dims
        3
    """
    preset = get_preset(name)
    model = build(preset.cls, {**preset.args, **overrides}, f"model {name!r}")
    model.preset = name  # type: ignore[assignment]
    return model


def model_info() -> list[dict[str, Any]]:
    """One row per preset: name, class, spatial dims, padding, parameter count and description."""
    rows = []
    for name in list_models():
        p = _PRESETS[name]
        with torch.device("meta"):  # shapes only: counting needs no memory and no initialisation
            model = p.cls(**p.args)
        rows.append(
            dict(name=name, cls=p.cls.__name__, spatial_dims=p.args["spatial_dims"],
                 padding=model.padding, parameters=model.count_parameters(), description=p.description)
        )  # fmt: skip
    return rows
