"""Post-processing of prediction files: read the written labels back, refine them, write them again.

Connected components need the whole label image, so this works on images that fit in memory (up to
``max_voxels``); the streaming predictor itself has no such limit. A palette label PNG (as ``unetkit
predict`` writes them) is read as its indices and rewritten with its palette.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from unetkit.data.io import open_image, read_image, read_mask, read_palette, strip_suffix, write_image
from unetkit.errors import DataError
from unetkit.postprocess.instances import separate_instances
from unetkit.postprocess.pipeline import PostprocessStep, apply_postprocess, parse_postprocess

log = logging.getLogger(__name__)

MAX_VOXELS = 2**28  # 268 M voxels: about 1 GiB of int32 labels


def instances_path(labels_path: str | os.PathLike[str]) -> Path:
    """Where the instance labels of ``OUT/<stem>.<ext>`` go: ``OUT/<stem>_instances.tif``.

    >>> instances_path("preds/cells.png").as_posix()
    'preds/cells_instances.tif'
    """
    p = Path(labels_path)
    return p.with_name(f"{strip_suffix(p.name)}_instances.tif")


def postprocess_file(
    labels_path: str | os.PathLike[str],
    steps: str | Sequence[PostprocessStep] = "",
    *,
    num_classes: int,
    image_path: str | os.PathLike[str] | None = None,
    probabilities_path: str | os.PathLike[str] | None = None,
    instances: Literal["components", "distance", "probability", "boundary"] | None = None,
    spacing: Sequence[float] | None = None,
    max_voxels: int = MAX_VOXELS,
    instance_overlay: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Apply a post-processing pipeline to a written label file, in place (atomically), and optionally
    write instance labels of the foreground beside it.

    Args:
        labels_path: the class labels written by prediction.
        steps: a pipeline string such as ``"remove-islands:50,fill-holes"`` (see :mod:`.pipeline`).
        num_classes: the model's number of classes.
        image_path: the input image, for ``crf``'s appearance kernel.
        probabilities_path: the written probabilities ``(K, *S)``, for ``crf`` and ``instances="probability"``.
        instances: also write ``<stem>_instances.tif``: ``components``, ``distance`` (watershed on the distance
            transform), ``probability`` (watershed on the foreground probability) or ``boundary`` (seeded
            watershed from the interiors of an interior/boundary model, :mod:`unetkit.data.targets`).
        spacing: voxel size per axis, for physical sizes and distances.
        max_voxels: refuse larger images (they would not fit in memory).
        instance_overlay: with ``instances``, also write this PNG: every object in its own colour, outlined,
            over the grey input image, with the object count (2D; needs ``image_path``;
            :func:`unetkit.viz.instances.save_instance_overlay`).

    Returns:
        The files written.
    """
    parsed = parse_postprocess(steps) if isinstance(steps, str) else list(steps)
    labels_path = Path(labels_path)
    if instance_overlay is not None and (instances is None or image_path is None):
        raise DataError(
            "an instance overlay needs the instances and the input image",
            file=instance_overlay,
            fix="give instances= and image_path=, or leave out instance_overlay",
        )
    labels = read_mask(labels_path)  # a palette PNG gives its indices
    palette = read_palette(labels_path)  # and keeps its colours when rewritten
    if labels.size > max_voxels:
        raise DataError(
            f"{labels.size:,} voxels; post-processing needs the whole label image in memory (limit {max_voxels:,})",
            file=labels_path,
            fix="post-process tiles of it, or leave out --postprocess/--instances",
        )
    probs = None
    if probabilities_path:
        raw = read_image(probabilities_path).array
        probs = raw.astype(np.float32) / (255.0 if raw.dtype == np.uint8 else 1.0)  # uint8 files store p x 255
    written: list[Path] = []
    if parsed:
        needs_image = any(s.name == "crf" for s in parsed)
        image = read_image(image_path).array if needs_image and image_path else None
        if needs_image and image is None:
            raise DataError("the crf step needs the input image", file=labels_path, fix="give image_path")
        out = apply_postprocess(labels, parsed, num_classes=num_classes, probs=probs, image=image, spacing=spacing)
        sp = tuple(spacing) if spacing else None
        write_image(labels_path, out.astype(labels.dtype), spacing=sp, palette=palette)
        written.append(labels_path)
        labels = out
        log.info("%s: post-processed with %s", labels_path, ",".join(map(str, parsed)))
    if instances is not None:
        if instances == "probability":
            if probs is None:
                raise DataError("instances='probability' needs the probabilities (--probabilities)", file=labels_path)
            foreground: np.ndarray = 1.0 - probs[0]
        elif instances == "boundary":  # interior/boundary classes: the labels, or better the probabilities
            if num_classes != 3:
                raise DataError(
                    f"{labels_path}: instances='boundary' reads an interior/boundary model's output (3 classes); "
                    f"this model has {num_classes}: use components, distance or probability"
                )
            foreground = probs if probs is not None else labels
        else:
            foreground = labels > 0
        ids = separate_instances(foreground, instances, spacing=spacing)
        dest = instances_path(labels_path)
        write_image(dest, ids.astype(np.uint32 if ids.max() > 65535 else np.uint16),
                    spacing=tuple(spacing) if spacing else None)  # fmt: skip
        written.append(dest)
        count = int(ids.max(initial=0))  # separate_instances numbers the objects 1..N
        log.info("%s: %d instances", dest, count)
        if instance_overlay is not None:
            assert image_path is not None  # checked above
            written.append(_instance_overlay(Path(instance_overlay), Path(image_path), ids, count, instances))
    return written


def _instance_overlay(dest: Path, image_path: Path, ids: np.ndarray, count: int, method: str) -> Path:
    from unetkit.viz.instances import save_instance_overlay

    if ids.ndim != 2:
        raise DataError(f"instance overlays are 2D; these instances are {ids.ndim}D", file=dest)
    with open_image(image_path, spatial_dims=2) as image:
        return save_instance_overlay(dest, image, ids, count=count, note=method)
