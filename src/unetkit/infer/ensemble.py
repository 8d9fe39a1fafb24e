"""Ensembles: several model files (the folds of a cross-validation) predict as one, their outputs averaged.

The members must agree on what the tile plan and the meaning of their outputs depend on (task, shape contract,
channels, output channels, classes, spacing); they then share the lead's (the first file's) tile plan, and each
tile is run through every member and the outputs are averaged, so the tiler, streaming, TTA and writers are
unchanged. Each member normalises the raw tiles with its own input normalisation, built once per image
(:func:`~unetkit.infer.predictor.tile_normaliser`, the predictor's rule: per-image statistics from the whole
image), once per distinct normalisation:

- segmentation: the members must also agree on the input normalisation (the folds of one dataset do), so one
  normaliser serves them all; the probabilities are averaged before arg-max.
- restoration (``task: restore``): each fold scales its inputs and its targets by its own training images. A
  member's outputs are mapped into the lead's output space, per channel, by the affine map
  ``lead_scaling⁻¹ ∘ member_scaling`` of their target scalings (:func:`unetkit.data.restore.scaling_affine`),
  then averaged; the lead's :meth:`~unetkit.infer.predictor.Predictor.to_target_range` brings the mean to the
  targets' range, where it equals the mean of the members' own ``restore()`` outputs (to float32 rounding).
  The members must agree on the targets' dtype (``--dtype target``).

Where two members' target normalisations differ, both must be affine maps that
:func:`~unetkit.data.restore.invert_scaling` undoes (``range``, or none recorded), and the lead's must be
invertible (no zero-width channel). A normalisation that clips (e.g. ``percentile``) loses the values it clipped,
so that member's outputs have no known place in the targets' range, and averaging them with another model's
would mix two spaces: such a member is refused (:class:`~unetkit.errors.ConfigError`, naming the file). Members
that record the same target normalisation share one output space and average there, whatever its kind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetkit.errors import ConfigError
from unetkit.infer.backends import Backend, ImageBackend, TileFunction
from unetkit.infer.loading import load_predictor
from unetkit.infer.predictor import Predictor, tile_normaliser

Affine = tuple[np.ndarray, np.ndarray]
"""``(scale, offset)``, ``(K,)`` float32 each: ``x * scale + offset`` per output channel."""


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: its backend, its own input normalisation (``{"kind": ..., "params": ...}``),
    and the affine map taking its outputs into the lead's output space (``None``: they are in it already)."""

    backend: Backend
    normalization: dict[str, Any]
    to_lead: Affine | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The member's outputs for a batch it normalised, in the lead's output space.

        Shape:
            ``(B, C, *T) -> (B, K, *T_out)`` float32
        """
        out = self.backend(batch)
        if self.to_lead is None:
            return out
        scale, offset = (a.reshape((1, -1) + (1,) * (out.ndim - 2)) for a in self.to_lead)
        return np.asarray(out, np.float32) * scale + offset


class EnsembleBackend(ImageBackend):
    """Runs every tile through every member, each on the tile normalised its own way, and averages the outputs.

    Shape:
        ``B x (C, *T)`` raw tiles -> ``(B, K, *T_out)`` float32 (:meth:`for_image`)
    """

    def __init__(self, members: Sequence[Member]) -> None:
        if not members:
            raise ConfigError("an ensemble needs at least one model")
        self.members = list(members)
        self.name = f"ensemble of {len(self.members)} ({self.members[0].backend.name})"
        self.device = self.members[0].backend.device
        norms = [m.normalization for m in self.members]
        self._shared = [norms.index(n) for n in norms]  # per member: the first member that normalises alike

    def for_image(self, image: Any) -> TileFunction:
        """The tile function for ``image``: one normaliser per distinct normalisation, built here, once."""
        normalisers = {i: tile_normaliser(self.members[i].normalization, image) for i in sorted(set(self._shared))}

        def run(tiles: Sequence[np.ndarray]) -> np.ndarray:
            batches = {i: np.stack([normalise(t) for t in tiles]) for i, normalise in normalisers.items()}
            return self._mean([batches[i] for i in self._shared])

        return run

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """A batch already normalised, when every member normalises alike (a segmentation ensemble).

        Shape:
            ``(B, C, *T) -> (B, K, *T_out)`` float32
        """
        if len(set(self._shared)) > 1:
            raise ConfigError(
                "this ensemble's models normalise their inputs differently: give it raw tiles through "
                "for_image(image) (Predictor.tile_function does), not one normalised batch"
            )
        return self._mean([batch] * len(self.members))

    def _mean(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        """The mean of the members' outputs, member ``i`` on ``batches[i]``."""
        total = self.members[0](batches[0]).astype(np.float32, copy=True)
        for member, batch in zip(self.members[1:], batches[1:], strict=True):
            total += member(batch)
        return total / np.float32(len(self.members))


def _signature(p: Predictor) -> dict[str, Any]:
    """What the members must agree on: the plan and the outputs' meaning; for segmentation the input
    normalisation too (a restoration member normalises its own way and is mapped to the lead's output space)."""
    desc = p.description
    task = desc.task if desc is not None else "segment"
    sig = {
        "task": task,
        "contract": p.contract,
        "in_channels": p.in_channels,
        "num_classes": p.num_classes,
        "classes": list(desc.class_names) if desc is not None else None,
        "spacing": list(desc.spacing) if desc is not None and desc.spacing else None,
    }
    if task == "restore":
        sig["target dtype"] = p.target_scaling.get("dtype")
    else:
        sig["normalization"] = p.normalization
    return sig


def _brief(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_alike(paths: Sequence[str | os.PathLike[str]], members: Sequence[Predictor]) -> None:
    """Refuse members that disagree with the lead (the first) on its :func:`_signature`.

    Raises:
        ConfigError: naming the file, the field, both values and the fix.
    """
    first = _signature(members[0])
    for path, member in zip(paths[1:], members[1:], strict=True):
        sig = _signature(member)
        for key, value in first.items():
            if sig[key] != value:
                raise ConfigError(
                    f"{path}: its {key} ({_brief(sig[key])}) differs from {paths[0]}'s ({_brief(value)}); an "
                    "ensemble's models must be trained alike (e.g. the folds of unetkit train DATA --folds N)"
                )


def _target_map(p: Predictor) -> dict[str, Any]:
    """A restoration member's target scaling without the targets' dtype: the map ``to_target_range`` inverts."""
    return {k: v for k, v in p.target_scaling.items() if k != "dtype"}


def _affine(scaling: dict[str, Any], channels: int, path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``scaling``'s affine map onto the targets' range, ``(channels,)`` float64 each (identity where none
    recorded).

    Raises:
        ConfigError: a kind that is not an affine map (it clips, so its outputs cannot be brought back).
    """
    from unetkit.data.restore import scaling_affine

    kind = scaling.get("kind", "none")
    if kind not in ("none", "range"):
        raise ConfigError(
            f"{path}: its target normalization (kind {kind!r}) is not an affine range map (a kind that clips "
            "cannot be undone), so its outputs cannot be brought into another model's target range and averaged; "
            "ensemble it only with models recording the same target normalization, or predict with one model file"
        )
    affine = scaling_affine(scaling)
    if affine is None:
        return np.ones(channels), np.zeros(channels)
    scale, offset = (np.broadcast_to(a, (channels,)).astype(np.float64) for a in affine)
    return scale, offset


def _to_lead(
    member: Predictor, lead: Predictor, path: str | os.PathLike[str], lead_path: str | os.PathLike[str]
) -> Affine | None:
    """The affine map from a restoration member's output space to the lead's, ``lead⁻¹(member(x))`` of their
    target scalings (``None`` where they record the same one).

    Raises:
        ConfigError: a scaling that is not an affine map, or a lead's with a zero-width channel.
    """
    mine, theirs = _target_map(member), _target_map(lead)
    if mine == theirs:
        return None
    k = lead.num_classes
    a_m, b_m = _affine(mine, k, path)
    a_l, b_l = _affine(theirs, k, lead_path)
    if np.any(a_l == 0):
        raise ConfigError(
            f"{lead_path}: its target normalization has a zero-width channel (max == min), so no other model's "
            "outputs can be mapped into its range; put another model file first"
        )
    return (a_m / a_l).astype(np.float32), ((b_m - b_l) / a_l).astype(np.float32)


def load_ensemble(paths: Sequence[str | os.PathLike[str]], **options: Any) -> Predictor:
    """One :class:`Predictor` for several model files, averaging their outputs tile by tile (module docstring).

    The lead (the first file) gives the tile plan and the output space: ``predict_proba`` gives the mean
    probabilities (segmentation) or the mean outputs in the lead's normalised target space (restoration), and
    ``restore`` / ``to_target_range`` the mean of the members' ``restore()`` outputs.

    Args:
        paths: model files (``.safetensors``, ``.onnx`` or a bioimage.io ``.zip``); one path gives a plain
            predictor.
        **options: :class:`Predictor` options, the same for every member.

    Raises:
        ConfigError: when the members disagree on what prediction depends on (names the file, the field and the
            fix), or a restoration member's target normalisation cannot be mapped to the lead's.
    """
    if len(paths) == 1:
        return load_predictor(str(paths[0]), **options)
    members = [load_predictor(str(p), **options) for p in paths]
    _check_alike(paths, members)
    lead = members[0]
    restore = _signature(lead)["task"] == "restore"
    parts = [
        Member(m.backend, m.normalization, _to_lead(m, lead, path, paths[0]) if restore else None)
        for path, m in zip(paths, members, strict=True)
    ]
    lead.backend = EnsembleBackend(parts)
    lead.ensemble_size = len(members)  # type: ignore[attr-defined]
    return lead
