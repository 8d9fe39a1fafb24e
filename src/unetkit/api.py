"""One call from Python: :func:`predict` and :func:`train`, thin wrappers over :mod:`unetkit.infer` and
:mod:`unetkit.train` (the same jobs ``unetkit predict`` and ``unetkit train`` run; :func:`train` is
:func:`unetkit.train.folder.train`, which ``unetkit.train(...)`` calls too).

Imported on first use of ``unetkit.predict``, so ``import unetkit`` stays cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from unetkit.errors import ConfigError, InputShapeError
from unetkit.train.folder import train

if TYPE_CHECKING:
    from unetkit.infer.predictor import Predictor

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _predictor(model: Any, options: dict[str, Any]) -> Predictor:
    """A :class:`Predictor` for a model file (or several: an ensemble), a network, or a ready predictor."""
    from unetkit.infer.ensemble import load_ensemble
    from unetkit.infer.predictor import Predictor

    if isinstance(model, Predictor):
        if options:
            raise ConfigError(f"predict: options {sorted(options)} apply to a model file or network, not a Predictor")
        return model
    if isinstance(model, str | os.PathLike):
        return load_ensemble([model], **options)
    if isinstance(model, Sequence) and all(isinstance(m, str | os.PathLike) for m in model):
        return load_ensemble(list(model), **options)
    return Predictor(model, **options)


def channels_first(
    image: np.ndarray, spatial_dims: int, in_channels: int, channel_axis: int | None = None
) -> np.ndarray:
    """``image`` as ``(C, *S)`` for a network of ``spatial_dims`` and ``in_channels``.

    ``(*S)`` gains a channel axis; with one axis more, the channel axis is ``channel_axis`` if given, else the
    first or the last axis, whichever has ``in_channels`` entries (the first when both do, said in a log line).

    Example:
        >>> channels_first(np.zeros((5, 6, 3)), 2, 3).shape, channels_first(np.zeros((5, 6)), 2, 1).shape
        ((3, 5, 6), (1, 5, 6))
    """
    arr = np.asarray(image)
    if channel_axis is not None:
        if arr.ndim != spatial_dims + 1:
            raise InputShapeError(
                f"channel_axis={channel_axis} for an array of shape {arr.shape}: "
                f"a {spatial_dims}D network needs {spatial_dims + 1} axes with a channel axis"
            )
        return np.moveaxis(arr, channel_axis, 0)
    if arr.ndim == spatial_dims:
        if in_channels != 1:
            raise InputShapeError(f"image of shape {arr.shape} has no channel axis; the network needs {in_channels}")
        return arr[None]
    if arr.ndim != spatial_dims + 1:
        raise InputShapeError(
            f"image of shape {arr.shape}: a {spatial_dims}D network takes {spatial_dims} spatial "
            f"axes and optionally a channel axis ({in_channels} channels)"
        )
    first, last = arr.shape[0] == in_channels, arr.shape[-1] == in_channels
    if first and last:
        log.info(
            "image of shape %s: both the first and the last axis could hold the %d channels; took the first "
            "(pass channel_axis=-1 for channels-last)",
            arr.shape,
            in_channels,
        )
    if first:
        return arr
    if last:
        log.info("image of shape %s: channels-last (%d channels), moved first", arr.shape, in_channels)
        return np.moveaxis(arr, -1, 0)
    raise InputShapeError(
        f"image of shape {arr.shape}: neither its first nor its last axis has the network's "
        f"{in_channels} channels; pass channel_axis="
    )


def predict(
    model: Any,
    image: Any,
    *,
    out: PathLike | None = None,
    probabilities: bool = False,
    channel_axis: int | None = None,
    **options: Any,
) -> Any:
    """Segment an image with a model, in one call.

    Args:
        model: a model file (``.safetensors``, ``.onnx``, bioimage.io ``.zip``), a list of them (an ensemble),
            a network (``unetkit.load_model``/``create_model``) or a :class:`~unetkit.infer.Predictor`.
        image: a numpy-like array, ``(H, W)``, ``(H, W, C)``, ``(C, H, W)``, ``(Z, Y, X)`` or ``(C, Z, Y, X)``
            (the channel axis is found from the network's input channels, see :func:`channels_first`), or an
            image file (read lazily, tile by tile).
        out: a folder: write the results there as ``unetkit predict`` does (``OUT/<stem>...``) and return the
            :class:`~unetkit.infer.files.PredictionResult`; ``image`` must then be a file.
        probabilities: also return the class probabilities (``(K, *S)`` float32), or write them.
        channel_axis: the array's channel axis, when it is not the first or last one, or to settle a tie.
        **options: :class:`~unetkit.infer.Predictor` options (``tile``, ``overlap``, ``blend``, ``tta``,
            ``backend``, ``device``, ``batch_size``, ...), and with ``out`` those of
            :func:`~unetkit.infer.files.predict_files` (``format``, ``compression``, ``overlay``, ...).

    Returns:
        labels ``(*S)`` (uint8, uint16 beyond 256 classes); ``(labels, probabilities)`` with
        ``probabilities=True``; the :class:`~unetkit.infer.files.PredictionResult` with ``out``.

    Example:
        >>> import unetkit, numpy as np
        >>> net = unetkit.create_model("unet2d_small", in_channels=1, num_classes=2)
        >>> unetkit.predict(net, np.zeros((40, 48), np.float32), device="cpu").shape
        (40, 48)
    """
    if out is not None:
        from unetkit.infer.files import predict_files

        if not isinstance(image, str | os.PathLike):
            raise ConfigError(
                "predict(out=...) writes files for an image file; for an array, leave out out= and "
                "write the returned labels with unetkit.data.io.write_image"
            )
        file_keys = {"format", "compression", "overlay", "prob_dtype", "postprocess", "instances"}
        job = {k: options.pop(k) for k in list(options) if k in file_keys}
        target: Any = _predictor(model, options)
        results = predict_files(target, [image], out, probabilities=probabilities, **job)
        return results[0]
    predictor = _predictor(model, options)
    if isinstance(image, str | os.PathLike):
        from unetkit.data.io import open_image

        with open_image(image, spatial_dims=predictor.spatial_dims) as img:
            arr: Any = img if img.shape[0] == predictor.in_channels else np.asarray(img[...])
            return _run(
                predictor,
                arr if arr is img else channels_first(arr, predictor.spatial_dims, predictor.in_channels, channel_axis),
                probabilities,
            )
    return _run(
        predictor, channels_first(image, predictor.spatial_dims, predictor.in_channels, channel_axis), probabilities
    )


def _run(predictor: Predictor, image: Any, probabilities: bool) -> Any:
    if not probabilities:
        return predictor.predict(image)
    from unetkit.infer.predictor import class_labels

    proba = predictor.predict_proba(image)
    return class_labels(proba), proba


__all__ = ["channels_first", "predict", "train"]
