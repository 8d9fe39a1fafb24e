"""Prediction on images of any size: tiling, blending, streaming writers, backends, export, Dask."""

from __future__ import annotations

from unetkit.infer.files import predict_file
from unetkit.infer.inputs import expand_inputs
from unetkit.infer.loading import load_predictor
from unetkit.infer.predictor import Predictor, Slab, class_labels
from unetkit.infer.tiling import BLEND_MODES, TilePlan, choose_tile, plan_tiles

__all__ = [
    "BLEND_MODES",
    "Predictor",
    "Slab",
    "TilePlan",
    "choose_tile",
    "class_labels",
    "expand_inputs",
    "load_predictor",
    "plan_tiles",
    "predict_file",
]
