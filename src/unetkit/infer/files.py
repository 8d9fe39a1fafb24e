"""Prediction on files: stream the tiles of each image into its targets.

Which files (:mod:`unetkit.infer.inputs`) and where their results go (:mod:`unetkit.infer.outputs`: labels in
the input's format, ``<stem>_prob``, ``<stem>_overlay.png``, OME-Zarr; TIFF outputs are OME-TIFFs with the
spacing and channel names) are decided elsewhere; this module runs the job. Instance labels (``instances=``)
go to ``OUT/<stem>_instances.tif`` and, with ``overlay`` (2D), their picture to ``OUT/<stem>_instances_overlay.png``.

:func:`predict_files` is the whole ``unetkit predict`` job (the CLI only parses flags and draws progress
from a :class:`PredictProgress`); :func:`predict_file` does one image with a given :class:`Predictor`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from unetkit.classes import Classes
from unetkit.data.channels import check_mode
from unetkit.data.io import image_format, open_image, strip_suffix
from unetkit.errors import ConfigError, DataError
from unetkit.infer.inputs import (
    check_input_channels,
    expand_inputs,
    input_grid,
    is_slice_stack,
    open_input,
    slice_slabs,
)
from unetkit.infer.loading import load_predictor
from unetkit.infer.outputs import (
    PROB_DTYPES,
    OutputPaths,
    check_output_format,
    encode_probabilities,
    output_meta,
    outputs_for,
    plan_outputs,
    refuse_segmentation_outputs,
)
from unetkit.infer.overlay import OverlayTarget
from unetkit.infer.predictor import Predictor, class_labels
from unetkit.infer.spacing import resampled_slabs
from unetkit.infer.writers import open_target

log = logging.getLogger(__name__)

#: What a restoration writes (``--dtype``): ``target`` is the training targets' dtype from the model file.
RESTORE_DTYPES = ("float32", "uint8", "uint16", "target")


@dataclass
class PredictionResult:
    """What :func:`predict_file` did: outputs, tiles, megapixels and seconds.

    Attributes:
        input: the image.
        outputs: the files prediction wrote.
        shape: ``(K, *S)``, classes and the image's spatial size.
        tiles: tiles of the image's tile grid.
        seconds: wall time of the prediction, post-processing not included (for a Dask run: of the whole
            run, one cluster for all files).
        class_counts: voxels per predicted class (empty for a Dask run and a restoration).
        postprocessed: files post-processing wrote (the labels, rewritten, and/or the instance labels).
        value_range: a restoration's lowest and highest finite value written (in the targets' range and the
            output dtype; ``None`` for a segmentation).
    """

    input: Path
    outputs: OutputPaths
    shape: tuple[int, ...]
    tiles: int
    seconds: float
    class_counts: list[int] = field(default_factory=list)
    postprocessed: list[Path] = field(default_factory=list)
    value_range: tuple[float, float] | None = None

    @property
    def megapixels(self) -> float:
        return float(np.prod(self.shape[1:])) / 1e6


def predict_file(
    predictor: Predictor,
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    outputs: OutputPaths | None = None,
    probabilities: bool = False,
    prob_dtype: str = "float16",
    overlay: bool = False,
    compression: str = "auto",
    on_tiles: Callable[[int], None] | None = None,
    dtype: str | None = None,
    channels: str | None = None,
) -> PredictionResult:
    """Segment one image file tile by tile, streaming labels (and probabilities, overlay) to disk.

    Peak memory does not grow with the image's height: the input is read tile by tile and every finished
    slab of rows is written out at once (TIFF, zarr and ``.npy`` outputs are never held whole).

    Args:
        predictor: the :class:`Predictor` to run.
        path: the input image (any format :func:`unetkit.data.io.open_image` reads).
        out_dir: folder for the outputs (or give ``outputs``).
        outputs: explicit output paths (default: :func:`output_paths`).
        probabilities: also write per-class probabilities (``(K, *S)``).
        prob_dtype: ``float16`` or ``uint8`` (probability x 255, rounded).
        overlay: also write a colour overlay PNG with a legend (2D only).
        compression: TIFF outputs: ``auto`` (:data:`COMPRESSION_DEFAULT`), ``zlib``, ``lzw``, ``zstd``, ``none``.
        on_tiles: progress callback, called with the number of tiles just computed.
        dtype: a restoration model's output dtype (:data:`RESTORE_DTYPES`; see :func:`restore_file`).
        channels: convert an image whose channels are not the model's: ``rgb``, ``grey`` or ``first``
            (:mod:`unetkit.data.channels`, region by region); ``None`` refuses a mismatch.

    Returns:
        A :class:`PredictionResult`.

    Shape:
        image ``(C, *S)`` -> labels ``(*S)``, probabilities ``(K, *S)``.
    """
    path = Path(path)
    if predictor.restores:
        return restore_file(
            predictor, path, out_dir, outputs=outputs, panel=overlay, dtype=dtype, on_tiles=on_tiles,
            channels=channels, compression=compression,
        )  # fmt: skip
    if prob_dtype not in PROB_DTYPES:
        raise ConfigError(f"prob_dtype: {prob_dtype!r}; choose one of {', '.join(PROB_DTYPES)}")
    outputs = outputs_for(path, out_dir, outputs, "predict_file", probabilities=probabilities, overlay=overlay)
    image = open_input(predictor, path, channels)
    spatial = tuple(int(s) for s in image.shape[1:])
    k = predictor.num_classes
    desc = predictor.description
    spacing = tuple(image.spacing) if image.spacing else None
    grid = input_grid(predictor, image, path)
    slices, tiles, model_spacing = grid.slices, grid.tiles, grid.resample_to
    if slices:
        log.info("%s: a %s stack for a 2D network: predicted slice by slice along Z", path, "x".join(map(str, spatial)))
    classes = Classes.from_model(desc.class_names, desc.class_colours) if desc is not None else Classes.default(k)
    meta = output_meta(path, outputs, classes, compression)
    label_dtype = np.uint8 if k <= 256 else np.uint16
    labels_target = open_target(outputs.labels, spatial, label_dtype, spacing=spacing, meta=meta["labels"])
    targets: list[tuple[str, Any]] = [("labels", labels_target)]
    if outputs.probabilities is not None:
        ptype = np.float16 if prob_dtype == "float16" else np.uint8
        targets.append(("proba", open_target(outputs.probabilities, (k, *spatial), ptype, lead=1, spacing=spacing,
                                             meta=meta["proba"])))  # fmt: skip
    if outputs.overlay is not None:
        if predictor.spatial_dims != 2 or slices:
            log.warning("%s: overlays are 2D only; skipped for this 3D image", path)
            outputs.overlay = outputs.instances_overlay = None
        else:
            targets.append(("overlay", OverlayTarget(outputs.overlay, image, classes.names, classes.colours)))
    counts = np.zeros(k, np.int64)
    t0 = time.perf_counter()
    try:
        if slices:
            slabs: Iterable[Any] = slice_slabs(predictor, image, on_tiles)
        elif model_spacing is None or spacing is None:
            slabs = predictor.iter_slabs(image, on_tiles=on_tiles)
        else:
            slabs = resampled_slabs(predictor, image, spacing, model_spacing, on_tiles)
        for slab in slabs:
            labels = class_labels(slab.proba)
            counts += np.bincount(labels.ravel(), minlength=k)[:k]
            for kind, target in targets:
                if kind == "proba":
                    target.write(slab.start, encode_probabilities(slab.proba, prob_dtype))
                else:
                    target.write(slab.start, labels)
        for _, target in targets:
            target.commit()
    except BaseException:
        for _, target in targets:
            target.abort()
        raise
    finally:
        close = getattr(image, "close", None)
        if close is not None:
            close()
    seconds = time.perf_counter() - t0
    return PredictionResult(path, outputs, (k, *spatial), tiles, seconds, counts.tolist())


def restore_file(
    predictor: Predictor,
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    outputs: OutputPaths | None = None,
    panel: bool = False,
    dtype: str | None = None,
    on_tiles: Callable[[int], None] | None = None,
    channels: str | None = None,
    compression: str = "auto",
) -> PredictionResult:
    """Restore one image file tile by tile (a ``task: restore`` model), streaming the output to disk.

    Every finished slab is brought back to the target's intensity range (the model file's
    ``target_normalization``, inverted) and written to ``OUT/<stem>.tif`` (``.zarr`` for zarr inputs) in
    ``dtype`` (:data:`RESTORE_DTYPES`): float32 by default; ``uint8``/``uint16``; ``"target"`` for the training
    targets' dtype as the model file records it. Integer dtypes are rounded and clipped to the dtype's range
    (values are not rescaled: the output stays in the target's intensity range). ``panel``
    also writes ``OUT/<stem>_panel.png`` (2D): input | output, with a zoomed crop. ``channels``: as for
    :func:`predict_file`. ``compression`` (TIFF): ``auto`` leaves float32 uncompressed and deflates integer
    outputs (:data:`~unetkit.infer.outputs.COMPRESSION_DEFAULT`), or ``zlib``, ``lzw``, ``zstd``, ``none``.

    Shape:
        image ``(C_in, *S)`` -> output ``(C_out, *S)``.
    """
    from unetkit.data.restore import cast_to

    path = Path(path)
    outputs = outputs_for(path, out_dir, outputs, "restore_file", probabilities=False, overlay=False)
    fmt = image_format(path)
    out_path = outputs.labels.parent / f"{strip_suffix(path.name)}{'.zarr' if fmt == 'zarr' else '.tif'}"
    if out_path.resolve() == path.resolve():
        raise DataError("this output would overwrite the input", file=out_path, fix="choose another --out folder")
    if dtype is not None and dtype not in RESTORE_DTYPES:
        raise ConfigError(f"dtype {dtype!r}: choose one of {', '.join(RESTORE_DTYPES)}")
    out_dtype = str(predictor.target_scaling.get("dtype", "float32")) if dtype == "target" else (dtype or "float32")
    image = open_input(predictor, path, channels)
    spatial = tuple(int(s) for s in image.shape[1:])
    k = predictor.num_classes
    spacing = tuple(image.spacing) if image.spacing else None
    from unetkit.infer.outputs import COMPRESSION_DEFAULT
    from unetkit.infer.writers import OutputMeta

    integer = np.dtype(out_dtype).kind in "iu"
    chosen = (
        COMPRESSION_DEFAULT["restored_integer" if integer else "restored"] if compression == "auto" else compression
    )
    meta = OutputMeta(compression=chosen if image_format(out_path) == "tiff" else None)
    target = open_target(out_path, (k, *spatial), np.dtype(out_dtype), lead=1, spacing=spacing, meta=meta)
    grid = input_grid(predictor, image, path)
    slices, tiles = grid.slices, grid.tiles
    keep = panel and predictor.spatial_dims == 2 and not slices
    pieces: list[np.ndarray] = []
    t0 = time.perf_counter()
    try:
        slabs = slice_slabs(predictor, image, on_tiles) if slices else predictor.iter_slabs(image, on_tiles=on_tiles)
        nonfinite, lo, hi = 0, np.inf, -np.inf
        for slab in slabs:
            values = predictor.to_target_range(slab.proba)
            ok = np.isfinite(values)  # one pass: the NaN/Inf count and the range written
            bad = int(ok.size - np.count_nonzero(ok))
            nonfinite += bad
            restored = cast_to(values, out_dtype)
            written = restored[ok] if bad and restored.dtype.kind == "f" else restored  # (integers are all finite)
            if written.size:
                lo, hi = min(lo, float(written.min())), max(hi, float(written.max()))
            target.write(slab.start, restored)
            if keep:
                pieces.append(restored)
        target.commit()
        if nonfinite:  # a NaN input pixel spreads over the network's receptive field: say so, not in silence
            why = "where the image holds NaN/Inf pixels, replace them (e.g. with 0) and re-save it, else check the"
            log.warning("%s: %d restored values are NaN/Inf; %s model (unetkit info)", path, nonfinite, why)
        if keep:
            from unetkit.viz.restore import restore_panel

            outputs.overlay = outputs.labels.parent / f"{strip_suffix(path.name)}_panel.png"
            restore_panel(outputs.overlay, np.asarray(image[...]), np.concatenate(pieces, axis=1))
    except BaseException:
        target.abort()
        raise
    finally:
        close = getattr(image, "close", None)
        if close is not None:
            close()
    outputs.labels = out_path
    seconds = time.perf_counter() - t0
    span = (lo, hi) if lo <= hi else None
    return PredictionResult(path, outputs, (k, *spatial), tiles, seconds, [], value_range=span)


class PredictProgress(Protocol):
    """What :func:`predict_files` reports as it goes. Subclass it and override what you show (the other hooks
    do nothing), or pass any object with these four methods."""

    def start(self, path: Path, summary: str, tiles: int, megapixels: float) -> None:
        """``path`` is about to be predicted in ``tiles`` tiles; ``summary`` is :meth:`Predictor.describe`'s line."""
        return None

    def advance(self, tiles: int) -> None:
        """``tiles`` more tiles of the current image were computed (the first call includes warm-up)."""
        return None

    def predicted(self, result: PredictionResult) -> None:
        """The image's predictions are written (``result.outputs``); post-processing, if any, follows."""
        return None

    def done(self, result: PredictionResult) -> None:
        """An image is finished, post-processing included (``result.postprocessed``)."""
        return None


class _NoProgress(PredictProgress):
    pass


def predict_files(
    model: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Predictor,
    inputs: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    probabilities: bool = False,
    prob_dtype: str = "float16",
    overlay: bool = False,
    format: str = "auto",
    compression: str = "auto",
    postprocess: str | None = None,
    instances: str | None = None,
    dask: str | None = None,
    progress: PredictProgress | None = None,
    dtype: str | None = None,
    channels: str | None = None,
    **options: Any,
) -> list[PredictionResult]:
    """Segment every input into ``out_dir``: the ``unetkit predict`` job.

    Inputs are expanded (:func:`expand_inputs`), their channels checked (:func:`check_input_channels`) and
    their outputs planned (:func:`plan_outputs`, which refuses to overwrite an input) before any work; every
    option is checked before the first image.

    Args:
        model: a model file (``.safetensors``) or an exported ``.onnx`` file, several of them (an ensemble:
            outputs averaged, restoration folds included: :func:`unetkit.infer.ensemble.load_ensemble`), or a
            ready :class:`Predictor`.
        inputs: image files, folders and glob patterns.
        out_dir: folder for the results.
        probabilities: also write ``<stem>_prob.tif`` (``.zarr`` for zarr inputs), ``(K, *S)``.
        prob_dtype: ``float16`` or ``uint8`` (probability x 255).
        overlay: also write ``<stem>_overlay.png`` with a legend (2D); with instances, also
            ``<stem>_instances_overlay.png`` (every object in its own colour, outlined; the object count).
        format: ``auto`` (each input's format), ``tiff``, ``zarr`` or ``ome-zarr`` (``<stem>.ome.zarr``).
        compression: TIFF outputs: ``auto`` (:data:`COMPRESSION_DEFAULT`), ``zlib``, ``lzw``, ``zstd``, ``none``.
        postprocess: a pipeline refining the written labels, e.g. ``"remove-islands:50,fill-holes"``
            (:mod:`unetkit.postprocess.pipeline`; the label image must fit in memory).
        instances: also write ``<stem>_instances.tif``: ``components``, ``distance``, ``probability`` or
            ``boundary``; an interior/boundary model (trained on instance masks) writes them by default.
        dask: run on a Dask cluster: a scheduler address, or ``"local"`` for a 2-worker LocalCluster; labels
            only, to ``<stem>.zarr`` (probabilities, overlay, post-processing and instances are ignored).
        progress: progress hooks (see :class:`PredictProgress`).
        dtype: what a restoration model writes: ``float32`` (default), ``uint8``, ``uint16`` or ``target`` (the
            training targets' dtype); see :func:`restore_file`. Segmentation labels ignore it.
        channels: convert images whose channels are not the model's: ``rgb``, ``grey`` or ``first``
            (:mod:`unetkit.data.channels`); ``None`` refuses a mismatch. Every input's channels are checked
            before the first image is predicted.
        **options: :class:`Predictor` options when ``model`` is a file: ``tile``, ``overlap``, ``blend``,
            ``tta``, ``backend``, ``device``, ``batch_size``, ``channels_last``, ``compile``.

    Returns:
        One :class:`PredictionResult` per input, in order.

    Shape:
        each image ``(C, *S)`` -> labels ``(*S)``, probabilities ``(K, *S)``.
    """
    from unetkit.postprocess.instances import INSTANCE_METHODS
    from unetkit.postprocess.pipeline import parse_postprocess

    if instances is not None and instances not in INSTANCE_METHODS:
        raise ConfigError(f"instances {instances!r}: choose one of {', '.join(INSTANCE_METHODS)}")
    parse_postprocess(postprocess)  # a bad pipeline fails before any work
    if prob_dtype not in PROB_DTYPES:
        raise ConfigError(f"prob_dtype: {prob_dtype!r}; choose one of {', '.join(PROB_DTYPES)}")
    check_output_format(format)
    if compression != "auto":
        from unetkit.data.io.tiff import check_compression

        check_compression(compression)
    if dtype is not None and dtype not in RESTORE_DTYPES:
        raise ConfigError(f"dtype {dtype!r}: choose one of {', '.join(RESTORE_DTYPES)}")
    check_mode(channels)
    if isinstance(model, Predictor) and options:
        raise ConfigError(f"predict_files: options {sorted(options)} apply to a model file, not to a Predictor")
    progress = progress if progress is not None else _NoProgress()
    files = expand_inputs(inputs)
    out = Path(out_dir)
    if dask is not None:
        if format not in ("auto", "zarr"):
            raise ConfigError(
                f"--dask writes <stem>.zarr stores; --format {format} needs a local run (leave out --dask)"
            )
        if overlay or postprocess or instances:
            log.warning("Dask prediction writes labels and probabilities only; overlay, postprocess and instances "
                        "are ignored")  # fmt: skip
        if not isinstance(model, str | os.PathLike | Predictor):
            if len(model) != 1:
                raise ConfigError("--dask runs one model; ensembles of several model files predict locally")
            model = model[0]
        return _predict_files_dask(model, files, out, dask, progress, options, probabilities, prob_dtype, channels)
    name = None
    if isinstance(model, Predictor):
        predictor = model
    else:
        from unetkit.infer.ensemble import load_ensemble

        paths = [model] if isinstance(model, str | os.PathLike) else list(model)
        predictor = load_ensemble(paths, **options)
        name = os.fspath(paths[0])
    check_input_channels(predictor, files, channels, name)  # every input, before the first tile
    if predictor.restores:  # segmentation outputs are refused, not ignored
        asked = [f"--{f}" for f, on in (("probabilities", probabilities), ("postprocess", postprocess),
                                        ("instances", instances)) if on]  # fmt: skip
        refuse_segmentation_outputs(name, asked)
    desc = predictor.description
    if instances is None and desc is not None and desc.extra.get("target") == "boundary":
        instances = "boundary"  # the model was trained to separate objects: give the user its instances
    plans = plan_outputs(
        files, out, probabilities=probabilities, overlay=overlay, format=format, instances=instances is not None
    )
    results: list[PredictionResult] = []
    for src, plan in zip(files, plans, strict=True):
        with open_input(predictor, src, channels) as img:
            spatial = tuple(int(s) for s in img.shape[1:])
            spacing = img.spacing
            tiles = input_grid(predictor, img, src, quiet=True).tiles
            shown = spatial[1:] if is_slice_stack(predictor, img) else spatial
        progress.start(src, predictor.describe(shown), tiles, math.prod(spatial) / 1e6)
        res = predict_file(
            predictor, src, outputs=plan, probabilities=probabilities, prob_dtype=prob_dtype, overlay=overlay,
            compression=compression, on_tiles=progress.advance, dtype=dtype, channels=channels,
        )  # fmt: skip
        progress.predicted(res)
        if postprocess or instances:
            res.postprocessed = _postprocess(res, predictor.num_classes, postprocess, instances, spacing)
        progress.done(res)
        results.append(res)
    return results


def _postprocess(
    res: PredictionResult, num_classes: int, steps: str | None, instances: str | None, spacing: Any
) -> list[Path]:
    from unetkit.postprocess.files import postprocess_file

    return postprocess_file(
        res.outputs.labels, steps or "", num_classes=num_classes, image_path=res.input,
        probabilities_path=res.outputs.probabilities, instances=instances, spacing=spacing,  # type: ignore[arg-type]
        instance_overlay=res.outputs.instances_overlay,
    )  # fmt: skip


def _predict_files_dask(
    model: str | os.PathLike[str] | Predictor,
    files: list[Path],
    out: Path,
    dask: str,
    progress: PredictProgress,
    options: dict[str, Any],
    probabilities: bool = False,
    prob_dtype: str = "float16",
    channels: str | None = None,
) -> list[PredictionResult]:
    """Labels (and probabilities) of every file over one Dask cluster (each worker loads the model file)."""
    from unetkit.infer.dask_predict import predict_files_dask

    if isinstance(model, Predictor):
        raise ConfigError("Dask prediction needs a model file (each worker loads it), not a Predictor")
    predictor = load_predictor(str(model), **options)  # the model and options are checked before a cluster starts
    check_input_channels(predictor, files, channels, str(model))
    t0 = time.perf_counter()
    pairs = predict_files_dask(
        str(model), files, out, address=None if dask == "local" else dask, probabilities=probabilities,
        prob_dtype=prob_dtype, channels=channels, **options,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    results = []
    for src, written in pairs:
        with open_image(src, spatial_dims=predictor.spatial_dims) as img:
            spatial = tuple(int(s) for s in img.shape[1:])
        paths = OutputPaths(labels=written[0], probabilities=written[1] if len(written) > 1 else None)
        res = PredictionResult(src, paths, (predictor.num_classes, *spatial), predictor.tiles_for(spatial), seconds)
        progress.predicted(res)
        progress.done(res)
        results.append(res)
    return results
