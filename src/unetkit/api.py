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


def channel_axis_of(
    shape: Sequence[int],
    spatial_dims: int,
    in_channels: int,
    channel_axis: int | None = None,
    channels: str | None = None,
) -> int | None:
    """Which axis of an array of ``shape`` holds the channels (``None``: it has none, one channel), from its shape.

    With one axis more than ``spatial_dims``, the channel axis is ``channel_axis`` if given, else the first or the
    last axis, whichever holds channels the network takes (``in_channels`` of them, or a count ``channels``
    converts, :func:`unetkit.data.channels.fits`); the first when both do, said in a log line.

    Example:
        >>> channel_axis_of((5, 6, 3), 2, 3), channel_axis_of((5, 6), 2, 1)
        (2, None)
        >>> channel_axis_of((64, 64, 3), 2, 1, channels="grey"), channel_axis_of((64, 64, 3), 2, 1, channels="first")
        (2, 2)
    """
    from unetkit.data.channels import check_channels, fits

    shape = tuple(int(n) for n in shape)
    if channel_axis is not None:
        if len(shape) != spatial_dims + 1:
            raise InputShapeError(
                f"channel_axis={channel_axis} for an array of shape {shape}: "
                f"a {spatial_dims}D network needs {spatial_dims + 1} axes with a channel axis"
            )
        axis = channel_axis % len(shape)
        check_channels(None, shape[axis], in_channels, channels)
        return axis
    if len(shape) == spatial_dims:
        check_channels(None, 1, in_channels, channels)
        return None
    if len(shape) != spatial_dims + 1:
        raise InputShapeError(
            f"image of shape {shape}: a {spatial_dims}D network takes {spatial_dims} spatial "
            f"axes and optionally a channel axis ({in_channels} channels)"
        )
    first, last = shape[0] == in_channels, shape[-1] == in_channels
    if not (first or last) and channels is not None:  # a conversion: the axis it applies to, the shorter if both
        first, last = fits(shape[0], in_channels, channels), fits(shape[-1], in_channels, channels)
        if first and last:
            first = shape[0] <= shape[-1]
            last = not first
    if first and last:
        log.info(
            "image of shape %s: both the first and the last axis could hold the %d channels; took the first "
            "(pass channel_axis=-1 for channels-last)",
            shape,
            in_channels,
        )
    if first:
        return 0
    if last:
        log.info("image of shape %s: channels-last (%d channels), moved first", shape, shape[-1])
        return len(shape) - 1
    short = min(shape[0], shape[-1])
    if channels is None and short <= 4:  # a plausible channel axis (grey, RGB(A)): the channel rule's message
        check_channels(None, short, in_channels, None)
    convert = f", or channels='rgb'|'grey'|'first' to convert its {short} channels" if channels is None else ""
    raise InputShapeError(
        f"image of shape {shape}: neither its first nor its last axis has the network's {in_channels} channels"
        + (f" (channels={channels!r} converts none of them)" if channels is not None else "")
        + f"; pass channel_axis= to name the channel axis{convert}"
    )


def channels_first(
    image: np.ndarray,
    spatial_dims: int,
    in_channels: int,
    channel_axis: int | None = None,
    channels: str | None = None,
) -> np.ndarray:
    """``image`` as ``(C, *S)`` for a network of ``spatial_dims`` and ``in_channels``.

    ``(*S)`` gains a channel axis; otherwise the channel axis is found by :func:`channel_axis_of` and moved
    first. ``channels`` (``rgb``, ``grey``, ``first``) converts channels that are not the network's
    (:func:`unetkit.data.channels.convert_channels`); without it a mismatch is refused.

    Example:
        >>> channels_first(np.zeros((5, 6, 3)), 2, 3).shape, channels_first(np.zeros((5, 6)), 2, 1).shape
        ((3, 5, 6), (1, 5, 6))
        >>> channels_first(np.zeros((5, 6, 4)), 2, 1, channels="grey").shape
        (1, 5, 6)
    """
    from unetkit.data.channels import convert_channels

    arr = np.asarray(image)
    axis = channel_axis_of(arr.shape, spatial_dims, in_channels, channel_axis, channels)
    arr = arr[None] if axis is None else np.moveaxis(arr, axis, 0)
    return convert_channels(arr, in_channels, channels)


def predict(
    model: Any,
    image: Any,
    *,
    out: PathLike | None = None,
    probabilities: bool = False,
    channel_axis: int | None = None,
    channels: str | None = None,
    **options: Any,
) -> Any:
    """Segment an image with a model, in one call (or restore it, with a restoration model).

    Args:
        model: a model file (``.safetensors``, ``.onnx``, bioimage.io ``.zip``), a list of them (an ensemble),
            a network (``unetkit.load_model``/``create_model``) or a :class:`~unetkit.infer.Predictor`.
        image: a numpy-like array, ``(H, W)``, ``(H, W, C)``, ``(C, H, W)``, ``(Z, Y, X)`` or ``(C, Z, Y, X)``
            (the channel axis is found from the network's input channels, see :func:`channels_first`), or an
            image file (read lazily, tile by tile). A 2D network takes a stack, ``(C, Z, Y, X)``, ``(Z, Y, X)``
            (one-channel networks) or a 3D file, slice by slice along Z, as ``unetkit predict`` does.
        out: a folder: write the results there as ``unetkit predict`` does (``OUT/<stem>...``) and return the
            :class:`~unetkit.infer.files.PredictionResult`; ``image`` must then be a file.
        probabilities: also return the class probabilities (``(K, *S)`` float32), or write them.
        channel_axis: the array's channel axis, when it is not the first or last one, or to settle a tie.
        channels: convert an image whose channels are not the network's: ``"grey"`` (RGB(A) -> luma),
            ``"rgb"`` (grey -> 3 channels, RGBA -> RGB) or ``"first"`` (the first ``in_channels``), region by
            region for a file (:mod:`unetkit.data.channels`); ``None`` (default) refuses a mismatch, naming the
            file and the channels found and expected.
        **options: :class:`~unetkit.infer.Predictor` options (``tile``, ``overlap``, ``blend``, ``tta``,
            ``backend``, ``device``, ``batch_size``, ...), and with ``out`` those of
            :func:`~unetkit.infer.files.predict_files` (``format``, ``compression``, ``overlay``, ...).

    Returns:
        labels ``(*S)`` (uint8, uint16 beyond 256 classes); ``(labels, probabilities)`` with
        ``probabilities=True``; the :class:`~unetkit.infer.files.PredictionResult` with ``out``. A restoration
        model (``task: restore``) returns the restored image ``(C_out, *S)`` float32 in its targets' intensity
        range (:meth:`~unetkit.infer.Predictor.restore`), one channel per target channel. A stack through a 2D
        network gives ``(Z, Y, X)`` labels and ``(K, Z, Y, X)`` probabilities or restored channels.

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
        results = predict_files(target, [image], out, probabilities=probabilities, channels=channels, **job)
        return results[0]
    predictor = _predictor(model, options)
    if isinstance(image, str | os.PathLike):
        from pathlib import Path

        from unetkit.infer.inputs import is_slice_stack, open_input

        with open_input(predictor, Path(image), channels) as img:  # the rule unetkit predict opens files by
            return (_run_stack if is_slice_stack(predictor, img) else _run)(predictor, img, probabilities)
    if is_stack(np.shape(image), predictor.spatial_dims, predictor.in_channels, channel_axis, channels):
        log.info("image of shape %s: a stack for a 2D network, predicted slice by slice", np.shape(image))
        return _run_stack(predictor, as_stack(image, predictor.in_channels, channel_axis, channels), probabilities)
    arr = channels_first(image, predictor.spatial_dims, predictor.in_channels, channel_axis, channels)
    return _run(predictor, arr, probabilities)


def is_stack(
    shape: Sequence[int],
    spatial_dims: int,
    in_channels: int,
    channel_axis: int | None = None,
    channels: str | None = None,
) -> bool:
    """Whether an array of ``shape`` is a stack a 2D network (one trained on slices, ``--dims 2``) predicts slice
    by slice along Z, as ``unetkit predict`` does a stack file.

    A stack is an array with a channel axis and three spatial axes (its channel axis found as for a 3D
    network), or, for a one-channel network, ``(Z, Y, X)`` where neither end axis could hold colour channels
    (both longer than 4): a ``(3, H, W)`` array stays an RGB image, refused or converted by the channel rule.

    Example:
        >>> is_stack((6, 40, 48), 2, 1), is_stack((3, 40, 48), 2, 1), is_stack((1, 6, 40, 48), 2, 1)
        (True, False, True)
    """
    if spatial_dims != 2:
        return False
    if len(shape) == 4:
        return True
    plain = len(shape) == 3 and in_channels == 1 and channel_axis is None and channels is None
    return plain and min(int(shape[0]), int(shape[-1])) > 4


def check_layout(
    shape: Sequence[int],
    spatial_dims: int,
    in_channels: int,
    channel_axis: int | None = None,
    channels: str | None = None,
) -> bool:
    """Refuse an array of ``shape`` that a network of ``spatial_dims`` and ``in_channels`` cannot take (the
    channel rule's error, before any work); ``True`` where it is a stack predicted slice by slice (:func:`is_stack`).

    Example:
        >>> check_layout((6, 40, 48), 2, 1), check_layout((40, 48, 3), 2, 3)
        (True, False)
    """
    stack = is_stack(shape, spatial_dims, in_channels, channel_axis, channels)
    if stack and len(shape) == 3:  # (Z, Y, X) for a one-channel network: no channel axis to check
        return True
    channel_axis_of(shape, 3 if stack else spatial_dims, in_channels, channel_axis, channels)
    return stack


def as_stack(image: Any, in_channels: int, channel_axis: int | None = None, channels: str | None = None) -> np.ndarray:
    """A stack (:func:`is_stack`) as ``(C, Z, Y, X)``: its channel axis found and moved first, or added."""
    arr = np.asarray(image)
    return channels_first(arr, 3, in_channels, channel_axis, channels) if arr.ndim == 4 else arr[None]


def _run_stack(predictor: Predictor, stack: Any, probabilities: bool) -> Any:
    """A ``(C, Z, Y, X)`` stack through a 2D network one Z slice at a time, as ``unetkit predict`` does:
    labels ``(Z, Y, X)``, probabilities or a restored image ``(K, Z, Y, X)``."""
    outs = [_run(predictor, np.ascontiguousarray(stack[:, z]), probabilities) for z in range(int(stack.shape[1]))]
    if predictor.restores:
        return np.stack(outs, axis=1)
    if probabilities:
        return np.stack([o[0] for o in outs]), np.stack([o[1] for o in outs], axis=1)
    return np.stack(outs)


def _run(predictor: Predictor, image: Any, probabilities: bool) -> Any:
    from unetkit.infer.outputs import refuse_segmentation_outputs

    if predictor.restores:
        refuse_segmentation_outputs(None, ["probabilities=True"] if probabilities else [])
        return predictor.restore(image)
    if not probabilities:
        return predictor.predict(image)
    from unetkit.infer.predictor import class_labels

    proba = predictor.predict_proba(image)
    return class_labels(proba), proba


__all__ = ["as_stack", "channel_axis_of", "channels_first", "check_layout", "is_stack", "predict", "train"]
