"""INT8 post-training quantisation of the exported graph, refused unless the labels stay as they were.

:func:`export_int8` calibrates onnxruntime's static quantiser (QDQ format: int8 weights per output channel,
uint8 activations, min-max ranges) on tiles of the calibration images, exactly as prediction cuts and
normalises them, then checks the result on held-out images: the INT8 label maps against the fp32 ones,
Dice per class. A class whose Dice falls below ``1 - tolerance`` (default tolerance 0.005) makes the export
fail (:class:`Int8AccuracyError`, exit code 2 in the CLI) with every class's measured loss. The INT8 graph
runs on onnxruntime and on openvino (both read QDQ graphs and run the quantised layers in int8).

Calibration images: the ones given, or by default the training images of the run the model file belongs
to (the ``config.yaml`` beside it names the dataset; its ``split.json`` gives the validation images, which
are then the held-out ones). Otherwise a quarter of the images (at least one, at most
:data:`MAX_HELD_OUT`) is held out, the last in name order.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.errors import ConfigError, DataError, require
from unetkit.infer.backends import GRAPH_BACKENDS, Backend, graph_backend
from unetkit.infer.cache import cached_onnx, graph_path
from unetkit.utils import atomic_path

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.005
#: Calibration stops after this many tiles (min-max ranges settle quickly; more only costs time).
MAX_CALIBRATION_TILES = 32
MAX_HELD_OUT = 8


class Int8AccuracyError(DataError):
    """The INT8 graph changes the labels by more than the tolerance on the held-out images."""


@dataclass(frozen=True)
class CalibrationSet:
    """Images to calibrate on and images to check the INT8 labels on (never the same ones)."""

    calibrate: list[Path]
    held_out: list[Path]
    source: str


@dataclass(frozen=True)
class Int8Result:
    """What :func:`export_int8` did: the graph, where it is cached, and the guard's measurements.

    Attributes:
        path: the INT8 ONNX file (``out``, or the cached file).
        cached: the cache entry ``unetkit predict --precision int8`` reads.
        dice_loss: ``1 - Dice(int8 labels, fp32 labels)`` per class on the held-out images.
        class_names: one per entry of ``dice_loss``.
        tolerance: the largest loss allowed per class.
        backend: the backend the guard ran both graphs on.
        calibration: the images calibrated on and held out.
    """

    path: Path
    cached: Path
    dice_loss: list[float]
    class_names: list[str]
    tolerance: float
    backend: str
    calibration: CalibrationSet

    def summary(self) -> str:
        losses = ", ".join(f"{n} {v:.4f}" for n, v in zip(self.class_names, self.dice_loss, strict=True))
        return (
            f"INT8 Dice loss per class on {len(self.calibration.held_out)} held-out image(s) ({self.backend}): "
            f"{losses} (tolerance {self.tolerance:g})"
        )


def _split(images: Sequence[Path], source: str) -> CalibrationSet:
    if len(images) < 2:
        raise DataError(
            f"{len(images)} calibration image(s) in {source}: INT8 export needs at least 2 (one is held out to "
            "check the INT8 labels against fp32)",
            fix="give --calibration a folder of at least 2 images like the ones you will predict",
        )
    held = min(MAX_HELD_OUT, max(1, round(len(images) / 4)))
    return CalibrationSet(list(images[:-held]), list(images[-held:]), source)


def calibration_set(model_path: str | os.PathLike[str], calibration: Sequence[str] | None = None) -> CalibrationSet:
    """The calibration and held-out images for a model file.

    Args:
        model_path: the ``.safetensors`` file (its folder is searched for the training run's ``config.yaml``).
        calibration: files, folders or globs (as ``unetkit predict`` takes); default: the training images.

    Raises:
        DataError: no calibration images given and none recorded, or fewer than 2.
    """
    from unetkit.infer.inputs import expand_inputs

    if calibration:
        return _split(expand_inputs(calibration), "--calibration")
    run = Path(model_path).resolve().parent
    config_file = run / "config.yaml"
    ask = "give --calibration DIR: a folder of images like the ones you will predict (at least 2)"
    if not config_file.is_file():
        raise DataError(
            "no calibration images given, and no training run recorded beside the model (config.yaml)",
            file=model_path, fix=ask,
        )  # fmt: skip
    from unetkit.config import load_config
    from unetkit.data.pairs import find_pairs

    data_path = load_config(config_file).data.path
    candidates = [Path(data_path), run / data_path] if data_path else []
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        raise DataError(
            f"no calibration images given, and the training data ({data_path or 'none'}) named in "
            f"{config_file} is not here",
            file=model_path, fix=ask,
        )  # fmt: skip
    pairs, _, _ = find_pairs(found)
    by_name = {p.name: p.image for p in pairs if p.image is not None}
    split_file = run / "split.json"
    try:
        val = [n for n in json.loads(split_file.read_text()).get("val", []) if n in by_name]
    except (OSError, ValueError, AttributeError):
        val = []
    if val and len(val) < len(by_name):
        train = [by_name[n] for n in sorted(by_name) if n not in set(val)]
        return CalibrationSet(train, [by_name[n] for n in val][:MAX_HELD_OUT], f"the training data {found}")
    return _split([by_name[n] for n in sorted(by_name)], f"the training data {found}")


class _Recorder:
    """A backend wrapper that keeps the (normalised) batches it is given, up to ``limit`` tiles."""

    def __init__(self, inner: Backend, limit: int) -> None:
        self.inner, self.limit = inner, limit
        self.name, self.device = inner.name, inner.device
        self.batches: list[np.ndarray] = []

    @property
    def tiles(self) -> int:
        return sum(len(b) for b in self.batches)

    def __getattr__(self, name: str) -> Any:  # the wrapped backend's other traits (e.g. OpenVINO's streams)
        if name == "inner" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.tiles < self.limit:
            self.batches.append(np.array(batch[: self.limit - self.tiles], np.float32))
        return self.inner(batch)


def _open(path: Path, spatial_dims: int) -> Any:
    from unetkit.data.io import open_image

    image = open_image(path, spatial_dims=spatial_dims)
    if image.ndim - 1 != spatial_dims:
        image.close()
        raise DataError(f"a {image.ndim - 1}D calibration image for a {spatial_dims}D network", file=path)
    return image


def _quantize(fp32: Path, out: Path, batches: list[np.ndarray]) -> None:
    """onnxruntime's static QDQ quantisation of ``fp32`` into ``out``, calibrated on ``batches``."""
    q: Any = require("onnxruntime.quantization", "onnx", "INT8 quantisation")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(q.CalibrationDataReader):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.items, None)
            return None if batch is None else {"image": batch}

    with tempfile.TemporaryDirectory(prefix="unetkit-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        q.quantize_static(
            str(prepared), str(out), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
        )  # fmt: skip


def dice_loss(reference: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class overlap counts for pooling over images: ``(2 * |ref & lab|, |ref| + |lab|)``.

    ``1 - a / b`` is the Dice loss of a class (0 where the class is in neither map).

    >>> a, b = dice_loss(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
    >>> (1 - a / b).round(3).tolist()
    [0.333, 0.333]
    """
    ref, lab = reference.ravel(), labels.ravel()
    both = np.bincount(ref[ref == lab], minlength=num_classes)[:num_classes]
    total = (
        np.bincount(ref, minlength=num_classes)[:num_classes] + np.bincount(lab, minlength=num_classes)[:num_classes]
    )
    return 2.0 * both.astype(np.float64), total.astype(np.float64)


def export_int8(
    model: torch.nn.Module,
    calibration: CalibrationSet,
    out: str | os.PathLike[str] | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    backend: str = "auto",
    tile: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    max_tiles: int = MAX_CALIBRATION_TILES,
) -> Int8Result:
    """Quantise ``model``'s exported graph to INT8 and keep it only if the held-out labels hold.

    Args:
        model: a unetkit segmentation network (from :func:`unetkit.load_model`).
        calibration: from :func:`calibration_set`.
        out: also write the INT8 ONNX file here (the description stays in its metadata, so
            ``unetkit predict out.onnx`` works); default: only the cache.
        tolerance: the largest ``1 - Dice`` allowed per class, INT8 labels against fp32 labels.
        backend: ``onnxruntime``, ``openvino`` or ``auto`` (the faster here): where the guard runs both graphs.
        tile: prediction tile for calibration and the guard (default: the model file's).
        batch_size: tiles per network call; default: the backend's (:func:`~unetkit.infer.backends.tiles_per_call`).
        max_tiles: calibration tiles at most.

    Returns:
        An :class:`Int8Result`; the INT8 graph is in the cache for ``--precision int8``.

    Raises:
        Int8AccuracyError: a class's Dice loss exceeds ``tolerance`` (nothing is written).
    """
    from unetkit.infer.backends import resolve_backend
    from unetkit.infer.predictor import Predictor

    if getattr(getattr(model, "description", None), "task", "segment") == "restore":
        raise ConfigError("INT8 export with the accuracy guard is for segmentation models, not restoration ones")
    if tolerance < 0:
        raise ConfigError(f"--int8-tolerance {tolerance}: must be >= 0 (a Dice loss, e.g. 0.005)")
    name = resolve_backend(backend, "cpu", "int8")
    if name not in GRAPH_BACKENDS:
        raise ConfigError(f"--backend {name}: INT8 runs on {' or '.join(GRAPH_BACKENDS)}")
    fp32 = cached_onnx(model)
    dims = int(model.spatial_dims)  # type: ignore[arg-type]

    def predictor(graph: str | bytes, wrap: Any = None) -> Predictor:
        inner = graph_backend(name, graph, spatial_dims=dims, device="cpu", tta=False, head="softmax")
        return Predictor(model, tile=tile, batch_size=batch_size, _backend=wrap(inner) if wrap else inner)

    reference = predictor(fp32 if isinstance(fp32, bytes) else str(fp32), lambda b: _Recorder(b, max_tiles))
    recorder = reference.backend
    assert isinstance(recorder, _Recorder)
    for path in calibration.calibrate:
        image = _open(path, dims)
        try:
            for _ in reference.iter_slabs(image):
                if recorder.tiles >= max_tiles:
                    break
        finally:
            image.close()
        if recorder.tiles >= max_tiles:
            break
    log.info("INT8: calibrating on %d tiles of %d image(s)", recorder.tiles, len(calibration.calibrate))

    cached = graph_path(model, "int8")
    with tempfile.TemporaryDirectory(prefix="unetkit-int8-") as tmp:
        src = Path(tmp) / "fp32.onnx"
        if isinstance(fp32, bytes):
            src.write_bytes(fp32)
        else:
            shutil.copyfile(fp32, src)
        candidate = Path(tmp) / "int8.onnx"
        _quantize(src, candidate, recorder.batches)
        int8 = predictor(str(candidate))
        k = reference.num_classes
        agree, total = np.zeros(k), np.zeros(k)
        for path in calibration.held_out:
            image = _open(path, dims)
            try:
                a, b = dice_loss(reference.predict(image), int8.predict(image), k)
            finally:
                image.close()
            agree, total = agree + a, total + b
        loss = [float(1.0 - a / b) if b > 0 else 0.0 for a, b in zip(agree, total, strict=True)]
        names = list(getattr(getattr(model, "description", None), "class_names", None) or [])[:k]
        names += [f"class {i}" for i in range(len(names), k)]
        result = Int8Result(
            Path(out) if out is not None else cached, cached, loss, names, tolerance, name, calibration
        )  # fmt: skip
        if max(loss) > tolerance:
            losses = ", ".join(f"{n} {v:.4f}" for n, v in zip(names, loss, strict=True))
            raise Int8AccuracyError(
                f"INT8 refused: on {len(calibration.held_out)} held-out image(s) the INT8 labels lose Dice {losses} "
                f"against fp32 per class, over the tolerance {tolerance:g} (nothing written)",
                file=calibration.held_out[0].parent,
                fix="predict in fp32, calibrate on more images like yours (--calibration DIR), or accept the loss "
                "with a larger --int8-tolerance",
            )
        data = candidate.read_bytes()
    targets = [cached] if out is None else [cached, Path(out)]
    for target in targets:
        try:
            with atomic_path(target) as tmp_path:
                tmp_path.write_bytes(data)
        except OSError as exc:
            if target == cached and out is not None:
                log.warning("cannot cache the INT8 graph in %s (%s)", cached, exc)
                continue
            raise
    log.info("%s", result.summary())
    return result


def cached_int8(model: torch.nn.Module) -> Path:
    """The INT8 graph ``unetkit export --int8`` made for this network (same weights), from the cache.

    Raises:
        ConfigError: there is none yet (it needs calibration images and the accuracy check).
    """
    path = graph_path(model, "int8")
    if not path.is_file():
        raise ConfigError(
            "--precision int8: no INT8 graph of this model yet; make one (calibrated and checked against fp32) "
            "with: unetkit export MODEL --int8 [--calibration DIR], then predict again"
        )
    return path
