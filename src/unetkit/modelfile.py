"""The model file: one ``.safetensors`` file with the weights and, in its header, a JSON description.

The description rebuilds the network with no other input (class + arguments), and carries what prediction
and evaluation need: channels, class names and colours, the raw mask value -> class mapping the model was
trained with (``label_mapping``, absent in files written before it existed), normalisation, preferred tile
size, provenance, versions. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unetkit._version import __version__
from unetkit.classes import Classes
from unetkit.errors import DataError, ModelFileError, UnetkitError
from unetkit.models.base import SegmentationModel
from unetkit.models.registry import MODEL_CLASSES, build
from unetkit.shapes import ShapeContract
from unetkit.utils import atomic_path

FORMAT_NAME = "unetkit-model"
FORMAT_VERSION = 1
METADATA_KEY = "unetkit"


class Architecture(BaseModel):
    """How to rebuild the network: a class from the closed set ``MODEL_CLASSES`` and its arguments."""

    model_config = ConfigDict(extra="forbid")
    cls: str = Field(alias="class")
    preset: str | None = None
    args: dict[str, Any]


class Normalization(BaseModel):
    """Intensity normalisation applied before the network: ``kind`` and its fitted parameters."""

    model_config = ConfigDict(extra="forbid")
    kind: str = "none"
    params: dict[str, Any] = Field(default_factory=dict)


class ModelDescription(BaseModel):
    """Everything a model file says about its model (the JSON in the safetensors header)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    unetkit_version: str = __version__
    task: Literal["segment", "restore"] = Field(
        "segment", description="segment: class logits (softmax); restore: images (linear head); old files: segment"
    )
    architecture: Architecture
    spatial_dims: int
    in_channels: int
    num_classes: int
    class_names: list[str]
    class_colours: list[tuple[int, int, int]]
    label_mapping: dict[str, Any] | None = Field(
        None, description="raw mask value -> class (unetkit.data.masks.LabelMapping.to_dict); None in old files"
    )
    normalization: Normalization = Field(default_factory=Normalization)
    target_normalization: dict[str, Any] | None = Field(
        None,
        description="restore: the targets' scaling (a range Normalizer's dict plus the target dtype), inverted "
        "at prediction",
    )
    tile_size: list[int] | None = None
    spacing: list[float] | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)


def shape_contract(description: ModelDescription | Mapping[str, Any], what: str = "model description") -> ShapeContract:
    """The network's shape contract from its description alone: no layer is built, no weight read.

    This is how an exported ONNX file (whose metadata carries the description) knows its legal sizes.

    Args:
        description: a :class:`ModelDescription`, or its JSON as a dict (only ``architecture`` is read).
        what: names the source in error messages (e.g. the file).

    Raises:
        ModelFileError: the description names an unknown class or arguments it does not accept.

    >>> shape_contract({"architecture": {"class": "UNet", "args": {"spatial_dims": 2, "in_channels": 1,
    ...                 "num_classes": 2, "padding": "valid"}}}).min_input_size()
    (188, 188)
    """
    if isinstance(description, ModelDescription):
        arch = description.architecture
    else:
        try:
            arch = Architecture.model_validate(description.get("architecture"))
        except ValidationError as exc:
            raise ModelFileError(f"{what}: no valid 'architecture' entry: {exc}") from None
    cls = MODEL_CLASSES.get(arch.cls)
    if cls is None:
        raise ModelFileError(
            f"{what}: names the network class {arch.cls!r}, which this unetkit does not have "
            f"(known: {', '.join(sorted(MODEL_CLASSES))}); upgrade unetkit"
        )
    try:
        return cls.contract_from_args(**arch.args)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{what}: {exc}") from None


def describe(model: SegmentationModel, **info: Any) -> ModelDescription:
    """Build the description of ``model``; ``info`` sets any other :class:`ModelDescription` field."""
    cls_name = type(model).__name__
    if MODEL_CLASSES.get(cls_name) is not type(model):
        raise UnetkitError(f"cannot describe a {cls_name}: not a registered unetkit network class")
    allowed = set(ModelDescription.model_fields) - {"architecture", "spatial_dims", "in_channels", "num_classes"}
    unknown = sorted(set(info) - allowed)
    if unknown:
        raise UnetkitError(f"save_model: unknown field(s) {unknown}; accepted: {', '.join(sorted(allowed))}")
    n = model.num_classes
    defaults = Classes.default(n)
    info.setdefault("class_names", list(defaults.names))
    info.setdefault("class_colours", list(defaults.colours))
    try:
        desc = ModelDescription(
            architecture=Architecture.model_validate(
                {"class": cls_name, "preset": getattr(model, "preset", None), "args": model.hparams}
            ),
            spatial_dims=model.spatial_dims, in_channels=model.in_channels, num_classes=n, **info,
        )  # fmt: skip
    except ValidationError as exc:
        raise UnetkitError(f"save_model: bad model information: {exc}") from exc
    for field in ("class_names", "class_colours"):
        if len(getattr(desc, field)) != n:
            raise UnetkitError(f"save_model: {field} has {len(getattr(desc, field))} entries for {n} classes")
    if desc.label_mapping is not None and desc.task == "segment":
        from unetkit.data.masks import LabelMapping

        try:
            k = LabelMapping.from_dict(desc.label_mapping).num_classes
        except DataError as exc:
            raise UnetkitError(f"save_model: label_mapping: {exc}") from None
        if k != max(n, 2):  # a single-logit network predicts 2 classes
            raise UnetkitError(f"save_model: label_mapping gives {k} classes for a network with {n}")
    return desc


def save_model(path: str | os.PathLike[str], model: SegmentationModel, **info: Any) -> Path:
    """Write ``model``'s weights and description to one ``.safetensors`` file, atomically.

    Args:
        path: destination, conventionally ``*.safetensors``.
        model: a registered unetkit network.
        **info: description fields: ``class_names``, ``class_colours`` (defaults:
            :meth:`unetkit.classes.Classes.default`), ``label_mapping`` (``LabelMapping.to_dict()``),
            ``normalization`` (``{"kind": ..., "params": {...}}``), ``tile_size``, ``spacing``, ``provenance``,
            ``extra``.

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    desc = describe(model, **info)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {METADATA_KEY: desc.model_dump_json(by_alias=True), "format": "pt"}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def _check_header(path: Path) -> dict[str, Any]:
    """Read and check the safetensors header by hand, so damaged files get a precise message."""
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; give the .safetensors file inside it")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        first = f.read(1)
        if first != b"{" and (head[:2] == b"PK" or head[:1] == b"\x80"):  # a zip or a raw pickle stream
            raise ModelFileError(
                f"{path}: this is a PyTorch pickle checkpoint, which unetkit never loads (unpickling can run "
                "arbitrary code); save the model with unetkit.save_model to get a .safetensors model file"
            )
        if len(head) < 8:
            raise ModelFileError(f"{path}: empty or truncated file ({size} bytes); copy or download it again")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > 100_000_000 or first not in (b"{", b""):
            raise ModelFileError(f"{path}: not a safetensors model file (bad header); is this the right file?")
        raw = first + f.read(n - 1)
    if len(raw) < n:
        raise ModelFileError(f"{path}: truncated file (header cut short); copy or download it again")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: not a safetensors model file (header is not JSON)") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ModelFileError(
            f"{path}: truncated file ({size} bytes, the header promises {8 + n + end}); copy or download it again"
        )
    return header


def read_description(path: str | os.PathLike[str]) -> ModelDescription:
    """Read a model file's description without loading its weights."""
    path = Path(path)
    header = _check_header(path)
    meta = header.get("__metadata__") or {}
    if METADATA_KEY not in meta:
        raise ModelFileError(
            f"{path}: a safetensors file, but not a unetkit model file (no '{METADATA_KEY}' description in its "
            "header); load the weights into a unetkit network and save it with unetkit.save_model"
        )
    try:
        raw = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: the unetkit description in the header is not valid JSON") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if not isinstance(version, int):
        raise ModelFileError(f"{path}: the unetkit description has no format_version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written by a newer unetkit (model-file format {version}, this unetkit "
            f"{__version__} reads up to {FORMAT_VERSION}); upgrade with: pip install -U unetkit"
        )
    try:
        return ModelDescription.model_validate(raw)
    except ValidationError as exc:
        raise ModelFileError(f"{path}: the unetkit description is malformed: {exc}") from None


ARG_BOUND = 2**16
"""The largest integer a model file's architecture argument may hold (widths, depths, sizes); more is absurd."""


def _build_checked(path: Path, cls: type[SegmentationModel], args: dict[str, Any], header: dict[str, Any]) -> Any:
    """Build the described network only after its description is checked against sane bounds and the tensors.

    A model file is untrusted input. Every number in its arguments must be at most :data:`ARG_BOUND` and every
    list at most 64 long, and the network is first built on PyTorch's ``meta`` device (no memory) and its
    parameter names and shapes compared with the file's tensors, so a header claiming width 10**8 is refused
    before anything is allocated.
    """
    import torch

    def numbers(v: Any) -> list[Any]:
        if isinstance(v, (list, tuple)):
            if len(v) > 64:
                raise ModelFileError(f"{path}: an architecture argument is a list of {len(v)}; not a real network")
            return [x for item in v for x in numbers(item)]
        return [v]

    for key, value in args.items():
        for x in numbers(value):
            if isinstance(x, (int, float)) and not isinstance(x, bool) and not abs(x) <= ARG_BOUND:
                raise ModelFileError(
                    f"{path}: architecture argument {key}={value!r} is beyond any real network (at most "
                    f"{ARG_BOUND}); the file is damaged or not a unetkit model; copy or download it again"
                )
    try:
        with torch.device("meta"):
            skeleton = build(cls, args, f"{path}")
    except UnetkitError as exc:
        raise ModelFileError(str(exc)) from None
    want = {k: list(v.shape) for k, v in skeleton.state_dict().items()}
    have = {k: list(v.get("shape", [])) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    if want != have:
        diff = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have.get(k)]
        raise ModelFileError(
            f"{path}: the described network does not match the file's tensors ({len(diff)} differ, e.g. "
            f"{diff[0]!r}); the file is damaged or was edited; copy or download it again"
        )
    try:
        return build(cls, args, f"{path}")
    except UnetkitError as exc:
        raise ModelFileError(str(exc)) from None


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SegmentationModel:
    """Rebuild a network from a model file, in eval mode, with ``model.description`` set.

    Args:
        path: a file written by :func:`save_model`.
        device: where to put the weights.

    Returns:
        The network; ``model.description`` is its :class:`ModelDescription`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    desc = read_description(path)
    cls = MODEL_CLASSES.get(desc.architecture.cls)
    if cls is None:
        raise ModelFileError(
            f"{path}: names the network class {desc.architecture.cls!r}, which this unetkit does not have "
            f"(known: {', '.join(sorted(MODEL_CLASSES))}); upgrade unetkit"
        )
    model = _build_checked(path, cls, dict(desc.architecture.args), _check_header(path))
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(f"{path}: cannot read the weights ({exc}); copy or download the file again") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: the weights do not fit the described network: {exc}") from None
    model.preset = desc.architecture.preset  # type: ignore[assignment]
    model.description = desc  # type: ignore[assignment]
    return model.to(device).eval()
