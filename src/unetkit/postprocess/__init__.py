"""Post-processing of predictions: island removal, hole filling, instance separation, CRF refinement."""

from __future__ import annotations

from unetkit.postprocess.crf import crf_refine
from unetkit.postprocess.instances import INSTANCE_METHODS, label_components, separate_instances
from unetkit.postprocess.islands import fill_holes, keep_largest_component, remove_small_islands
from unetkit.postprocess.pipeline import PostprocessStep, apply_postprocess, parse_postprocess

__all__ = [
    "INSTANCE_METHODS",
    "PostprocessStep",
    "apply_postprocess",
    "crf_refine",
    "fill_holes",
    "keep_largest_component",
    "label_components",
    "parse_postprocess",
    "remove_small_islands",
    "separate_instances",
]
