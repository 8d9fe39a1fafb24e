"""Where prediction results go: output names per input, formats, what each target stores beside the pixels.

Labels go to ``OUT/<stem>`` in the input's format (``.png`` for PNG/JPEG/BMP, ``.tif`` for TIFF,
``.nii.gz`` for NIfTI, ``.zarr`` for zarr, ``.npy`` for ``.npy``); probabilities to ``OUT/<stem>_prob.tif``
(``.zarr`` for zarr inputs); the overlay to ``OUT/<stem>_overlay.png`` (2D only) and, when instances are
written, their overlay to ``OUT/<stem>_instances_overlay.png``. ``format="tiff"`` or
``"zarr"`` choose the labels' and probabilities' format for every input; ``format="ome-zarr"`` writes
``OUT/<stem>.ome.zarr`` and ``OUT/<stem>_prob.ome.zarr`` (an OME-Zarr input gets OME-Zarr outputs by default).
:func:`plan_outputs` is the one rule, and it refuses to overwrite an input or to write two results to one path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.classes import Classes
from unetkit.data.io import image_format, strip_suffix
from unetkit.errors import ConfigError, DataError
from unetkit.infer.writers import OutputMeta

LABEL_SUFFIX = {"pil": ".png", "tiff": ".tif", "nifti": ".nii.gz", "zarr": ".zarr", "npy": ".npy"}
PROB_DTYPES = ("float16", "uint8")
OUTPUT_FORMATS = ("auto", "tiff", "zarr", "ome-zarr")
"""``format=``: ``auto`` (the input's format, see the module docstring), or one format for every input."""
COMPRESSION_DEFAULT = {"labels": "zlib", "proba": None, "restored": None, "restored_integer": "zlib"}
"""``compression="auto"``: label TIFFs are deflate-compressed (2-class labels shrink about 16-20x, measured on
the ISBI masks and synthetic cells, and every TIFF reader decodes deflate), probability TIFFs stay
uncompressed (float16 probabilities shrink about 1.25x for the time it costs, and an uncompressed file
memory-maps); a restoration's float32 output stays uncompressed for the same reason, its integer output
(``--dtype uint8/uint16/target``) is deflate-compressed; any other value applies to all (docs/prediction.md)."""


@dataclass
class OutputPaths:
    """Where one input's results go."""

    labels: Path
    probabilities: Path | None = None
    overlay: Path | None = None
    instances_overlay: Path | None = None

    def all(self) -> list[Path]:
        return [p for p in (self.labels, self.probabilities, self.overlay, self.instances_overlay) if p is not None]


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


def refuse_segmentation_outputs(model: str | None, asked: Sequence[str]) -> None:
    """The one refusal of segmentation outputs (``asked``: their names as the caller spells them, e.g.
    ``--instances`` or ``probabilities=True``) for a restoration model, which writes the restored image.

    >>> refuse_segmentation_outputs("m.safetensors", [])  # nothing asked: nothing to refuse
    """
    if asked:
        raise ConfigError(
            f"{', '.join(asked)}: segmentation outputs, but {model or 'the model'} is a restoration model "
            "(task: restore), which gives the restored image; leave them out"
        )


def check_output_format(format: str) -> str:
    """``format`` if it is one of :data:`OUTPUT_FORMATS`, else a :class:`ConfigError` naming them."""
    if format not in OUTPUT_FORMATS:
        raise ConfigError(f"format {format!r}: choose one of {', '.join(OUTPUT_FORMATS)}")
    return format


def output_paths(
    path: Path, out_dir: Path, *, probabilities: bool, overlay: bool, format: str = "auto", instances: bool = False
) -> OutputPaths:
    """The output paths for one input (see the module docstring); ``instances``: instance labels will be written
    (with ``overlay``, their overlay too)."""
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
        instances_overlay=(out_dir / f"{stem}_instances_overlay.png") if overlay and instances else None,
    )


def _is_ome_zarr(path: Path) -> bool:
    from unetkit.data.io.zarrio import ngff_version

    return path.is_dir() and ngff_version(path) is not None


def plan_outputs(
    inputs: Sequence[Path],
    out_dir: Path,
    *,
    probabilities: bool,
    overlay: bool,
    format: str = "auto",
    instances: bool = False,
) -> list[OutputPaths]:
    """Output paths for every input, refusing to overwrite an input or to write two results to one path."""
    plans = [
        output_paths(p, out_dir, probabilities=probabilities, overlay=overlay, format=format, instances=instances)
        for p in inputs
    ]
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


def outputs_for(
    path: Path, out_dir: Any, outputs: OutputPaths | None, caller: str, *, probabilities: bool, overlay: bool
) -> OutputPaths:
    """The given output paths, or those :func:`plan_outputs` gives ``path`` in ``out_dir``."""
    if outputs is not None:
        return outputs
    if out_dir is None:
        raise ConfigError(f"{caller}: give out_dir or outputs")
    return plan_outputs([path], Path(out_dir), probabilities=probabilities, overlay=overlay)[0]


def output_meta(path: Path, outputs: OutputPaths, classes: Classes, compression: str) -> dict[str, OutputMeta]:
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
