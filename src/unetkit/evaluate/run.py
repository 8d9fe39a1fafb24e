"""Evaluate folders of predictions against truths: per-image rows, a summary, and the HTML report.

Used by ``unetkit evaluate``; everything here is plain library code (logging, no printing).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.classes import Classes, ClassSpec, pinned_num_classes
from unetkit.data.masks import LabelMapping
from unetkit.errors import ConfigError, DataError
from unetkit.evaluate.files import Labels, pair_files, read_prediction, read_truths
from unetkit.metrics.confusion import ConfusionMatrix, confusion_matrix, scores_from_matrix
from unetkit.metrics.instance import InstanceCounts
from unetkit.metrics.isbi import (
    CHALLENGE_THRESHOLDS,
    challenge_scores,
    errors_by_threshold,
    pixel_error,
    rand_error,
    warping_error,
)
from unetkit.metrics.surface import surface_distances_per_class
from unetkit.utils import atomic_path, remove_temporaries

log = logging.getLogger(__name__)

__all__ = ["EvaluateOptions", "EvaluationResult", "evaluate_arrays", "evaluate_folders"]

_SCORES = ("dice", "iou", "precision", "recall")

OUTPUTS = ("metrics.csv", "summary.json", "report.html")
"""What :func:`evaluate_folders` writes into its output folder."""
#: The suffix of a row's per-threshold errors (a list, one per :data:`CHALLENGE_THRESHOLDS`).
BY_THRESHOLD = "_by_threshold"


@dataclass
class EvaluateOptions:
    """What to compute, and how truth values become classes.

    Attributes:
        num_classes: number of classes ``K``; ``None``: the truth mapping's (or the number of ``classes``).
        ignore_index: truth value left out of every metric (default: the mapping's own, if any).
        spacing: voxel size per axis, for surface distances and physical post-processing sizes (default: the
            truth file's spacing, else 1).
        postprocess: a pipeline string (see :mod:`unetkit.postprocess.pipeline`) applied to predictions.
        instances: instance separation of the prediction for the object metrics (``components``,
            ``distance``, ``probability``) or ``none``; binary problems only.
        isbi: compute the ISBI 2012 metrics (binary problems only).
        warping: compute the warping error (the slowest ISBI metric).
        surface: compute Hausdorff 95 / mean surface distance per class.
        include_background: include class 0 in the mean scores.
        panels: how many worst cases get a picture in the report.
        mapping: raw truth value -> class (a model file's); ``None``: inferred once over the whole truth set
            by :func:`unetkit.data.masks.infer_mapping`, as training does.
        classes: class names (and colours), class 0 first, for the report; they pin ``num_classes``.
        model_file: the model file that predicted, for the report's provenance and its run's pictures.
    """

    num_classes: int | None = None
    ignore_index: int | None = None
    spacing: tuple[float, ...] | None = None
    postprocess: str = ""
    instances: str = "components"
    isbi: bool = True
    warping: bool = True
    surface: bool = True
    include_background: bool = False
    panels: int = 12
    model_file: Path | None = None
    mapping: LabelMapping | None = None
    classes: Sequence[ClassSpec] | None = None

    def for_model(self, description: Any) -> EvaluateOptions:
        """These options for a model's predictions: its classes, names, colours and label mapping.

        ``description`` is the model file's :class:`~unetkit.modelfile.ModelDescription`; a file without a
        ``label_mapping`` (written before it existed) gets one inferred over the truths, pinned to its classes.
        """
        classes = Classes.from_model(description.class_names, description.class_colours)
        mapping = LabelMapping.from_dict(description.label_mapping) if description.label_mapping else None
        return replace(
            self,
            num_classes=self.num_classes or len(classes),
            mapping=self.mapping or mapping,
            classes=self.classes or classes.to_specs(),
        )


@dataclass
class EvaluationResult:
    """``rows`` (one dict per image, worst first), ``summary`` (means), ``notes`` (what was skipped)."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _instances_of(labels: Labels, method: str, spacing: Sequence[float] | None) -> np.ndarray:
    from unetkit.postprocess.instances import separate_instances

    if labels.instances is not None:
        return labels.instances
    fg: np.ndarray = labels.classes == 1
    if method == "probability" and labels.probs is not None:
        fg = labels.probs[1]
    elif method == "probability":
        method = "components"
    return separate_instances(fg, method, spacing=spacing)  # type: ignore[arg-type]


def evaluate_arrays(
    pred: Labels,
    truth: Labels,
    options: EvaluateOptions,
    *,
    num_classes: int,
    spacing: Sequence[float] | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of one prediction/truth pair: ``(row, confusion matrix [K, K])``.

    ``pred.classes`` must already be post-processed. The row holds the per-image scores; ISBI, instance and
    surface metrics appear only where they apply (binary problems; classes present).
    """
    t, p = truth.classes, pred.classes
    if t.shape != p.shape:
        raise DataError(f"prediction shape {p.shape} differs from truth shape {t.shape}")
    matrix = confusion_matrix(p, t, num_classes, options.ignore_index)
    scores = scores_from_matrix(matrix)
    first = 0 if options.include_background or num_classes == 1 else 1
    row: dict[str, Any] = {}
    for name in _SCORES:
        values = scores[name][first:]
        row[name] = float(np.nanmean(values)) if not np.all(np.isnan(values)) else math.nan
    total = matrix.sum()
    row["accuracy"] = float(np.trace(matrix) / total) if total else math.nan
    for name in ("dice", "iou"):
        row[f"{name}_per_class"] = [float(v) for v in scores[name]]
    valid = t != options.ignore_index if options.ignore_index is not None else None
    binary = num_classes == 2
    if binary and options.isbi:
        pt = p if valid is None else np.where(valid, p, t)  # ignored pixels count as agreeing
        row["pixel_error"] = pixel_error(pt, t == 1)
        row["rand_error"] = rand_error(pt, t == 1)
        if options.warping:
            row["warping_error"] = warping_error(pt, t == 1)
        if pred.probs is not None:  # the challenge's protocol: probability maps scored at every threshold
            fg = pred.probs[1] if valid is None else np.where(valid, pred.probs[1], (t == 1).astype(np.float32))
            for metric, errors in errors_by_threshold(fg, t == 1).items():
                row[f"{metric}{BY_THRESHOLD}"] = errors
    if binary and options.instances != "none":
        pred_ids = _instances_of(pred, options.instances, spacing)
        counts = InstanceCounts().update(pred_ids, _instances_of(truth, "components", spacing))
        row["ap"] = counts.mean_image_ap()
        row["instance_precision"] = float(counts.precision()[0])
        row["instance_recall"] = float(counts.recall()[0])
        row["instance_f1"] = float(counts.f1()[0])
    if options.surface:
        dists = surface_distances_per_class(p, t, num_classes, spacing, options.ignore_index)
        # classes absent from both truth and prediction have no surface: leave them out of the mean
        present = [d for c, d in enumerate(dists) if c >= first and (matrix[c].sum() or matrix[:, c].sum())]
        row["hd95"] = float(np.mean([d.hd95 for d in present])) if present else math.nan
        row["msd"] = float(np.mean([d.msd for d in present])) if present else math.nan
    return row, matrix


def _mean(values: list[Any]) -> float:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _summarise(rows: list[dict[str, Any]], total: ConfusionMatrix, options: EvaluateOptions) -> dict[str, Any]:
    summary: dict[str, Any] = {"num_images": len(rows), "num_classes": total.num_classes}
    keys = [k for k in rows[0] if k != "name" and not k.endswith(BY_THRESHOLD)]
    if all(f"rand_error{BY_THRESHOLD}" in r for r in rows):
        scored = [{k[: -len(BY_THRESHOLD)]: r[k] for k in r if k.endswith(BY_THRESHOLD)} for r in rows]
        summary["challenge"] = challenge_scores(scored)._asdict()
    for key in keys:
        values = [r.get(key) for r in rows]
        if isinstance(values[0], list):
            per_class = np.array(values, dtype=np.float64)
            with warnings.catch_warnings():  # a class undefined in every image has a NaN mean
                warnings.simplefilter("ignore", RuntimeWarning)
                means = [float(v) for v in np.nanmean(np.where(np.isnan(per_class), np.nan, per_class), axis=0)]
            summary[key] = [m if math.isfinite(m) else math.nan for m in means]
        else:
            summary[key] = _mean(values)
            infinite = sum(1 for v in values if isinstance(v, float) and math.isinf(v))
            if infinite:
                summary[f"{key}_infinite_images"] = infinite
    pooled = total.summary(options.include_background)
    summary["pooled"] = {k: pooled[k] for k in ("dice", "iou", "dice_per_class", "iou_per_class", "accuracy")}
    return summary


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def _flat_row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k.endswith(BY_THRESHOLD):  # rand_error@0.5, ...
            out.update({f"{k[: -len(BY_THRESHOLD)]}@{t:g}": x for t, x in zip(CHALLENGE_THRESHOLDS, v, strict=True)})
        elif isinstance(v, list):
            out.update({f"{k.replace('_per_class', '')}_c{i}": x for i, x in enumerate(v)})
        else:
            out[k] = v
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    flat = [_flat_row(r) for r in rows]
    columns = list(dict.fromkeys(c for r in flat for c in r))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in flat:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def evaluate_folders(
    pred_dir: Path,
    truth_dir: Path,
    out_dir: Path,
    options: EvaluateOptions | None = None,
    *,
    image_dir: Path | None = None,
    predict: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: Callable[[str], None] | None = None,
    in_channels: int | None = None,
    channels: str | None = None,
) -> EvaluationResult:
    """Evaluate every prediction of ``pred_dir`` against the truth of the same stem in ``truth_dir``.

    Writes ``metrics.csv`` (one row per image, worst Dice first), ``summary.json`` (means over images, per
    class where it applies, and ``pooled`` scores from the summed confusion matrix) and ``report.html``
    into ``out_dir``.

    Args:
        pred_dir: predicted masks (or probability files); with ``predict`` it is where the predictions are
            written (and may start empty).
        truth_dir: true masks.
        out_dir: output folder.
        options: what to compute.
        image_dir: the images (for report panels, the CRF step and ``predict``).
        predict: a function ``image (C, *S) -> probabilities (K, *S)``; when given, every image of
            ``image_dir`` with a truth is predicted first and saved to ``pred_dir`` as ``.npy`` probabilities.
        progress: called with each image's name.
        in_channels: with ``predict``: the channels it takes. Every image's channel count is checked before
            the first prediction (a mismatch is refused, naming the file), and converted by ``channels``.
        channels: ``rgb``, ``grey`` or ``first`` (:mod:`unetkit.data.channels`); ``None`` refuses a mismatch.

    A run killed part-way leaves no file half-written under its final name (every file is written atomically);
    the hidden temporaries it left are removed by the next run into the same folders.
    """
    from unetkit.data.io import read_image
    from unetkit.postprocess.pipeline import apply_postprocess, parse_postprocess

    options = options or EvaluateOptions()
    steps = parse_postprocess(options.postprocess)
    out_dir = Path(out_dir)
    for written in OUTPUTS:
        remove_temporaries(out_dir / written)  # of a killed earlier run
    if predict is not None:
        _predict_folder(predict, image_dir, truth_dir, Path(pred_dir), in_channels, channels)
    pairs = pair_files(Path(pred_dir), Path(truth_dir), image_dir)
    if any(s.name == "crf" for s in steps) and image_dir is None:
        raise DataError("the crf post-processing step needs the images", fix="pass --images DIR")
    specs = options.classes
    pinned = pinned_num_classes(options.num_classes, specs)
    mapping, truths = read_truths(
        [t for _, _, t, _ in pairs],
        mapping=options.mapping,
        num_classes=pinned,
        ignore_index=options.ignore_index,
        colours=[c.colour for c in specs] if specs is not None else None,
    )
    k = pinned or mapping.num_classes
    if k < mapping.num_classes:
        raise ConfigError(
            f"--num-classes {k}, but the label mapping gives {mapping.num_classes} ({mapping.describe()})"
        )
    options = replace(options, num_classes=k, ignore_index=mapping.ignore_index)
    classes = Classes.resolve(k, specs, mapping.class_colours, where="--classes")
    loaded = []
    for (name, pred_path, _, image_path), truth in zip(pairs, truths, strict=True):
        pred = read_prediction(pred_path, mapping, k, spatial_dims=truth.classes.ndim)
        loaded.append((name, pred, truth, image_path))
    notes = [f"truth values -> classes: {mapping.describe()}"]
    if k != 2:
        notes.append(f"{k} classes: ISBI 2012 and instance metrics apply to binary problems only and were skipped")
    total = ConfusionMatrix(k, options.ignore_index)
    rows: list[dict[str, Any]] = []
    pictures: dict[str, tuple[np.ndarray | None, np.ndarray, np.ndarray]] = {}
    for name, pred, truth, image_path in loaded:
        if progress is not None:
            progress(name)
        spacing = options.spacing or truth.spacing
        image = read_image(image_path, spatial_dims=truth.classes.ndim).array if image_path is not None else None
        if steps:
            pred.classes = apply_postprocess(
                pred.classes, steps, num_classes=k, probs=pred.probs, image=image, spacing=spacing
            )
            pred.instances = None  # the file's instance ids no longer match the cleaned labels
        if pred.classes.shape != truth.classes.shape:
            raise DataError(
                f"prediction shape {pred.classes.shape} differs from truth shape {truth.classes.shape}",
                file=name,
                fix="predict the truth's image, or pair the right files",
            )
        row, matrix = evaluate_arrays(pred, truth, options, num_classes=k, spacing=spacing)
        total.add_matrix(matrix)
        rows.append({"name": name, **row})
        pictures[name] = (image, truth.classes, pred.classes)
    rows.sort(key=lambda r: (math.isnan(r["dice"]), r["dice"]))
    summary = _summarise(rows, total, options)
    summary["class_names"] = list(classes.names)
    summary["label_mapping"] = mapping.describe()
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "metrics.csv", rows)
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(summary), indent=2))
    _write_html(out_dir / "report.html", rows, summary, pictures, options, notes, classes, Path(truth_dir))
    return EvaluationResult(rows, summary, notes)


def _write_html(
    path: Path,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    pictures: dict[str, tuple[np.ndarray | None, np.ndarray, np.ndarray]],
    options: EvaluateOptions,
    notes: list[str],
    classes: Classes,
    truth_dir: Path,
) -> None:
    from unetkit.viz.panels import panel_png
    from unetkit.viz.report import provenance, run_pictures, write_report

    panels = []
    for r in rows[: options.panels]:
        image, truth, pred = pictures[r["name"]]
        caption = f"{r['name']}: dice {r['dice']:.4f}"
        png = panel_png(
            image, truth, pred, title=r["name"], ignore_index=options.ignore_index, colours=list(classes.colours)
        )
        panels.append((caption, png))
    shown = [_flat_row(r) for r in rows]
    scalars = {k: v for k, v in summary.items() if k not in ("pooled", "class_names", "label_mapping")}
    if options.postprocess:
        notes = [*notes, f"post-processing: {options.postprocess}"]
    model = options.model_file
    info = provenance(model=model, data=truth_dir)
    run = run_pictures(Path(model).parent) if model is not None else []
    write_report(path, scalars, shown, panels, notes=notes, class_names=classes.names, info=info, run=run)


def _predict_folder(
    predict: Callable[[np.ndarray], np.ndarray],
    image_dir: Path | None,
    truth_dir: Path,
    pred_dir: Path,
    in_channels: int | None = None,
    channels: str | None = None,
) -> None:
    from unetkit.data.channels import check_channels, check_mode, convert_channels, file_channels
    from unetkit.data.io import read_image, write_image
    from unetkit.evaluate.files import _listing

    check_mode(channels)
    if image_dir is None:
        raise DataError("evaluating a model needs the images", fix="pass --images DIR")
    images = _listing(Path(image_dir), "image")
    truths = _listing(Path(truth_dir), "truth")
    todo = sorted(images.keys() & truths.keys())
    if not todo:
        raise DataError(
            f"no image of {image_dir} has a truth of the same stem in {truth_dir}",
            fix="give images and truths that share file names up to the suffix",
        )
    if in_channels is not None:  # every image, before the first prediction
        for name in todo:
            check_channels(images[name], file_channels(images[name]), in_channels, channels)
    pred_dir.mkdir(parents=True, exist_ok=True)
    for name in todo:
        target = pred_dir / f"{name}.npy"
        remove_temporaries(target)  # of a killed earlier run
        image = read_image(images[name]).array
        proba = predict(image if in_channels is None else convert_channels(image, in_channels, channels))
        write_image(target, proba.astype(np.float32))
        log.info("predicted %s", name)
