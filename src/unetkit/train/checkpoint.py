"""Pickle-free training checkpoints: every tensor in safetensors, everything else as JSON in its header.

A checkpoint holds the model weights, the optimizer and scheduler state, the sampling generator's state,
the epoch/step counters and the metric history, so ``--resume`` continues exactly where a run stopped. What
``last.safetensors`` holds, key by key, is :class:`unetkit.train.state.RunState`'s to say; this module only
stores and reads nested structures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from unetkit.errors import UnetkitError
from unetkit.utils import atomic_path

CHECKPOINT_VERSION = 1


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested structure by a ``{"__tensor__": key}`` reference."""
    if isinstance(obj, torch.Tensor):
        key = prefix.strip(".")
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {
            "__dict__": [
                [_flatten(k, f"{prefix}.k{i}", tensors), _flatten(v, f"{prefix}.{i}", tensors)]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, list | tuple):
        items = [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    return obj


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (nested dicts/lists of tensors, numbers, strings) atomically to a safetensors file."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    meta = {"unetkit_checkpoint": json.dumps({"version": CHECKPOINT_VERSION, "state": skeleton})}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UnetkitError(f"{path}: no checkpoint here; is this the run folder of a unetkit train run?")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UnetkitError(
            f"{path}: unreadable checkpoint ({exc}); resume from best.safetensors or start anew"
        ) from None
    if "unetkit_checkpoint" not in meta:
        raise UnetkitError(f"{path}: not a unetkit checkpoint")
    payload = json.loads(meta["unetkit_checkpoint"])
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise UnetkitError(f"{path}: written by a newer unetkit; upgrade unetkit to resume it")
    return _unflatten(payload["state"], tensors)
