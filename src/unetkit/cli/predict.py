"""``unetkit predict`` and ``unetkit export``: segment images of any size; export a model (ONNX, TorchScript, zoo)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from unetkit.cli._common import console, setup_logging

if TYPE_CHECKING:  # the library (and torch) is imported when a command runs, not at start-up
    from unetkit.infer.files import PredictionResult


MODEL_SUFFIXES = (".safetensors", ".onnx", ".zip")
"""Arguments with these suffixes before the images are more models (an ensemble); ``.zip``: a bioimage.io package."""


def predict_cmd(
    model: Path = typer.Argument(..., help="Model file (.safetensors), an exported .onnx or a bioimage.io .zip."),
    inputs: list[str] = typer.Argument(
        ..., help="Image files, folders or glob patterns; more model files first make an ensemble."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the results (writing over an input is refused)."),
    tile: int = typer.Option(None, "--tile", help="Network input window; default: the model file's, else 256/96."),
    overlap: float = typer.Option(0.25, "--overlap", help="Tile overlap fraction (same-padded nets)."),
    blend: str = typer.Option("gaussian", "--blend", help="gaussian, hann, linear, constant or center."),
    tta: bool = typer.Option(False, "--tta", help="Average all flips (4x in 2D, 8x in 3D the cost)."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write <stem>_prob.tif (K, *S)."),
    prob_dtype: str = typer.Option("float16", "--prob-dtype", help="float16 or uint8 (probability x 255)."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write <stem>_overlay.png with a legend (2D)."),
    format: str = typer.Option(
        "auto", "--format", help="auto (the input's), tiff, zarr or ome-zarr (OUT/<stem>.ome.zarr, multiscale)."
    ),
    compression: str = typer.Option(
        "auto", "--compression", help="TIFF outputs: auto (zlib labels, raw probabilities), zlib, lzw, zstd, none."
    ),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="auto (on CPU the fastest installed, measured once per machine; torch on CUDA), torch, onnxruntime "
        "or openvino.",
    ),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32, or int8: the graph `unetkit export MODEL --int8` made and checked."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(4, "--batch-size", help="Tiles per network call."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Channels-last memory layout (torch)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network (torch)."),
    dask: str = typer.Option(
        None, "--dask", help="Run on a Dask cluster: an ADDRESS, or 'local' for a 2-worker LocalCluster; zarr out."
    ),
    postprocess: str = typer.Option(
        None, "--postprocess", help="Refine the labels, e.g. 'remove-islands:50,fill-holes,crf' (images in memory)."
    ),
    instances: str = typer.Option(
        None,
        "--instances",
        help="Also write <stem>_instances.tif: components, distance, probability or boundary (the default of a model "
        "trained on instance masks).",
    ),
    dtype: str = typer.Option(
        "float32",
        "--dtype",
        help="Restoration models: float32, uint8, uint16 or target (the training targets' dtype, clipped to its "
        "range).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings only, no progress bar."),
) -> None:
    """Segment images of any size tile by tile, streaming the results to --out.

    Labels go to OUT/<stem> in the input's format, probabilities to OUT/<stem>_prob.tif, the overlay to
    OUT/<stem>_overlay.png.

    Several model files (e.g. the folds of `unetkit train --folds 5`) average their probabilities.

    Example: unetkit predict runs/demo/model.safetensors scans/*.tif --out preds --overlay
    """
    from unetkit.infer.files import predict_files

    models = [str(model)]
    while inputs and Path(inputs[0]).suffix.lower() in MODEL_SUFFIXES:
        models.append(inputs.pop(0))
    if not inputs:
        raise typer.BadParameter("give at least one image after the model file(s)", param_hint="INPUTS")

    setup_logging(verbose, quiet)
    job = dict(
        probabilities=probabilities, prob_dtype=prob_dtype, overlay=overlay, format=format, compression=compression,
        postprocess=postprocess,
        instances=instances, dask=dask, tile=tile, overlap=overlap, blend=blend, tta=tta, backend=backend,
        device=device, batch_size=batch_size, channels_last=channels_last, compile=compile,
    )  # fmt: skip
    if precision != "fp32":  # only then: an ONNX file or a package takes no precision
        job["precision"] = precision
    job["dtype"] = dtype  # restoration models' output dtype
    if dask is not None:
        predict_files(models, inputs, out, progress=_DaskLines(), **job)  # type: ignore[arg-type]
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} tiles"),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=quiet,
    ) as bar:  # fmt: skip
        predict_files(models, inputs, out, progress=_Bars(bar, quiet), **job)  # type: ignore[arg-type]


class _DaskLines:
    """A Dask run: one line per file when the run is over (a :class:`~unetkit.infer.files.PredictProgress`)."""

    def start(self, path: Path, summary: str, tiles: int, megapixels: float) -> None:
        pass

    def advance(self, tiles: int) -> None:
        pass

    def predicted(self, result: PredictionResult) -> None:
        console.print(f"{result.input} -> {result.outputs.labels}")

    def done(self, result: PredictionResult) -> None:
        pass


class _Bars:
    """A progress bar per image, then the files it wrote (a :class:`~unetkit.infer.files.PredictProgress`)."""

    def __init__(self, progress: Progress, quiet: bool) -> None:
        self.progress, self.quiet = progress, quiet
        self.meter: _Meter | None = None

    def start(self, path: Path, summary: str, tiles: int, megapixels: float) -> None:
        if not self.quiet:
            self.progress.log(f"{path}: {summary}")
        self.meter = _Meter(self.progress, path.name, tiles, megapixels)

    def advance(self, tiles: int) -> None:
        if self.meter is not None:
            self.meter(tiles)

    def predicted(self, result: PredictionResult) -> None:
        if self.meter is not None:
            rate = result.megapixels / max(result.seconds, 1e-9)
            self.progress.update(self.meter.task, rate=f"{rate:.2f} MP/s")
        for p in result.outputs.all():
            console.print(f"  wrote {p}")

    def done(self, result: PredictionResult) -> None:
        for p in result.postprocessed:
            console.print(f"  wrote {p} (post-processed)" if p == result.outputs.labels else f"  wrote {p}")


class _Meter:
    """Progress callback: advances the bar and shows tiles/s and megapixels/s."""

    def __init__(self, progress: Progress, name: str, total: int, megapixels: float) -> None:
        self.progress, self.total, self.megapixels = progress, total, megapixels
        self.task = progress.add_task(name, total=total, rate="")
        self.t0: float | None = None
        self.done = 0

    def __call__(self, n: int) -> None:
        now = time.perf_counter()
        if self.t0 is None:  # the first batch includes warm-up; rates count from its end
            self.t0 = now
        else:
            self.done += n
        self.progress.advance(self.task, n)
        dt = now - self.t0
        if dt > 0:
            rate = self.done / dt
            self.progress.update(self.task, rate=f"{rate:.1f} tiles/s, {self.megapixels * rate / self.total:.2f} MP/s")


def export_cmd(
    model: Path = typer.Argument(..., help="Model file (.safetensors)."),
    format: str = typer.Option("onnx", "--format", help="onnx, torchscript or bioimageio (a model-zoo .zip)."),
    out: Path = typer.Option(None, "--out", help="Output file; default: MODEL with .onnx, .pt or .zip."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version."),
    set_: list[str] = typer.Option(
        [], "--set", help="bioimageio: a package field, e.g. --set license=MIT --set 'authors=Ada Lovelace'."
    ),
    meta: Path = typer.Option(None, "--meta", help="bioimageio: a YAML file of package fields (authors, cite...)."),
    int8: bool = typer.Option(
        False, "--int8", help="onnx: INT8 post-training quantisation, refused if the held-out labels change."
    ),
    calibration: list[str] = typer.Option(
        [], "--calibration", help="--int8: calibration images (files, folders, globs); default: the training images."
    ),
    int8_tolerance: float = typer.Option(
        0.005, "--int8-tolerance", help="--int8: the largest Dice loss per class allowed (INT8 vs fp32 labels)."
    ),
) -> None:
    """Export a model file to ONNX (fp32 or checked INT8), TorchScript (QuPath, deepImageJ) or a bioimage.io package.

    Example: unetkit export runs/demo/model.safetensors --format bioimageio --out model.zip --set license=MIT

    Example: unetkit export runs/demo/model.safetensors --int8 --calibration scans/
    """
    from unetkit.errors import ConfigError
    from unetkit.modelfile import load_model

    suffix = {"onnx": ".onnx", "torchscript": ".pt", "bioimageio": ".zip"}
    if format not in suffix:
        raise ConfigError(f"--format {format!r}: choose one of {', '.join(suffix)}")
    if int8 and format != "onnx":
        raise ConfigError(f"--int8 makes an ONNX graph; drop --format {format} or --int8")
    target = out or (model.with_suffix(".int8.onnx") if int8 else model.with_suffix(suffix[format]))
    if target.resolve() == model.resolve():
        raise ConfigError(f"--out {target} is the model file itself; choose another path")
    net = load_model(model)
    if int8:
        from unetkit.infer.quantize import calibration_set, export_int8

        setup_logging(False, False)
        result = export_int8(net, calibration_set(model, calibration or None), target, tolerance=int8_tolerance)
        console.print(result.summary(), highlight=False)
        console.print(f"wrote {result.path} (cached for `unetkit predict MODEL --precision int8`)")
        return
    if format == "onnx":
        from unetkit.infer.export import export_onnx

        path = export_onnx(net, target, opset=opset)
    elif format == "torchscript":
        from unetkit.infer.export import export_torchscript

        path = export_torchscript(net, target)
    else:
        from unetkit.infer.bioimageio import export_bioimageio, package_metadata, validate_package

        fields = {}
        for item in set_:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--set {item!r}: give KEY=VALUE, e.g. --set license=MIT")
            fields[key.strip()] = value.strip()
        path = export_bioimageio(net, target, meta=package_metadata(fields, meta))
        try:
            validate_package(path)
            console.print("bioimage.io validation: passed")
        except ImportError:
            console.print("bioimage.io validation skipped (pip install 'unetkit[bioimageio]')")
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)
    app.command("export")(export_cmd)
