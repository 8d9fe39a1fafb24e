"""The per-user cache of prediction: exported graphs (fp32 and INT8 ONNX) and the measured backend choice.

Everything lives under one folder, :func:`cache_dir`: ``$UNETKIT_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/unetkit``, else ``~/.cache/unetkit``. Files are written atomically, so two processes
that export the same model at once both end with a whole file. Deleting the folder is always safe: its
contents are rebuilt on the next run.

Layout::

    graphs/<digest>.onnx        the network's fp32 ONNX export (shape-dynamic: one file for every tile)
    graphs/<digest>.int8.onnx   its INT8 (QDQ) version, written by ``unetkit export --int8`` once it passed the guard
    backend-choice.json         the measured fastest CPU backend, one entry per machine key (infer.select)
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ENV_VAR = "UNETKIT_CACHE_DIR"


def cache_dir() -> Path:
    """The cache folder (not created here).

    >>> import os
    >>> os.environ["UNETKIT_CACHE_DIR"] = "/tmp/uk-cache"; str(cache_dir())
    '/tmp/uk-cache'
    >>> del os.environ["UNETKIT_CACHE_DIR"]
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "unetkit"


def network_digest(model: torch.nn.Module) -> str:
    """sha256 of what an export depends on: the weights (names, dtypes, shapes, bytes, in order), the model
    description JSON, and the torch version (the exporter).

    The same bytes as a safetensors payload of the same network, so a model file loaded twice, in two
    processes, has one digest; any change to a weight or to the description gives another.
    """
    from unetkit.infer.export import _description_json

    h = hashlib.sha256()
    h.update(f"torch {torch.__version__}\n".encode())
    h.update(_description_json(model).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"\n{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def graph_path(model: torch.nn.Module, precision: str = "fp32", opset: int = 17) -> Path:
    """Where the cached export of ``model`` at ``precision`` (``fp32`` or ``int8``) lives (it may not exist)."""
    stem = f"{network_digest(model)[:32]}-opset{opset}"
    return cache_dir() / "graphs" / (f"{stem}.onnx" if precision == "fp32" else f"{stem}.{precision}.onnx")


def cached_onnx(model: torch.nn.Module, opset: int = 17) -> Path | bytes:
    """The fp32 ONNX export of ``model`` from the cache, exported (and cached) on a miss.

    The graph is shape-dynamic (batch and every spatial axis), so one file serves every tile shape; the
    backends fix the shape when they compile it. A cache folder that cannot be written (read-only home)
    gives the graph in memory instead (bytes), with a warning.
    """
    from unetkit.infer.export import export_onnx, onnx_bytes

    path = graph_path(model, "fp32", opset)
    if path.is_file():
        log.info("exported graph from the cache: %s", path)
        return path
    log.info("exporting the network to ONNX (cached as %s)", path)
    try:
        return export_onnx(model, path, opset=opset)
    except OSError as exc:
        log.warning("cannot write the graph cache %s (%s); exporting in memory (set %s)", path, exc, ENV_VAR)
        return onnx_bytes(model, opset)
