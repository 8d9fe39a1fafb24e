"""Validation pictures: image | truth | prediction | errors for a fixed sample of validation images.

A validation writes ``RUN/val_pictures/epoch_NNNN.png`` (and ``latest.png``): the last one of a run, and
before it one a minute at most (:func:`picture_due`), so pictures cost a few percent of a run's time.
One row per image, the same images every time (the first :data:`PICTURES` validation images by name), each
cropped to one prediction tile around its centre so a picture costs one network call per image. A run with
no validation images (the planner trains on all of two or three) shows its first training images instead,
once, at the run's end, titled as such: a fit to training data, not a held-out score
(:meth:`unetkit.train.eta.RunPlan.shows_pictures`).
"""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.utils import atomic_path

log = logging.getLogger(__name__)

PICTURES = 3
"""Validation images shown per picture."""

PICTURE_EVERY_S = 60.0
"""At most one picture per this many seconds of training (the run's last validation always has one)."""


def picture_due(now: float, last: float, final: bool) -> bool:
    """Whether a validation writes a picture: the run's last one, and before it one a minute at most
    (``last``: when the previous picture was written, or the run started).

    >>> picture_due(30.0, 10.0, False), picture_due(30.0, 10.0, True), picture_due(75.0, 10.0, False)
    (False, True, True)
    """
    return final or now - last >= PICTURE_EVERY_S


def _crop(sample: Any, size: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The centre crop of at most ``size`` per spatial axis of a sample's image ``(C, *S)`` and mask ``(*S)``."""
    spatial = sample.mask.shape
    box = tuple(
        slice(max((n - s) // 2, 0), max((n - s) // 2, 0) + min(n, s)) for n, s in zip(spatial, size, strict=True)
    )
    return np.asarray(sample.image[(slice(None), *box)]), np.asarray(sample.mask[box])


def validation_picture(setup: Any, epoch: int) -> Path | None:
    """Predict the fixed validation sample with the current network and write the picture; returns its path.

    Segmentation only (restoration runs show their validation scores). With no validation images, the first
    training images, titled "training image". Call on rank 0.
    """
    held_out = bool(setup.data.val)
    if setup.config.task != "segment" or not (held_out or setup.data.train):
        return None
    from PIL import Image

    from unetkit.infer import Predictor
    from unetkit.viz._save import save_rgb
    from unetkit.viz.montage import montage
    from unetkit.viz.panels import panel_png

    model = setup.raw_model
    samples = sorted(setup.data.val if held_out else setup.data.train, key=lambda s: s.name)[:PICTURES]
    kind = "" if held_out else " (training image)"
    was_training = model.training
    model.eval()
    rows = []
    try:
        predictor = Predictor(model, normalization={"kind": "none"}, device=setup.fabric.device, tile=setup.tile)
        for s in samples:
            image, truth = _crop(s, list(setup.tile))
            pred = predictor.predict(image)
            ignore = setup.config.data.ignore_index
            png = panel_png(
                image, truth, pred, title=f"{s.name}{kind}, epoch {epoch}", colours=setup.data.class_colours,
                ignore_index=ignore,
            )  # fmt: skip
            rows.append(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
    finally:
        model.train(was_training)
    folder = setup.out / "val_pictures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"epoch_{epoch:04d}.png"
    save_rgb(path, montage(rows, ncols=1, pad=4))
    with atomic_path(folder / "latest.png") as tmp:
        shutil.copyfile(path, tmp)
    log.debug("validation picture: %s", path)
    return path
