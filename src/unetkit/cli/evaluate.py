"""``unetkit evaluate``: score predictions against truths; write metrics.csv, summary.json and report.html."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import typer
from rich.table import Table

from unetkit.cli._common import console, setup_logging
from unetkit.errors import ConfigError

log = logging.getLogger(__name__)


def _parse_spacing(text: str | None) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"--spacing {text!r}: give numbers separated by commas, e.g. 4,4 or 50,4,4") from exc
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"--spacing {text!r}: every voxel size must be > 0")
    return values


def evaluate_cmd(
    truth: Path = typer.Option(..., "--truth", help="Folder of true masks (paired with predictions by stem)."),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.csv, summary.json and report.html."),
    pred: Path = typer.Option(None, "--pred", help="Folder of predicted masks or probability files (.npy/.tif)."),
    model: Path = typer.Option(None, "--model", help="Predict first with this model file (needs --images)."),
    images: Path = typer.Option(None, "--images", help="Folder of the images: report panels, crf, --model."),
    num_classes: int = typer.Option(
        None, "--num-classes", help="Pin the number of classes (default: the model's, else from the truths)."
    ),
    classes: str = typer.Option(
        None, "--classes", help="Class names for the report, class 0 first (default: the model's); pins the classes."
    ),
    ignore_index: int = typer.Option(None, "--ignore-index", help="Truth label left out of every metric."),
    spacing: str = typer.Option(None, "--spacing", help="Voxel size per axis, e.g. 50,4,4 (default: files')."),
    postprocess: str = typer.Option(
        "", "--postprocess", help="Steps, e.g. 'remove-islands:50,fill-holes:20@1,keep-largest,crf'."
    ),
    instances: str = typer.Option(
        "components",
        "--instances",
        help="Object separation for instance metrics: components, distance, probability or none.",
    ),
    no_isbi: bool = typer.Option(False, "--no-isbi", help="Skip the ISBI 2012 pixel/Rand/warping errors."),
    no_warping: bool = typer.Option(False, "--no-warping", help="Skip only the warping error (the slowest)."),
    no_surface: bool = typer.Option(False, "--no-surface", help="Skip Hausdorff 95 / mean surface distance."),
    include_background: bool = typer.Option(False, "--include-background", help="Count class 0 in means."),
    panels: int = typer.Option(12, "--panels", help="Pictures in the report (worst cases first)."),
    tile: int = typer.Option(None, "--tile", help="With --model: network input window."),
    device: str = typer.Option("auto", "--device", help="With --model: auto, cpu, cuda or cuda:N."),
    channels: str = typer.Option(
        None,
        "--channels",
        help="With --model: convert images whose channel count is not the model's: grey (RGB(A) -> luma), rgb "
        "(grey -> 3 channels, RGBA -> RGB) or first; default: refuse a mismatch before any prediction.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings only."),
    task: str = typer.Option(
        None,
        "--task",
        help="segment | restore (PSNR, SSIM, NRMSE against targets); default: the --model file's task, else restore "
        "where --truth holds intensities (non-integer floats), else segment.",
    ),
) -> None:
    """Score predicted masks against true masks (--task restore: restored images against targets, PSNR,
    SSIM, NRMSE), per image and overall.

    Pairs files of --pred and --truth by stem; writes OUT/metrics.csv (one row per image, worst first),
    OUT/summary.json (means; per class where it applies) and OUT/report.html (tables and panels, one
    self-contained file). Truth values become classes by the rule training uses (docs/data.md), with the
    model file's mapping under --model, else one mapping inferred over all truths: {0,255} -> {0,1}. ISBI 2012
    and instance metrics are computed for binary problems only. With --model, images are predicted first into
    OUT/predictions.

    Example: unetkit evaluate --pred preds --truth data/masks --images data/images --out eval

    Example: unetkit evaluate --model model.safetensors --images rgb/ --truth masks/ --out eval --channels grey
    """
    from dataclasses import replace

    from unetkit.evaluate.run import EvaluateOptions, evaluate_folders
    from unetkit.postprocess.instances import INSTANCE_METHODS
    from unetkit.postprocess.pipeline import parse_postprocess

    setup_logging(verbose, quiet)
    if task is None:  # follow the model, else the files: restored images are scored as restorations
        task = _task_of(model, truth)
    if task not in ("segment", "restore"):
        raise ConfigError(f"--task {task!r}: use segment or restore")
    from unetkit.data.channels import check_mode

    check_mode(channels)
    if channels is not None and model is None:
        raise ConfigError(
            "--channels converts the images --model predicts; give --model FILE --images DIR, or leave it out"
        )
    if task == "restore":
        _evaluate_restore(pred, truth, out, model, images, panels, tile, device, channels)
        return
    if instances not in (*INSTANCE_METHODS, "none"):
        raise ConfigError(f"--instances {instances!r}: use one of {', '.join(INSTANCE_METHODS)} or none")
    parse_postprocess(postprocess)  # fail on a bad pipeline before any work
    if pred is None and model is None:
        raise ConfigError("give --pred DIR (predictions to score) or --model FILE --images DIR (predict first)")
    from unetkit.classes import parse_classes

    options = EvaluateOptions(
        num_classes=num_classes, ignore_index=ignore_index, spacing=_parse_spacing(spacing),
        postprocess=postprocess, instances=instances, isbi=not no_isbi, warping=not no_warping,
        surface=not no_surface, include_background=include_background, panels=panels,
        classes=parse_classes(classes, "--classes") if classes is not None else None,
    )  # fmt: skip
    predict = None
    in_channels = None
    if model is not None:
        from unetkit.infer import load_predictor

        predictor = load_predictor(str(model), tile=tile, device=device)
        predict, in_channels = predictor.predict_proba, predictor.in_channels
        if predictor.description is not None:  # the model's classes and label mapping
            options = options.for_model(predictor.description)
        options = replace(options, model_file=model)
    pred_dir = pred if pred is not None else out / "predictions"
    with console.status("evaluating...", spinner="dots") as status:
        result = evaluate_folders(
            pred_dir, truth, out, options, image_dir=images, predict=predict, in_channels=in_channels,
            channels=channels,
            progress=None if quiet else lambda name: status.update(f"evaluating {name}"),
        )  # fmt: skip
    if not quiet:
        _print_summary(result.summary, result.notes)
        console.print(f"wrote {out / 'metrics.csv'}, {out / 'summary.json'}, {out / 'report.html'}")


def _print_summary(summary: dict, notes: list[str]) -> None:
    names = ", ".join(f"{k} {n}" for k, n in enumerate(summary.get("class_names", [])))
    table = Table(title=f"unetkit evaluate: {summary['num_images']} images, {summary['num_classes']} classes ({names})")
    table.add_column("metric")
    table.add_column("mean over images", justify="right")
    for key, value in summary.items():
        if key in ("num_images", "num_classes", "pooled", "class_names", "label_mapping", "challenge"):
            continue
        if isinstance(value, list):
            shown = "  ".join("-" if not math.isfinite(v) else f"{v:.4f}" for v in value)
        elif isinstance(value, float):
            shown = "-" if math.isnan(value) else f"{value:.4g}"
        else:
            shown = str(value)
        table.add_row(key, shown)
    pooled = summary.get("pooled", {})
    if pooled:
        table.add_row("pooled dice (all pixels)", f"{pooled['dice']:.4f}")
    challenge = summary.get("challenge")
    if challenge:  # probability maps: the ISBI challenge's protocol (each error at its best threshold)
        for name in ("pixel", "rand"):
            label = f"{name} error, challenge protocol (threshold {challenge[f'{name}_threshold']:g})"
            table.add_row(label, f"{challenge[f'{name}_error']:.4g}")
    console.print(table)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")


def _task_of(model: Path | None, truth: Path) -> str:
    """``--task`` left out: the model file's task; without a model, ``restore`` where --truth holds
    intensities (:func:`unetkit.evaluate.restore.holds_intensities`: non-integer floats, which no mask holds;
    --pred may hold a segmentation's probabilities, so it does not decide), else ``segment``."""
    if model is not None:
        from unetkit.infer.loading import file_description

        return str(file_description(model).task)
    from unetkit.evaluate.restore import holds_intensities

    if holds_intensities(truth):
        log.info("%s holds intensities, not masks: scored as restorations (--task restore)", truth)
        return "restore"
    return "segment"


def _evaluate_restore(
    pred: Path | None,
    truth: Path,
    out: Path,
    model: Path | None,
    images: Path | None,
    panels: int,
    tile: int | None,
    device: str,
    channels: str | None = None,
) -> None:
    """``--task restore``: (predict first with --model,) then PSNR/SSIM/NRMSE against the targets in --truth."""
    from unetkit.evaluate.restore import evaluate_restore

    if pred is None:
        if model is None or images is None:
            raise ConfigError("give --pred DIR (restored images) or --model FILE --images DIR (restore first)")
        from unetkit.infer.files import predict_files

        pred = out / "pred"
        predict_files(str(model), [str(images)], pred, tile=tile, device=device, channels=channels)
    s = evaluate_restore(pred, truth, out, images=images, panels=panels)
    table = Table(title=f"{s['images']} restored image(s) against {truth}")
    for col in ("", "PSNR (dB)", "SSIM", "NRMSE"):
        table.add_column(col, justify="right")
    if "input" in s:  # the "before": the inputs, scale-matched to their targets
        i = s["input"]
        table.add_row("input (scale-matched)", f"{i['psnr']:.2f}", f"{i['ssim']:.4f}", f"{i['nrmse']:.4f}")
    table.add_row("restored", f"{s['psnr']:.2f}", f"{s['ssim']:.4f}", f"{s['nrmse']:.4f}")
    console.print(table)
    if "psnr_gain" in s:
        console.print(f"restored - input: {s['psnr_gain']:+.2f} dB PSNR")
    console.print(f"metrics: {out / 'metrics.csv'}\nsummary: {out / 'summary.json'}\nreport: {out / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_cmd)
