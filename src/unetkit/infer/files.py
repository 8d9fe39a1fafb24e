"""Prediction on files: expand inputs, name outputs, stream the tiles of each image into its targets.

Labels go to ``OUT/<stem>`` in the input's format (``.png`` for PNG/JPEG/BMP, ``.tif`` for TIFF,
``.nii.gz`` for NIfTI, ``.zarr`` for zarr, ``.npy`` for ``.npy``); probabilities to ``OUT/<stem>_prob.tif``
(``.zarr`` for zarr inputs); the overlay to ``OUT/<stem>_overlay.png`` (2D only); instance labels
(``instances=``) to ``OUT/<stem>_instances.tif``. ``format="tiff"`` or ``"zarr"`` choose the labels' and
probabilities' format for every input; ``format="ome-zarr"`` writes ``OUT/<stem>.ome.zarr`` and
``OUT/<stem>_prob.ome.zarr`` (multiscale; the labels as a ``labels`` group when the input is an OME-Zarr,
whose outputs are OME-Zarr by default).
TIFF outputs are OME-TIFFs (spacing, channel names); ``compression`` (:data:`COMPRESSION_DEFAULT`).

:func:`predict_files` is the whole ``unetkit predict`` job (the CLI only parses flags and draws progress
from a :class:`PredictProgress`); :func:`predict_file` does one image with a given :class:`Predictor`.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from unetkit.classes import Classes
from unetkit.data.io import IMAGE_SUFFIXES, image_format, is_image_file, is_zarr_dir, open_image, strip_suffix
from unetkit.errors import ConfigError, DataError
from unetkit.infer.overlay import OverlayTarget
from unetkit.infer.predictor import Predictor, class_labels, load_predictor
from unetkit.infer.spacing import resampled_slabs, resampling_for
from unetkit.infer.writers import OutputMeta, open_target

log = logging.getLogger(__name__)

LABEL_SUFFIX = {"pil": ".png", "tiff": ".tif", "nifti": ".nii.gz", "zarr": ".zarr", "npy": ".npy"}
PROB_DTYPES = ("float16", "uint8")
OUTPUT_FORMATS = ("auto", "tiff", "zarr", "ome-zarr")
"""``format=``: ``auto`` (the input's format, see the module docstring), or one format for every input."""
COMPRESSION_DEFAULT = {"labels": "zlib", "proba": None}
"""``compression="auto"``: label TIFFs are deflate-compressed (2-class labels shrink about 16-20x, measured on
the ISBI masks and synthetic cells, and every TIFF reader decodes deflate), probability TIFFs stay
uncompressed (float16 probabilities shrink about 1.25x for the time it costs, and an uncompressed file
memory-maps); any other value applies to both (docs/prediction.md)."""
#: What a restoration writes (``--dtype``): ``target`` is the training targets' dtype from the model file.
RESTORE_DTYPES = ("float32", "uint8", "uint16", "target")


@dataclass
class OutputPaths:
    """Where one input's results go."""

    labels: Path
    probabilities: Path | None = None
    overlay: Path | None = None

    def all(self) -> list[Path]:
        return [p for p in (self.labels, self.probabilities, self.overlay) if p is not None]


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
        class_counts: voxels per predicted class (empty for a Dask run).
        postprocessed: files post-processing wrote (the labels, rewritten, and/or the instance labels).
    """

    input: Path
    outputs: OutputPaths
    shape: tuple[int, ...]
    tiles: int
    seconds: float
    class_counts: list[int] = field(default_factory=list)
    postprocessed: list[Path] = field(default_factory=list)

    @property
    def megapixels(self) -> float:
        return float(np.prod(self.shape[1:])) / 1e6


def encode_probabilities(proba: np.ndarray, prob_dtype: str) -> np.ndarray:
    """Probabilities as written to disk: ``float16``, or ``uint8`` = ``round(p x 255)``.

    Shape:
        any shape in, the same shape out.

    >>> encode_probabilities(np.array([0.0, 0.5, 1.0], np.float32), "uint8").tolist()
    [0, 128, 255]
    """
    if prob_dtype == "float16":
        return proba.astype(np.float16)
    if prob_dtype == "uint8":
        return np.rint(proba * 255.0).astype(np.uint8)
    raise ConfigError(f"prob_dtype: {prob_dtype!r}; choose one of {', '.join(PROB_DTYPES)}")


def check_output_format(format: str) -> str:
    """``format`` if it is one of :data:`OUTPUT_FORMATS`, else a :class:`ConfigError` naming them."""
    if format not in OUTPUT_FORMATS:
        raise ConfigError(f"format {format!r}: choose one of {', '.join(OUTPUT_FORMATS)}")
    return format


def output_paths(path: Path, out_dir: Path, *, probabilities: bool, overlay: bool, format: str = "auto") -> OutputPaths:
    """The output paths for one input (see the module docstring)."""
    fmt = image_format(path)
    stem = strip_suffix(path.name)
    labels, prob = LABEL_SUFFIX[fmt], ".zarr" if fmt == "zarr" else ".tif"
    if check_output_format(format) == "auto" and fmt == "zarr" and _is_ome_zarr(path):
        format = "ome-zarr"  # an OME-Zarr input gets OME-Zarr outputs
    if format == "ome-zarr":
        stem = stem[:-4] if stem.lower().endswith(".ome") else stem
        labels = prob = ".ome.zarr"
    elif format != "auto":
        labels = prob = ".tif" if format == "tiff" else ".zarr"
    return OutputPaths(
        labels=out_dir / f"{stem}{labels}",
        probabilities=(out_dir / f"{stem}_prob{prob}") if probabilities else None,
        overlay=(out_dir / f"{stem}_overlay.png") if overlay else None,
    )


def expand_inputs(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files, folders (their image files and ``.zarr`` stores, sorted) and glob patterns, in order, deduplicated."""
    found: list[Path] = []
    for item in items:
        text = str(item)
        p = Path(text)
        if p.is_dir() and not (p.name.endswith(".zarr") or is_zarr_dir(p)):
            found += sorted(c for c in p.iterdir() if is_image_file(c) or is_zarr_dir(c))
        elif p.exists():
            found.append(p)
        elif glob.has_magic(text):
            found += sorted(Path(m) for m in glob.glob(text) if is_image_file(m))
        else:
            raise DataError("no such file, folder or matching pattern", file=text, fix="check the path")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DataError(f"no image files in {', '.join(map(str, items))}; readable: {', '.join(IMAGE_SUFFIXES)}")
    return unique


def _is_ome_zarr(path: Path) -> bool:
    from unetkit.data.io.zarrio import ngff_version

    return path.is_dir() and ngff_version(path) is not None


def plan_outputs(
    inputs: Sequence[Path], out_dir: Path, *, probabilities: bool, overlay: bool, format: str = "auto"
) -> list[OutputPaths]:
    """Output paths for every input, refusing to overwrite an input or to write two results to one path."""
    plans = [output_paths(p, out_dir, probabilities=probabilities, overlay=overlay, format=format) for p in inputs]
    ins = {p.resolve(): p for p in inputs}
    seen: dict[Path, Path] = {}
    for src, plan in zip(inputs, plans, strict=True):
        for out in plan.all():
            r = out.resolve()
            if r in ins:
                raise DataError(
                    f"this output would overwrite the input {ins[r]}", file=out, fix="choose another --out folder"
                )
            if r in seen:
                raise DataError(
                    f"{seen[r]} and {src} would both write {out} (same file name)",
                    fix="predict them into different --out folders or rename one",
                )
            seen[r] = src
    return plans


def _outputs_for(
    path: Path, out_dir: Any, outputs: OutputPaths | None, caller: str, *, probabilities: bool, overlay: bool
) -> OutputPaths:
    """The given output paths, or those :func:`plan_outputs` gives ``path`` in ``out_dir``."""
    if outputs is not None:
        return outputs
    if out_dir is None:
        raise ConfigError(f"{caller}: give out_dir or outputs")
    return plan_outputs([path], Path(out_dir), probabilities=probabilities, overlay=overlay)[0]


def _open_input(predictor: Predictor, path: Path) -> Any:
    """Open ``path`` lazily for ``predictor``, refusing an image of the wrong dimensionality.

    A 3D stack for a 2D network (one trained slice by slice, ``--dims 2``) opens as the stack: it is
    predicted one Z slice at a time (:func:`is_slice_stack`). Otherwise the file is read with the network's
    dimensionality (a multi-page TIFF for a multi-channel 2D net: pages as channels).
    """
    if predictor.spatial_dims == 2:
        image = open_image(path)
        if image.ndim == 4 and image.shape[0] == predictor.in_channels:
            return image
        image.close()
    image = open_image(path, spatial_dims=predictor.spatial_dims)
    if image.ndim - 1 != predictor.spatial_dims:
        image.close()
        raise DataError(f"a {image.ndim - 1}D image for a {predictor.spatial_dims}D network", file=path)
    return image


def is_slice_stack(predictor: Predictor, image: Any) -> bool:
    """Whether ``image`` is a 3D stack that ``predictor`` (a 2D network) predicts slice by slice."""
    return predictor.spatial_dims == 2 and len(image.shape) == 4


@dataclass(frozen=True)
class InputGrid:
    """How one input goes through the network: slice by slice (a stack for a 2D net), at the model's spacing
    (``resample_to``: the image is resampled tile by tile) or as it is; ``tiles``: the tiles computed."""

    slices: bool
    resample_to: tuple[float, ...] | None
    tiles: int


def input_grid(predictor: Predictor, image: Any, path: Path, quiet: bool = False) -> InputGrid:
    """The one rule for :class:`InputGrid` (``quiet``: without the warnings, for a second look at an image)."""
    from unetkit.data.resample import resampled_shape

    spatial = tuple(int(s) for s in image.shape[1:])
    spacing = tuple(image.spacing) if getattr(image, "spacing", None) else None
    desc = predictor.description
    if is_slice_stack(predictor, image):
        target = resampling_for(path, spacing[1:] if spacing else None, desc, warn=not quiet)
        if target is not None and not quiet:
            log.warning("%s: slices at %s, the model's spacing is %s: predicted as they are, not resampled",
                        path, list(spacing[1:]) if spacing else None, list(target))  # fmt: skip
        return InputGrid(True, None, spatial[0] * predictor.tiles_for(spatial[1:]))
    target = resampling_for(path, spacing, desc, warn=not quiet)
    grid = resampled_shape(spatial, spacing, target) if target is not None and spacing is not None else spatial
    return InputGrid(False, target, predictor.tiles_for(grid))


def _slice_slabs(predictor: Predictor, image: Any, on_tiles: Callable[[int], None] | None) -> Iterator[Any]:
    """A stack through a 2D network: one slab per Z slice, ``(K, 1, Y, X)``, each slice read once."""
    from unetkit.infer.predictor import Slab

    for z in range(int(image.shape[1])):
        plane = np.ascontiguousarray(image[:, z])
        proba = np.concatenate([s.proba for s in predictor.iter_slabs(plane, on_tiles=on_tiles)], axis=1)
        yield Slab((z, 0, 0), proba[:, None])


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

    Returns:
        A :class:`PredictionResult`.

    Shape:
        image ``(C, *S)`` -> labels ``(*S)``, probabilities ``(K, *S)``.
    """
    path = Path(path)
    if predictor.head == "identity":
        return restore_file(predictor, path, out_dir, outputs=outputs, panel=overlay, dtype=dtype, on_tiles=on_tiles)
    if prob_dtype not in PROB_DTYPES:
        raise ConfigError(f"prob_dtype: {prob_dtype!r}; choose one of {', '.join(PROB_DTYPES)}")
    outputs = _outputs_for(path, out_dir, outputs, "predict_file", probabilities=probabilities, overlay=overlay)
    image = _open_input(predictor, path)
    spatial = tuple(int(s) for s in image.shape[1:])
    k = predictor.num_classes
    desc = predictor.description
    spacing = tuple(image.spacing) if image.spacing else None
    grid = input_grid(predictor, image, path)
    slices, tiles, model_spacing = grid.slices, grid.tiles, grid.resample_to
    if slices:
        log.info("%s: a %s stack for a 2D network: predicted slice by slice along Z", path, "x".join(map(str, spatial)))
    classes = Classes.from_model(desc.class_names, desc.class_colours) if desc is not None else Classes.default(k)
    meta = _output_meta(path, outputs, classes, compression)
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
            outputs.overlay = None
        else:
            targets.append(("overlay", OverlayTarget(outputs.overlay, image, classes.names, classes.colours)))
    counts = np.zeros(k, np.int64)
    t0 = time.perf_counter()
    try:
        if slices:
            slabs: Iterable[Any] = _slice_slabs(predictor, image, on_tiles)
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


def _output_meta(path: Path, outputs: OutputPaths, classes: Classes, compression: str) -> dict[str, OutputMeta]:
    """What the labels and probabilities targets store beside the pixels: class names and colours, the TIFF
    compression (:data:`COMPRESSION_DEFAULT`), the OME-Zarr version (the input's, else 0.4) and layout."""
    from unetkit.data.io.tiff import check_compression
    from unetkit.data.io.zarrio import ngff_version

    if compression != "auto":
        check_compression(compression)
    version = ngff_version(path) if image_format(path) == "zarr" else None
    out: dict[str, OutputMeta] = {}
    for kind, dest in (("labels", outputs.labels), ("proba", outputs.probabilities)):
        chosen = COMPRESSION_DEFAULT[kind] if compression == "auto" else compression
        out[kind] = OutputMeta(
            names=list(classes.names), colours=list(classes.colours),
            compression=chosen if dest is not None and image_format(dest) == "tiff" else None,
            ngff_version=version or "0.4", labels_group=version is not None,
        )  # fmt: skip
    return out


def restore_file(
    predictor: Predictor,
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    outputs: OutputPaths | None = None,
    panel: bool = False,
    dtype: str | None = None,
    on_tiles: Callable[[int], None] | None = None,
) -> PredictionResult:
    """Restore one image file tile by tile (a ``task: restore`` model), streaming the output to disk.

    Every finished slab is brought back to the target's intensity range (the model file's
    ``target_normalization``, inverted) and written to ``OUT/<stem>.tif`` (``.zarr`` for zarr inputs) in
    ``dtype`` (:data:`RESTORE_DTYPES`): float32 by default; ``uint8``/``uint16``; ``"target"`` for the training
    targets' dtype as the model file records it. Integer dtypes are rounded and clipped to the dtype's range
    (values are not rescaled: the output stays in the target's intensity range). ``panel``
    also writes ``OUT/<stem>_panel.png`` (2D): input | output, with a zoomed crop.

    Shape:
        image ``(C_in, *S)`` -> output ``(C_out, *S)``.
    """
    from unetkit.data.restore import cast_to, invert_scaling

    path = Path(path)
    outputs = _outputs_for(path, out_dir, outputs, "restore_file", probabilities=False, overlay=False)
    fmt = image_format(path)
    out_path = outputs.labels.parent / f"{strip_suffix(path.name)}{'.zarr' if fmt == 'zarr' else '.tif'}"
    if out_path.resolve() == path.resolve():
        raise DataError("this output would overwrite the input", file=out_path, fix="choose another --out folder")
    desc = predictor.description
    scaling = dict(desc.target_normalization or {}) if desc is not None else {}
    if dtype is not None and dtype not in RESTORE_DTYPES:
        raise ConfigError(f"dtype {dtype!r}: choose one of {', '.join(RESTORE_DTYPES)}")
    out_dtype = str(scaling.get("dtype", "float32")) if dtype == "target" else (dtype or "float32")
    image = _open_input(predictor, path)
    spatial = tuple(int(s) for s in image.shape[1:])
    k = predictor.num_classes
    spacing = tuple(image.spacing) if image.spacing else None
    target = open_target(out_path, (k, *spatial), np.dtype(out_dtype), lead=1, spacing=spacing)
    grid = input_grid(predictor, image, path)
    slices, tiles = grid.slices, grid.tiles
    keep = panel and predictor.spatial_dims == 2 and not slices
    pieces: list[np.ndarray] = []
    t0 = time.perf_counter()
    try:
        slabs = _slice_slabs(predictor, image, on_tiles) if slices else predictor.iter_slabs(image, on_tiles=on_tiles)
        for slab in slabs:
            restored = cast_to(invert_scaling(slab.proba, scaling), out_dtype)
            target.write(slab.start, restored)
            if keep:
                pieces.append(restored)
        target.commit()
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
    return PredictionResult(path, outputs, (k, *spatial), tiles, seconds, [])


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
    **options: Any,
) -> list[PredictionResult]:
    """Segment every input into ``out_dir``: the ``unetkit predict`` job.

    Inputs are expanded (:func:`expand_inputs`) and their outputs planned (:func:`plan_outputs`, which
    refuses to overwrite an input) before any work; every option is checked before the first image.

    Args:
        model: a model file (``.safetensors``) or an exported ``.onnx`` file, several of them (an ensemble:
            probabilities averaged, :func:`unetkit.infer.ensemble.load_ensemble`), or a ready :class:`Predictor`.
        inputs: image files, folders and glob patterns.
        out_dir: folder for the results.
        probabilities: also write ``<stem>_prob.tif`` (``.zarr`` for zarr inputs), ``(K, *S)``.
        prob_dtype: ``float16`` or ``uint8`` (probability x 255).
        overlay: also write ``<stem>_overlay.png`` with a legend (2D).
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
        return _predict_files_dask(model, files, out, dask, progress, options, probabilities, prob_dtype)
    if isinstance(model, Predictor):
        predictor = model
    else:
        from unetkit.infer.ensemble import load_ensemble

        paths = [model] if isinstance(model, str | os.PathLike) else list(model)
        predictor = load_ensemble(paths, **options)
    desc = predictor.description
    if instances is None and desc is not None and desc.extra.get("target") == "boundary":
        instances = "boundary"  # the model was trained to separate objects: give the user its instances
    plans = plan_outputs(files, out, probabilities=probabilities, overlay=overlay, format=format)
    results: list[PredictionResult] = []
    for src, plan in zip(files, plans, strict=True):
        with _open_input(predictor, src) as img:
            spatial = tuple(int(s) for s in img.shape[1:])
            spacing = img.spacing
            tiles = input_grid(predictor, img, src, quiet=True).tiles
            shown = spatial[1:] if is_slice_stack(predictor, img) else spatial
        progress.start(src, predictor.describe(shown), tiles, math.prod(spatial) / 1e6)
        res = predict_file(
            predictor, src, outputs=plan, probabilities=probabilities, prob_dtype=prob_dtype, overlay=overlay,
            compression=compression, on_tiles=progress.advance, dtype=dtype,
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
) -> list[PredictionResult]:
    """Labels (and probabilities) of every file over one Dask cluster (each worker loads the model file)."""
    from unetkit.infer.dask_predict import predict_files_dask

    if isinstance(model, Predictor):
        raise ConfigError("Dask prediction needs a model file (each worker loads it), not a Predictor")
    predictor = load_predictor(str(model), **options)  # the model and options are checked before a cluster starts
    t0 = time.perf_counter()
    pairs = predict_files_dask(
        str(model), files, out, address=None if dask == "local" else dask, probabilities=probabilities,
        prob_dtype=prob_dtype, **options,
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
