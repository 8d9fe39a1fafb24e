"""``unetkit predict`` and ``unetkit export``: segment images of any size; export a model (ONNX, TorchScript, zoo)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from unetkit.cli._common import console, err_console, setup_logging

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
    tile: int = typer.Option(None, "--tile", help="Network input window; default: the model file's, else 512/96."),
    overlap: float = typer.Option(0.25, "--overlap", help="Tile overlap fraction (same-padded nets)."),
    blend: str = typer.Option("gaussian", "--blend", help="gaussian, hann, linear, constant or center."),
    tta: bool = typer.Option(False, "--tta", help="Average all flips (4x in 2D, 8x in 3D the cost)."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write <stem>_prob.tif (K, *S)."),
    prob_dtype: str = typer.Option("float16", "--prob-dtype", help="float16 or uint8 (probability x 255)."),
    overlay: bool = typer.Option(
        False,
        "--overlay",
        help="Also write <stem>_overlay.png: classes filled and outlined, with a legend (2D); with --instances "
        "also <stem>_instances_overlay.png, one colour per object.",
    ),
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
    batch_size: int = typer.Option(
        None, "--batch-size", help="Tiles per network call; default: the backend's for the tile (docs/prediction.md)."
    ),
    channels: str = typer.Option(
        None,
        "--channels",
        help="Convert images whose channel count is not the model's, as they are read: grey (RGB(A) -> luma), "
        "rgb (grey -> 3 channels, RGBA -> RGB) or first (the first channels the model takes); default: refuse a "
        "mismatch before any work. (Not --channels-last.)",
    ),
    channels_last: bool = typer.Option(
        False, "--channels-last", help="Channels-last memory layout of the network (torch); not --channels."
    ),
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
    """Segment (or, with a restoration model, restore) images of any size tile by tile, streaming the results
    to --out.

    Labels go to OUT/<stem> in the input's format (a PNG is a palette PNG: class indices shown in the class
    colours), probabilities to OUT/<stem>_prob.tif, the overlay to OUT/<stem>_overlay.png, instances to
    OUT/<stem>_instances.tif (with --overlay also OUT/<stem>_instances_overlay.png). A restoration model
    writes OUT/<stem> as float32 TIFF (zarr for zarr input) in the targets' intensity range (--dtype), and with
    --overlay OUT/<stem>_panel.png: input | output, with a zoomed crop.

    Several model files (e.g. the folds of `unetkit train --folds 5`) average their probabilities.

    Example: unetkit predict runs/demo/model.safetensors scans/*.tif --out preds --overlay

    Example: unetkit predict grey_model.safetensors photos/*.jpg --out preds --channels grey
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
        device=device, batch_size=batch_size, channels_last=channels_last, compile=compile, channels=channels,
    )  # fmt: skip
    if precision != "fp32":  # only then: an ONNX file or a package takes no precision
        job["precision"] = precision
    job["dtype"] = dtype  # restoration models' output dtype
    if dask is not None:
        predict_files(models, inputs, out, progress=_DaskLines(), **job)  # type: ignore[arg-type]
        return
    from unetkit.infer.inputs import expand_inputs

    files = expand_inputs(inputs)
    check_inputs(out, channels)
    sweep_stale_temporaries(out, files)
    if not quiet:
        for line in training_image_warnings(models, files):
            err_console.print(f"[yellow]warning:[/] {line}")
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} {task.fields[unit]}"),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=quiet, transient=False,
    ) as bar:  # fmt: skip
        overall = _Overall(bar, len(files), quiet)
        results = predict_files(models, files, out, progress=overall, **job)  # type: ignore[arg-type]
    if not quiet:
        console.print(summary_table(results, _class_names(model), out))
    console.print(summary_line(results, out, overall.seconds()))
    for line in background_warnings(results):
        err_console.print(f"[yellow]warning:[/] {line}")


def check_inputs(out: Path, channels: str | None = None) -> None:
    """Before any work: ``--out`` is a folder and ``--channels`` a known conversion (every image's channels are
    checked by the library before the first tile, :func:`unetkit.infer.inputs.check_input_channels`)."""
    from unetkit.data.channels import check_mode
    from unetkit.errors import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the results (it is created if missing)")
    check_mode(channels)


def sweep_stale_temporaries(out: Path, files: list[Path]) -> list[Path]:
    """Remove the hidden temporary files a killed earlier prediction of these inputs left in ``out``.

    Results are written to ``.<name>.<random>.tmp<suffix>`` beside their final name and renamed when complete
    (:func:`unetkit.utils.atomic_path`); a SIGKILL leaves the temporary behind, never a half-written result.
    """
    import logging

    from unetkit.data.io.common import strip_suffix

    removed: list[Path] = []
    if not out.is_dir():
        return removed
    for src in files:
        stem = strip_suffix(src.name)
        # ".." : the scratch of a compressed TIFF is itself written atomically beside the result's temporary
        for pattern in (f"{dots}{stem}{sep}*.tmp*" for dots in (".", "..") for sep in (".", "_")):
            for tmp in out.glob(pattern):
                if tmp.is_file() and not tmp.is_symlink():
                    tmp.unlink()
                    removed.append(tmp)
    if removed:
        logging.getLogger("unetkit.cli").info(
            "removed %d temporary files of an interrupted run from %s", len(removed), out
        )
    return removed


def training_image_warnings(models: list[str], files: list[Path]) -> list[str]:
    """One line when some inputs trained a model (its run folder's ``split.json`` names them): scores on them
    look better than on new images. Where the run's dataset (``config.yaml``'s ``data.path``) is still there,
    an input counts only if it is the training file itself (same bytes), so new images that merely share a
    name (``00.tif``) raise no warning."""
    import json

    from unetkit.data.io.common import strip_suffix

    lines = []
    for model in models:
        split = Path(model).parent / "split.json"
        try:
            trained = {Path(n).name for n in json.loads(split.read_text(encoding="utf-8")).get("train", [])}
        except (OSError, ValueError, AttributeError):
            continue  # no run folder beside the model file, or not one unetkit wrote
        dataset = _training_files(Path(model).parent)
        seen = [f.name for f in files if strip_suffix(f.name) in trained
                and (dataset is None or _same_file(f, dataset.get(strip_suffix(f.name))))]  # fmt: skip
        if seen:
            shown = ", ".join(seen[:5]) + (f" and {len(seen) - 5} more" if len(seen) > 5 else "")
            lines.append(
                f"{len(seen)} of these images trained {model} ({shown}; {split}): its results on them look "
                "better than on new images"
            )
    return lines


def _training_files(run: Path) -> dict[str, Path] | None:
    """The training images of the run in ``run`` by stem (``images/`` or ``inputs/`` of its ``data.path``), or
    ``None`` where that folder is no longer found."""
    from unetkit.data.io import is_image_file, is_zarr_dir
    from unetkit.data.io.common import strip_suffix
    from unetkit.errors import UnetkitError
    from unetkit.utils import read_yaml

    try:
        root = Path(str(read_yaml(run / "config.yaml", "the run's config")["data"]["path"]))  # type: ignore[index]
    except (UnetkitError, KeyError, TypeError):
        return None
    folders = [root / d for d in ("images", "inputs") if (root / d).is_dir()]
    if not folders:
        return None
    return {strip_suffix(p.name): p for d in folders for p in d.iterdir() if is_image_file(p) or is_zarr_dir(p)}


def _same_file(a: Path, b: Path | None) -> bool:
    """Whether ``a`` is ``b`` or a byte copy of it (size and the first MiB compared)."""
    if b is None:
        return False
    try:
        if a.resolve() == b.resolve():
            return True
        if a.is_dir() or b.is_dir() or a.stat().st_size != b.stat().st_size:
            return False
        with a.open("rb") as fa, b.open("rb") as fb:
            return fa.read(1 << 20) == fb.read(1 << 20)
    except OSError:
        return False


def background_warnings(results: list[PredictionResult]) -> list[str]:
    """A line for every image predicted all background, saying why when the image has NaN/Inf pixels."""
    import numpy as np

    from unetkit.data.io import open_image

    lines = []
    for r in results:
        if not r.class_counts or sum(r.class_counts[1:]) > 0:
            continue
        why = "check the image and the model (unetkit check, unetkit info)"
        with open_image(r.input) as img:
            region = tuple(slice(0, min(n, 2048)) for n in img.shape)
            sample = np.asarray(img[region])
        if sample.dtype.kind in "fc" and not np.isfinite(sample).all():
            why = "the image holds NaN/Inf pixels; replace them (e.g. with 0) and re-save it"
        lines.append(f"{r.input}: every pixel was predicted background; {why}")
    return lines


def _class_names(model: Path) -> list[str]:
    """The model file's class names (none for an exported .onnx file or a package)."""
    try:
        from unetkit.modelfile import read_description

        return list(read_description(model).class_names)
    except Exception:  # names only label the table; the prediction already read the model
        return []


def _fractions(counts: list[int], names: list[str]) -> str:
    total = sum(counts)
    if not total:
        return "-"
    parts = [f"{names[k] if k < len(names) else k} {100 * c / total:.3g}%" for k, c in enumerate(counts) if c or k == 0]
    return ", ".join(parts)


TABLE_ROWS = 30
"""Images listed in the summary table; a longer run lists the first ones and says how many more."""


def summary_table(results: list[PredictionResult], class_names: list[str], out: Path) -> Table:
    """One row per image: size, tiles, seconds, Mpx/s, the classes' pixel fractions and the files written
    (names in ``out``); at most :data:`TABLE_ROWS` rows."""
    more = len(results) - TABLE_ROWS
    caption = f"and {more} more images, all in {out}" if more > 0 else None
    table = Table(title=f"predictions in {out}", caption=caption, header_style="bold")
    restored = any(r.value_range is not None for r in results)  # a restoration: its values, not classes
    for col, just in (("image", "left"), ("size", "right"), ("tiles", "right"), ("time", "right"),
                      ("Mpx/s", "right"), ("values" if restored else "classes (pixels)", "left"),
                      ("written", "left")):  # fmt: skip
        table.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    for r in results[:TABLE_ROWS]:
        written = [*r.outputs.all(), *(p for p in r.postprocessed if p not in r.outputs.all())]
        span = f"{r.value_range[0]:.4g} to {r.value_range[1]:.4g}" if r.value_range is not None else "-"
        table.add_row(
            r.input.name, "x".join(str(n) for n in r.shape[1:]), str(r.tiles), f"{r.seconds:.1f} s",
            f"{r.megapixels / max(r.seconds, 1e-9):.2f}", span if restored else _fractions(r.class_counts, class_names),
            "\n".join(p.name if p.parent == out else str(p) for p in written),
        )  # fmt: skip
    return table


def summary_line(results: list[PredictionResult], out: Path, seconds: float) -> str:
    """``N images, X Mpx in T s (R Mpx/s); results in OUT``."""
    mpx = sum(r.megapixels for r in results)
    n = len(results)
    return (
        f"{n} image{'s' if n != 1 else ''}, {mpx:.2f} Mpx in {seconds:.1f} s "
        f"({mpx / max(seconds, 1e-9):.2f} Mpx/s); results in {out}"
    )


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


class _Overall:
    """One bar over the images and, under it, the current image's tiles with tiles/s and Mpx/s
    (a :class:`~unetkit.infer.files.PredictProgress`). How each image was tiled goes to the debug log."""

    def __init__(self, progress: Progress, files: int, quiet: bool = False) -> None:
        self.progress, self.quiet, self.count = progress, quiet, files
        self.files: TaskID | None = None  # added when the first image starts: nothing is drawn before the checks
        self.tiles: TaskID | None = None
        self.t0 = time.perf_counter()
        self.first: float | None = None
        self.done_tiles = 0
        self.total_tiles = 0
        self.megapixels = 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def start(self, path: Path, summary: str, tiles: int, megapixels: float) -> None:
        import logging

        if self.files is None:
            self.files = self.progress.add_task("images", total=self.count, unit="images", rate="")
        if self.tiles is None and not self.quiet:  # the backend, device and tiling, once; then the debug log
            self.progress.console.print(f"{path.name}: {summary}", highlight=False)
        elif self.tiles is not None:
            logging.getLogger("unetkit.cli").debug("%s: %s", path, summary)
        self.first, self.done_tiles, self.total_tiles, self.megapixels = None, 0, tiles, megapixels
        if self.tiles is None:
            self.tiles = self.progress.add_task(path.name, total=tiles, unit="tiles", rate="")
        else:
            self.progress.reset(self.tiles, total=tiles, description=path.name, unit="tiles", rate="")

    def advance(self, tiles: int) -> None:
        if self.tiles is None:
            return
        now = time.perf_counter()
        if self.first is None:  # the first batch includes warm-up; rates count from its end
            self.first = now
        else:
            self.done_tiles += tiles
        self.progress.advance(self.tiles, tiles)
        dt = now - self.first
        if dt > 0 and self.done_tiles:
            rate = self.done_tiles / dt
            mpx = self.megapixels * rate / max(self.total_tiles, 1)
            self.progress.update(self.tiles, rate=f"{rate:.1f} tiles/s, {mpx:.2f} Mpx/s")

    def predicted(self, result: PredictionResult) -> None:
        pass

    def done(self, result: PredictionResult) -> None:
        if self.files is None:
            return
        self.progress.advance(self.files, 1)
        n = self.progress.tasks[self.files].completed
        self.progress.update(self.files, rate=f"{n / max(self.seconds(), 1e-9):.2f} images/s")


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
