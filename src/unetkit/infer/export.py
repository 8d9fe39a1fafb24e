"""Export a network to ONNX or TorchScript, shape-dynamic, with the model description as metadata."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from unetkit.errors import UnetkitError, require
from unetkit.shapes import ShapeContract
from unetkit.utils import atomic_path

METADATA_KEY = "unetkit"


def _description_json(model: torch.nn.Module) -> str:
    desc = getattr(model, "description", None)
    if desc is not None:
        return str(desc.model_dump_json(by_alias=True))
    from unetkit.modelfile import describe

    return str(describe(model).model_dump_json(by_alias=True))  # type: ignore[arg-type]


def onnx_bytes(model: torch.nn.Module, opset: int = 17) -> bytes:
    """The network as a serialised ONNX model: input ``image (B, C, *S)``, output ``logits (B, K, *S_out)``.

    Batch and every spatial axis are dynamic; any size legal for the network (``model.contract``) works.
    The trace runs one step above the smallest legal size, at least 32 per axis (:meth:`ShapeContract.round`). The
    model description JSON is stored in the metadata under ``"unetkit"``: :func:`read_onnx_description`
    and :func:`unetkit.modelfile.shape_contract` give the legal sizes back without torch's network.

    Shape:
        ``image (B, C, *S) -> logits (B, K, *model.output_shape(S))``
    """
    onnx: Any = require("onnx", "onnx", "ONNX export")
    contract: ShapeContract = model.contract  # type: ignore[assignment]
    dims = contract.spatial_dims
    # one step above the smallest size, so the bottom feature map has >= 2 pixels per axis: instance norm
    # cannot be traced on a single pixel (and 32 at least, so shape-dependent code sees a real grid)
    size = contract.round(
        [max(m + s, 32) for m, s in zip(contract.min_input_size(), contract.steps(), strict=True)], "export"
    )
    x = torch.zeros(1, int(model.in_channels), *size)  # type: ignore[arg-type]
    axes_in = {0: "batch", **{2 + i: f"in{i}" for i in range(dims)}}
    axes_out = {0: "batch", **{2 + i: f"out{i}" for i in range(dims)}}
    buf = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks that become constants
            torch.onnx.export(  # a BytesIO is accepted at run time
                model, (x,), buf,  # type: ignore[arg-type]
                input_names=["image"], output_names=["logits"], opset_version=opset,
                dynamic_axes={"image": axes_in, "logits": axes_out}, dynamo=False,
            )  # fmt: skip
    except Exception as exc:  # the exporter raises many untyped errors
        raise UnetkitError(f"ONNX export failed: {exc}") from exc
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, _description_json(model)
    return bytes(proto.SerializeToString())


def export_onnx(model: torch.nn.Module, path: str | os.PathLike[str], opset: int = 17) -> Path:
    """Write :func:`onnx_bytes` to ``path`` atomically and return the path."""
    path = Path(path)
    data = onnx_bytes(model, opset)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def read_onnx_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model description stored in an exported ONNX file's metadata."""
    ort: Any = require("onnxruntime", "onnx", "reading an ONNX model")
    try:
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as exc:  # onnxruntime's errors are untyped
        raise UnetkitError(f"{path}: not a readable ONNX model ({exc})") from None
    raw = meta.custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise UnetkitError(f"{path}: an ONNX model without a unetkit description; export it with `unetkit export`")
    return dict(json.loads(raw))


def _trace_input(model: torch.nn.Module) -> torch.Tensor:
    """A zero input at the smallest legal size of at least 32 per axis (the size exports trace at)."""
    contract: ShapeContract = model.contract  # type: ignore[assignment]
    size = contract.round([max(m, 32) for m in contract.min_input_size()], "export")
    return torch.zeros(1, int(model.in_channels), *size)  # type: ignore[arg-type]


def torchscript_module(model: torch.nn.Module) -> torch.jit.ScriptModule:
    """The network traced to TorchScript (``torch.jit.trace``; on CPU, in eval mode).

    The trace records the input's symbolic shape, so the module runs at every legal size of the network,
    not only the traced one (tested for every preset against the PyTorch network).

    Shape:
        ``image (B, C, *S) -> logits (B, K, *model.output_shape(S))``
    """
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks that become constants
            traced = torch.jit.trace(model, _trace_input(model), check_trace=False)
    except Exception as exc:  # the tracer raises many untyped errors
        raise UnetkitError(f"TorchScript export failed: {exc}") from exc
    finally:
        model.train(was_training)
    return traced


def export_torchscript(model: torch.nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write :func:`torchscript_module` to ``path`` atomically, the description as the extra file ``unetkit``.

    QuPath and deepImageJ load such a file; ``torch.jit.load(path, _extra_files={"unetkit": ""})`` gives the
    description back.
    """
    path = Path(path)
    traced = torchscript_module(model)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={METADATA_KEY: _description_json(model)})
    return path
