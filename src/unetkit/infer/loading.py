"""Opening a model file for prediction: :func:`load_predictor` (a ready :class:`~unetkit.infer.Predictor`) and
:func:`file_description` (only what the file says about the model), for every format unetkit writes:
``.safetensors``, an exported ``.onnx`` and a bioimage.io ``.zip``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from unetkit.errors import ConfigError, UnetkitError
from unetkit.infer.backends import GRAPH_BACKENDS, graph_backend
from unetkit.infer.predictor import DescribedNetwork, Predictor, head_for


def _onnx_description(path: Path) -> Any:
    """The unetkit description in an exported ONNX file's metadata (refused, with the file, where malformed)."""
    from pydantic import ValidationError

    from unetkit.infer.export import read_onnx_description
    from unetkit.modelfile import ModelDescription

    try:
        return ModelDescription.model_validate(read_onnx_description(path))
    except ValidationError as exc:
        raise UnetkitError(f"{path}: the unetkit description in the ONNX metadata is malformed: {exc}") from None


def file_description(path: str | os.PathLike[str]) -> Any:
    """The unetkit description (:class:`~unetkit.modelfile.ModelDescription`) of any file
    :func:`load_predictor` takes (``.safetensors``, ``.onnx``, bioimage.io ``.zip``), without building a
    backend: what a command reads to follow the model (its task, classes) before predicting."""
    from unetkit.infer.bioimageio import is_package, load_package_model
    from unetkit.modelfile import read_description

    p = Path(path)
    if p.suffix.lower() == ".onnx":
        return _onnx_description(p)
    if p.is_file() and is_package(p):
        return load_package_model(p).description  # type: ignore[attr-defined]
    return read_description(p)


def load_predictor(path: str, **kwargs: Any) -> Predictor:
    """A :class:`Predictor` for a model file (``.safetensors``), an exported ``.onnx`` file or a bioimage.io ``.zip``.

    An ``.onnx`` file runs on onnxruntime or openvino (``auto``: the faster here); its metadata's description
    gives the shape contract (:func:`unetkit.modelfile.shape_contract`): no torch network is built.
    """
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        name = kwargs.pop("backend", "auto")
        if name not in ("auto", *GRAPH_BACKENDS):
            raise ConfigError(f"{p}: an ONNX file runs with --backend onnxruntime, openvino or auto")
        if kwargs.pop("precision", "fp32") != "fp32":
            raise ConfigError(f"{p}: --precision applies to a model file; an ONNX file runs as it was exported")
        if name == "auto":
            from unetkit.infer.backends import resolve_device
            from unetkit.infer.select import fastest_backend

            on_cuda = resolve_device(kwargs.get("device", "auto")).type == "cuda"
            name = "onnxruntime" if on_cuda else fastest_backend(candidates=GRAPH_BACKENDS)
        desc = _onnx_description(p)
        network = DescribedNetwork.from_description(desc, str(p))
        backend = graph_backend(
            name, str(p), spatial_dims=desc.spatial_dims, device=kwargs.pop("device", "auto"),
            tta=kwargs.get("tta", False), head=head_for(desc),
        )  # fmt: skip
        for key in ("amp", "channels_last", "compile"):
            kwargs.pop(key, None)
        return Predictor(network, _backend=backend, **kwargs)
    from unetkit.infer.bioimageio import is_package, load_package_model

    if is_package(p):  # a bioimage.io package written by `unetkit export --format bioimageio`
        return Predictor(load_package_model(p), **kwargs)
    from unetkit.modelfile import load_model

    return Predictor(load_model(p), **kwargs)
