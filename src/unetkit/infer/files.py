"""Prediction on files: expand inputs, name outputs, stream the tiles of each image into its targets.

Labels go to ``OUT/<stem>`` in the input's format (``.png`` for PNG/JPEG/BMP, ``.tif`` for TIFF,
``.nii.gz`` for NIfTI, ``.zarr`` for zarr, ``.npy`` for ``.npy``); probabilities to ``OUT/<stem>_prob.tif``
(``.zarr`` for zarr inputs); the overlay to ``OUT/<stem>_overlay.png`` (2D only).
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io import IMAGE_SUFFIXES, image_format, is_image_file, open_image, strip_suffix
from unetkit.errors import ConfigError, DataError
from unetkit.infer.overlay import OverlayTarget
from unetkit.infer.predictor import Predictor, class_labels
from unetkit.infer.writers import open_target
from unetkit.viz.palette import palette

log = logging.getLogger(__name__)

LABEL_SUFFIX = {"pil": ".png", "tiff": ".tif", "nifti": ".nii.gz", "zarr": ".zarr", "npy": ".npy"}
PROB_DTYPES = ("float16", "uint8")


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
    """What :func:`predict_file` did: outputs, tiles, megapixels and seconds."""

    input: Path
    outputs: OutputPaths
    shape: tuple[int, ...]
    tiles: int
    seconds: float
    class_counts: list[int] = field(default_factory=list)

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


def output_paths(path: Path, out_dir: Path, *, probabilities: bool, overlay: bool) -> OutputPaths:
    """The output paths for one input (see the module docstring)."""
    fmt = image_format(path)
    stem = strip_suffix(path.name)
    return OutputPaths(
        labels=out_dir / f"{stem}{LABEL_SUFFIX[fmt]}",
        probabilities=(out_dir / f"{stem}_prob{'.zarr' if fmt == 'zarr' else '.tif'}") if probabilities else None,
        overlay=(out_dir / f"{stem}_overlay.png") if overlay else None,
    )


def expand_inputs(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files, folders (their image files and ``.zarr`` stores, sorted) and glob patterns, in order, deduplicated."""
    found: list[Path] = []
    for item in items:
        text = str(item)
        p = Path(text)
        if p.is_dir() and not (p.name.endswith(".zarr") or _is_zarr(p)):
            found += sorted(c for c in p.iterdir() if is_image_file(c) or (c.is_dir() and _is_zarr(c)))
        elif p.exists():
            found.append(p)
        elif glob.has_magic(text):
            found += sorted(Path(m) for m in glob.glob(text) if is_image_file(m))
        else:
            raise DataError(f"{text}: no such file, folder or matching pattern; fix: check the path")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DataError(f"no image files in {', '.join(map(str, items))}; readable: {', '.join(IMAGE_SUFFIXES)}")
    return unique


def _is_zarr(p: Path) -> bool:
    return any((p / f).exists() for f in ("zarr.json", ".zarray", ".zgroup"))


def plan_outputs(inputs: Sequence[Path], out_dir: Path, *, probabilities: bool, overlay: bool) -> list[OutputPaths]:
    """Output paths for every input, refusing to overwrite an input or to write two results to one path."""
    plans = [output_paths(p, out_dir, probabilities=probabilities, overlay=overlay) for p in inputs]
    ins = {p.resolve(): p for p in inputs}
    seen: dict[Path, Path] = {}
    for src, plan in zip(inputs, plans, strict=True):
        for out in plan.all():
            r = out.resolve()
            if r in ins:
                raise DataError(
                    f"{out}: this output would overwrite the input {ins[r]}; fix: choose another --out folder"
                )
            if r in seen:
                raise DataError(
                    f"{seen[r]} and {src} would both write {out} (same file name); fix: predict them into "
                    "different --out folders or rename one"
                )
            seen[r] = src
    return plans


def predict_file(
    predictor: Predictor,
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    outputs: OutputPaths | None = None,
    probabilities: bool = False,
    prob_dtype: str = "float16",
    overlay: bool = False,
    on_tiles: Callable[[int], None] | None = None,
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
        on_tiles: progress callback, called with the number of tiles just computed.

    Returns:
        A :class:`PredictionResult`.

    Shape:
        image ``(C, *S)`` -> labels ``(*S)``, probabilities ``(K, *S)``.
    """
    path = Path(path)
    if prob_dtype not in PROB_DTYPES:
        raise ConfigError(f"prob_dtype: {prob_dtype!r}; choose one of {', '.join(PROB_DTYPES)}")
    if outputs is None:
        if out_dir is None:
            raise ConfigError("predict_file: give out_dir or outputs")
        outputs = plan_outputs([path], Path(out_dir), probabilities=probabilities, overlay=overlay)[0]
    image = open_image(path, spatial_dims=predictor.spatial_dims)
    if image.ndim - 1 != predictor.spatial_dims:
        raise DataError(f"{path}: a {image.ndim - 1}D image for a {predictor.spatial_dims}D network")
    spatial = tuple(int(s) for s in image.shape[1:])
    k = predictor.num_classes
    desc = predictor.description
    spacing = tuple(image.spacing) if image.spacing else None
    targets: list[tuple[str, Any]] = [
        ("labels", open_target(outputs.labels, spatial, np.uint8 if k <= 256 else np.uint16, spacing=spacing))
    ]
    if outputs.probabilities is not None:
        dtype = np.float16 if prob_dtype == "float16" else np.uint8
        targets.append(("proba", open_target(outputs.probabilities, (k, *spatial), dtype, lead=1, spacing=spacing)))
    if outputs.overlay is not None:
        if predictor.spatial_dims != 2:
            log.warning("%s: overlays are 2D only; skipped for this 3D image", path)
            outputs.overlay = None
        else:
            names = list(desc.class_names) if desc is not None else [f"class{i}" for i in range(k)]
            colours = [tuple(c) for c in desc.class_colours] if desc is not None else palette(k)
            if len(names) != k:  # a one-logit sigmoid head predicts two classes
                names, colours = ["background", *names][:k], [(0, 0, 0), *colours][:k]
            targets.append(("overlay", OverlayTarget(outputs.overlay, image, names, colours)))
    counts = np.zeros(k, np.int64)
    t0 = time.perf_counter()
    try:
        for slab in predictor.iter_slabs(image, on_tiles=on_tiles):
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
    return PredictionResult(path, outputs, (k, *spatial), predictor.tiles_for(spatial), seconds, counts.tolist())
