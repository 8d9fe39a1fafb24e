"""The augmentation configuration: one probability and one range per transform.

Defaults follow nnU-Net's (which were tuned over many segmentation datasets), plus the U-Net paper's elastic
deformation (3x3 control grid, 10 px standard deviation), which nnU-Net leaves off:

===========  ====  =======================================================================
transform    p     range
===========  ====  =======================================================================
flip         0.5   per spatial axis, independently
rot90        0.5   k in {1, 2, 3} quarter turns in the plane of the last two axes
rotate       0.2   +-180 deg in 2D; +-30 deg about each axis in 3D (``degrees=None``)
scale        0.2   zoom 0.7 - 1.4 (log-uniform; > 1 enlarges the content)
elastic      0.2   3x3 (3x3x3) control points, displacements ~ N(0, 10 px)
noise        0.1   std 0 - 0.1 of each image's standard deviation
blur         0.2   Gaussian sigma 0.5 - 1.0 px
brightness   0.15  intensity x 0.75 - 1.25
contrast     0.15  (x - mean) x 0.75 - 1.25 + mean, clipped to the original range
gamma        0.3   gamma 0.7 - 1.5 (log-uniform) on the min-max rescaled image
===========  ====  =======================================================================
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from unetkit.errors import ConfigError


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    p: float = Field(default=0.0, ge=0.0, le=1.0, description="Probability that a sample gets this transform.")


def _check_range(
    value: tuple[float, float], name: str, *, above: float | None = None, inclusive: bool = False, what: str = ""
) -> tuple[float, float]:
    """A finite ``(low, high)`` with ``low <= high`` and, when ``above`` is given, ``low > above`` (``>=``
    with ``inclusive``); ``what`` names the values in the message."""
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be two finite numbers (low, high) with low <= high, got {value}")
    if above is not None and (lo < above if inclusive else lo <= above):
        raise ValueError(f"{what or name} must be {'>=' if inclusive else '>'} {above:g}, got {value}")
    return value


class FlipConfig(_Part):
    """Mirror each spatial axis independently with probability ``p``."""

    p: float = Field(default=0.5, ge=0.0, le=1.0)


class Rot90Config(_Part):
    """Rotate by k * 90 degrees (k uniform in 1..3) in the plane ``axes`` (spatial axes, default the last two)."""

    p: float = Field(default=0.5, ge=0.0, le=1.0)
    axes: tuple[int, int] = (-2, -1)

    @field_validator("axes")
    @classmethod
    def _distinct(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] == v[1]:
            raise ValueError(f"axes must name two different spatial axes, got {v}")
        return v


class RotateConfig(_Part):
    """Rotate by a uniform angle in ``degrees``; in 3D one angle about each axis.

    ``degrees=None`` means (-180, 180) in 2D and (-30, 30) in 3D (large out-of-plane rotations of anisotropic
    volumes mostly produce interpolation blur). ``axis=a`` (3D) rotates about spatial axis ``a`` only, by
    (-180, 180) unless ``degrees`` says otherwise: in-plane rotation of a stack whose axis ``a`` is coarse.
    """

    p: float = Field(default=0.2, ge=0.0, le=1.0)
    degrees: tuple[float, float] | None = None
    axis: int | None = Field(
        default=None,
        ge=0,
        le=2,
        description="3D only: rotate about this spatial axis alone (in-plane, for anisotropic stacks); "
        "None rotates about every axis",
    )

    @field_validator("degrees")
    @classmethod
    def _range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if v is None else _check_range(v, "degrees")

    def range_for(self, spatial_dims: int) -> tuple[float, float]:
        """The angle range in degrees for ``spatial_dims``."""
        if self.degrees is not None:
            return self.degrees
        return (-180.0, 180.0) if spatial_dims == 2 or self.axis is not None else (-30.0, 30.0)


class ScaleConfig(_Part):
    """Zoom by a log-uniform factor in ``range`` (> 1 enlarges the content); ``per_axis`` draws one per axis."""

    p: float = Field(default=0.2, ge=0.0, le=1.0)
    range: tuple[float, float] = (0.7, 1.4)
    per_axis: bool = False

    @field_validator("range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v, "range", above=0, what="zoom factors")


class ElasticConfig(_Part):
    """The paper's elastic deformation: displacements ~ N(0, ``sigma`` px) on a ``grid``^dims control grid.

    The coarse displacements are interpolated to every pixel with a cubic (bicubic / tricubic) kernel.
    """

    p: float = Field(default=0.2, ge=0.0, le=1.0)
    grid: int = Field(default=3, ge=2, le=64, description="Control points per axis (corners included).")
    sigma: float = Field(default=10.0, ge=0.0, description="Standard deviation of the displacements, in pixels.")


class NoiseConfig(_Part):
    """Add Gaussian noise whose std is a uniform fraction in ``std`` of the image's own std."""

    p: float = Field(default=0.1, ge=0.0, le=1.0)
    std: tuple[float, float] = (0.0, 0.1)

    @field_validator("std")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v, "std", above=0, inclusive=True, what="noise std")


class BlurConfig(_Part):
    """Gaussian blur with a uniform ``sigma`` (pixels) on every spatial axis."""

    p: float = Field(default=0.2, ge=0.0, le=1.0)
    sigma: tuple[float, float] = (0.5, 1.0)

    @field_validator("sigma")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v, "sigma", above=0, what="blur sigma")


class FactorConfig(_Part):
    """A multiplicative factor drawn uniformly from ``range``."""

    p: float = Field(default=0.15, ge=0.0, le=1.0)
    range: tuple[float, float] = (0.75, 1.25)

    @field_validator("range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v, "range", above=0, what="factors")


class GammaConfig(FactorConfig):
    """Gamma drawn log-uniformly from ``range``, applied to the min-max rescaled image, then mapped back."""

    p: float = Field(default=0.3, ge=0.0, le=1.0)
    range: tuple[float, float] = (0.7, 1.5)


class AugmentConfig(BaseModel):
    """What augmentation training applies: a probability and a range per transform.

    All spatial transforms (flip, rot90, rotate, scale, elastic) are composed into one sampling grid and
    applied in one resampling; intensity transforms touch the image only.

    >>> AugmentConfig().rotate.p
    0.2
    >>> AugmentConfig.none().flip.p
    0.0
    >>> AugmentConfig.model_validate({"elastic": {"p": 1.0, "sigma": 5}}).elastic.sigma
    5.0
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    flip: FlipConfig = FlipConfig()
    rot90: Rot90Config = Rot90Config()
    rotate: RotateConfig = RotateConfig()
    scale: ScaleConfig = ScaleConfig()
    elastic: ElasticConfig = ElasticConfig()
    noise: NoiseConfig = NoiseConfig()
    blur: BlurConfig = BlurConfig()
    brightness: FactorConfig = FactorConfig()
    contrast: FactorConfig = FactorConfig()
    gamma: GammaConfig = GammaConfig()
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    mask_interpolation: Literal["nearest", "label_linear"] = "nearest"

    SPATIAL_NAMES: ClassVar[tuple[str, ...]] = ("flip", "rot90", "rotate", "scale", "elastic")
    INTENSITY_NAMES: ClassVar[tuple[str, ...]] = ("noise", "blur", "brightness", "contrast", "gamma")

    @classmethod
    def none(cls) -> AugmentConfig:
        """A configuration that changes nothing (every probability 0)."""
        return cls.model_validate({name: {"p": 0.0} for name in (*cls.SPATIAL_NAMES, *cls.INTENSITY_NAMES)})

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "augment config") -> AugmentConfig:
        """Validate a plain dict, turning pydantic's errors into one :class:`ConfigError` naming each field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(f"{source}: {problems}. Fix these fields (see docs/augmentation.md).") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> AugmentConfig:
        """Read a YAML file: either the fields themselves or a mapping with an ``augment:`` section."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            msg = f"{path}: cannot read the augmentation config ({exc}); give a readable YAML file."
            raise ConfigError(msg) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of transform names, got {type(data).__name__}.")
        if set(data) == {"augment"} and isinstance(data["augment"], dict):
            data = data["augment"]
        return cls.from_dict(data, source=str(path))

    def to_yaml(self) -> str:
        """The configuration as YAML (every field, so a saved run documents what it used)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
