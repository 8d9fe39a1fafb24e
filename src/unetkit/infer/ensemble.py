"""Ensembles: several model files (the folds of a cross-validation) predict as one, probabilities averaged.

The members must agree on everything prediction depends on (shape contract, channels, classes,
normalisation); they then share one tile plan, and each tile is run through every member and the
probabilities are averaged before arg-max, so the tiler, streaming and writers are unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from unetkit.errors import ConfigError
from unetkit.infer.loading import load_predictor
from unetkit.infer.predictor import Predictor


class EnsembleBackend:
    """Runs a batch through every member backend and averages the probabilities.

    Shape:
        ``(B, C, *S) -> (B, K, *S_out)``
    """

    def __init__(self, backends: Sequence[Any]) -> None:
        if not backends:
            raise ConfigError("an ensemble needs at least one model")
        self.backends = list(backends)
        self.name = f"ensemble of {len(self.backends)} ({self.backends[0].name})"
        self.device = self.backends[0].device

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        total = self.backends[0](batch).astype(np.float32, copy=True)
        for b in self.backends[1:]:
            total += b(batch)
        return total / np.float32(len(self.backends))


def _signature(p: Predictor) -> dict[str, Any]:
    desc = p.description
    return {
        "task": desc.task if desc is not None else "segment",
        "target_normalization": desc.target_normalization if desc is not None else None,
        "contract": p.contract,
        "in_channels": p.in_channels,
        "num_classes": p.num_classes,
        "normalization": p.normalization,
        "classes": list(desc.class_names) if desc is not None else None,
        "spacing": list(desc.spacing) if desc is not None and desc.spacing else None,
    }


def load_ensemble(paths: Sequence[str | os.PathLike[str]], **options: Any) -> Predictor:
    """One :class:`Predictor` for several model files, averaging their probabilities tile by tile.

    Args:
        paths: model files (``.safetensors`` or ``.onnx``); one path gives a plain predictor.
        **options: :class:`Predictor` options, the same for every member.

    Raises:
        ConfigError: when the members disagree on what prediction depends on (names the field and files).
    """
    if len(paths) == 1:
        return load_predictor(str(paths[0]), **options)
    members = [load_predictor(str(p), **options) for p in paths]
    first = _signature(members[0])
    for path, member in zip(paths[1:], members[1:], strict=True):
        sig = _signature(member)
        for key, value in first.items():
            if sig[key] != value and first["task"] == "restore" and key in ("normalization", "target_normalization"):
                raise ConfigError(
                    f"{path}: its {key.replace('_', ' ')} differs from {paths[0]}'s: a restoration model scales "
                    "inputs and targets by its own training images (folds differ), so their outputs cannot be "
                    "averaged; predict with one model file"
                )
            if sig[key] != value:
                raise ConfigError(
                    f"{path}: its {key} differs from {paths[0]}'s; an ensemble's models must be trained alike "
                    "(e.g. the folds of unetkit train DATA --folds N)"
                )
    lead = members[0]
    lead.backend = EnsembleBackend([m.backend for m in members])
    lead.ensemble_size = len(members)  # type: ignore[attr-defined]
    return lead
