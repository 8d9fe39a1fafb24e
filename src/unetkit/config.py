"""The training configuration: one YAML file, typed with pydantic, overridable from the command line.

Unknown keys and bad values fail before any work starts, with the field's dotted path in the message.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from unetkit.augment import AugmentConfig
from unetkit.classes import ClassSpec, parse_classes
from unetkit.errors import ConfigError
from unetkit.losses import RESTORE_LOSS_TABLE, LossName, RestoreLossName, loss_description, weight_map_description
from unetkit.utils import atomic_path, read_yaml


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WeightMapConfig(_Section):
    """The paper's weight map (eq. 2): border term ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` + class balance."""

    enabled: bool | Literal["auto"] = Field("auto", description=weight_map_description())
    w0: float = Field(10.0, gt=0, description="amplitude of the border term (paper: 10)")
    sigma: float = Field(5.0, gt=0, description="width of the border term in pixels (paper: 5)")
    balance_classes: bool = Field(True, description="w_c: weight classes by inverse frequency")


class ClassEntry(_Section):
    """One class of ``data.classes``: a name and an optional colour (``#rrggbb`` or ``[r, g, b]``)."""

    name: str
    colour: list[int] | None = None


class DataConfig(_Section):
    """Where the images are and how patches are drawn from them."""

    path: str | None = Field(None, description="dataset folder (images/ + masks/) or a CSV/YAML list of pairs")
    val_path: str | None = Field(None, description="separate validation dataset; else val_fraction of path")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of the images held out for validation")
    mask_kind: Literal["auto", "classes", "instances"] = "auto"
    ignore_index: int | None = Field(None, description="mask value that contributes nothing to loss/metrics")
    num_classes: int | None = Field(
        None, ge=2, description="pin the classes (class 0 included); mask values beyond them are problems"
    )
    classes: list[ClassEntry] | None = Field(
        None, description="class names (and colours), class 0 first: [membrane, {name: cell, colour: '#00ff00'}]"
    )
    normalization: Literal["zscore", "percentile", "range", "ct", "none"] = "zscore"
    target: Literal["classes", "boundary"] = Field(
        "classes",
        description="what the network learns: the mask's classes, or boundary: background/interior/boundary "
        "from instance masks (predict then separates touching objects)",
    )
    target_spacing: list[float] | None = Field(
        None, description="resample every image to this voxel spacing (images cubic, masks nearest); null: as stored"
    )
    slice_axis: int | None = Field(None, ge=0, le=2, description="train a 3D dataset as 2D slices along this axis")
    fold: int | None = Field(
        None, ge=0, description="validate on fold K of num_folds (cross-validation); null: val_fraction"
    )
    num_folds: int = Field(5, ge=2, description="folds of the cross-validation (with fold)")
    patch_size: list[int] | int = Field(128, description="network input size per axis (rounded to legal)")
    foreground_fraction: float = Field(0.33, ge=0, le=1, description="share of patches forced on foreground")
    weight_map: WeightMapConfig = Field(default_factory=WeightMapConfig)
    read: Literal["auto", "memory", "disk"] = Field(
        "auto",
        description="memory: load the images into RAM; disk: read training patches from the files (datasets "
        "larger than memory); auto: disk when the decoded set exceeds a quarter of the RAM",
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, v: Any) -> Any:
        if v is None:
            return None
        try:
            return [s.to_dict() for s in parse_classes(v, "data.classes")]
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("data.classes: ")) from None

    @model_validator(mode="after")
    def _classes_fit(self) -> DataConfig:
        if self.classes is not None and self.num_classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(
                f"data.classes names {len(self.classes)} classes but data.num_classes={self.num_classes}; "
                "name every class (class 0 first) or leave data.num_classes out"
            )
        return self

    def class_specs(self) -> list[ClassSpec] | None:
        """``data.classes`` as :class:`~unetkit.classes.ClassSpec` s (``None`` when not set)."""
        if self.classes is None:
            return None
        return [ClassSpec(c.name, tuple(c.colour) if c.colour is not None else None) for c in self.classes]  # type: ignore[arg-type]


class ModelConfig(_Section):
    """The network: a preset from `unetkit models` and overrides of its arguments."""

    name: str = "unet2d_small"
    args: dict[str, Any] = Field(default_factory=dict, description="e.g. {depth: 3, padding: valid}")


class TrainConfig(_Section):
    """Optimisation, schedule, devices and checkpoints."""

    epochs: int = Field(50, ge=1)
    iterations_per_epoch: int = Field(50, ge=1, description="optimizer steps per epoch")
    batch_size: int = Field(8, ge=1, description="patches per step and device")
    loss: LossName = Field("dice_ce", description=loss_description())
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="sgd uses the paper's momentum 0.99")
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.99, ge=0, lt=1, description="SGD momentum (paper: 0.99)")
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    warmup_epochs: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(12.0, description="max gradient norm; null disables")
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = Field(
        "auto", description="auto: bf16-mixed on CUDA with bf16, 32 on CPU"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    devices: int = Field(1, ge=1, description="processes/GPUs per node (DDP when > 1)")
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp"] = Field("auto", description="ddp across devices/nodes (torchrun, SLURM)")
    seed: int = 0
    val_every: int = Field(1, ge=1, description="validate every N epochs")
    early_stopping: int | None = Field(None, ge=1, description="stop after N validations without improvement")
    max_minutes: float | None = Field(None, gt=0, description="wall-clock budget: stop (validated, saved) after it")
    fill_budget: bool = Field(
        False, description="with max_minutes: add epochs of the same length while the budget buys them (planned runs)"
    )
    checkpoint_every: int = Field(0, ge=0, description="also save last.safetensors every N steps (0: per epoch)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    channels_last: bool = Field(
        False,
        description="channels-last memory layout (NHWC/NDHWC) for the network; the plan sets it where a measured "
        "step is faster",
    )
    tta: bool = Field(False, description="flip test-time augmentation during validation")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not (v.startswith("cuda:") and v[5:].isdigit()):
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
        return v


class RestoreConfig(_Section):
    """Image-to-image restoration (``task: restore``): loss, target normalisation, Noise2Void, pix2pix GAN."""

    loss: RestoreLossName = Field(
        "l1", description=" | ".join(RESTORE_LOSS_TABLE) + "; l1 is CARE's; see docs/restoration.md"
    )
    target_normalization: Literal["percentile", "range", "none"] = Field(
        "percentile", description="targets scaled with dataset percentiles (1, 99.8), inverted at prediction"
    )
    self_supervised: bool = Field(False, description="Noise2Void: learn from the noisy inputs alone (no targets)")
    n2v_fraction: float = Field(0.006, gt=0, lt=0.5, description="share of pixels blind-spot masked per patch")
    n2v_radius: int = Field(2, ge=1, description="masked pixels take a random neighbour within this radius")
    gan: bool = Field(False, description="pix2pix: a PatchGAN discriminator adds an adversarial loss (--gan)")
    gan_loss: Literal["lsgan", "bce"] = Field(
        "lsgan", description="adversarial loss: lsgan (least squares) | bce (non-saturating cross-entropy)"
    )
    gan_l1_weight: float = Field(100.0, gt=0, description="weight of the reconstruction loss against the "
                                 "adversarial term (pix2pix: 100)")  # fmt: skip
    gan_d_lr: float | None = Field(None, gt=0, description="discriminator learning rate; default train.lr / 2")
    gan_warmup: float = Field(0.1, ge=0, lt=1, description="share of the steps trained on the reconstruction "
                              "loss alone; the adversarial term then ramps in over as many")  # fmt: skip
    gan_real_label: float = Field(0.9, gt=0.5, le=1, description="the discriminator's target for real pairs "
                                  "(one-sided label smoothing)")  # fmt: skip
    gan_width: int = Field(32, ge=4, description="channels of the discriminator's first layer (pix2pix: 64)")


class Config(_Section):
    """The whole run: data, model, augmentation, training."""

    task: Literal["segment", "restore"] = Field("segment", description="segment (masks) | restore (images)")
    restore: RestoreConfig = Field(default_factory=RestoreConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def digest(self) -> str:
        """A short stable hash of the resolved configuration (recorded in the model file)."""
        dumped = self.model_dump(mode="json")
        if self.task == "segment":  # segmentation configs hash as they did before restoration existed
            dumped.pop("task"), dumped.pop("restore")
        return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


def _format_error(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = (
            "unknown key (check the spelling; `unetkit config init` lists all keys)"
            if err["type"] == "extra_forbidden"
            else err["msg"]
        )
        lines.append(
            f"  {loc}: {msg} (given: {err.get('input')!r})" if err["type"] != "extra_forbidden" else f"  {loc}: {msg}"
        )
    return ConfigError(f"{source}: invalid configuration:\n" + "\n".join(lines))


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict.

    >>> apply_overrides({}, ["train.lr=0.01", "model.args.depth=3"])
    {'train': {'lr': 0.01}, 'model': {'args': {'depth': 3}}}
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.lr=0.01")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a section")
        node[parts[-1]] = _parse_value(raw)
    return data


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults), apply ``--set`` overrides, validate everything.

    >>> load_config(overrides=["train.epochs=3"]).train.epochs
    3
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        loaded = read_yaml(path, "config file")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping with sections data/model/augment/train")
        data = loaded or {}
    data = apply_overrides(data, list(overrides or []))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _format_error(exc, source) from None


def _commented(model: BaseModel, indent: int = 0) -> list[str]:
    lines = []
    pad = "  " * indent
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if field.description:
            lines.append(f"{pad}# {field.description}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.extend(_commented(value, indent + 1))
        else:
            dumped = yaml.safe_dump({name: value}, default_flow_style=True, sort_keys=False).strip()
            lines.append(pad + dumped.removeprefix("{").removesuffix("}"))
    return lines


def default_config_text() -> str:
    """A commented YAML file with every key at its default (``unetkit config init``)."""
    head = [
        "# unetkit training configuration. Every key is optional; unknown keys are errors.",
        "# Use it with: unetkit train --config this.yaml [--set section.key=value ...]",
    ]
    return "\n".join(head + _commented(Config())) + "\n"


def save_config(config: Config, path: str | os.PathLike[str]) -> None:
    """Write the resolved configuration as YAML, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
