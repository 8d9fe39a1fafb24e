"""``unetkit predict`` and ``unetkit export``: segment images of any size; export a model to ONNX."""

from __future__ import annotations

import math
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from unetkit.cli._common import console, err_console, setup_logging
from unetkit.errors import UnetkitError


def predict_cmd(
    model: Path = typer.Argument(..., help="Model file (.safetensors) or an exported .onnx file."),
    inputs: list[str] = typer.Argument(..., help="Image files, folders or glob patterns."),
    out: Path = typer.Option(..., "--out", help="Folder for the results (writing over an input is refused)."),
    tile: int = typer.Option(None, "--tile", help="Network input window; default: the model file's, else 256/96."),
    overlap: float = typer.Option(0.25, "--overlap", help="Tile overlap fraction (same-padded nets)."),
    blend: str = typer.Option("gaussian", "--blend", help="gaussian, hann, linear, constant or center."),
    tta: bool = typer.Option(False, "--tta", help="Average all flips (4x in 2D, 8x in 3D the cost)."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write <stem>_prob.tif (K, *S)."),
    prob_dtype: str = typer.Option("float16", "--prob-dtype", help="float16 or uint8 (probability x 255)."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write <stem>_overlay.png with a legend (2D)."),
    backend: str = typer.Option(
        "auto", "--backend", help="auto (onnxruntime on CPU, torch on CUDA), torch or onnxruntime."
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
        None, "--instances", help="Also write <stem>_instances.tif: components, distance or probability."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings only, no progress bar."),
) -> None:
    """Segment images of any size tile by tile, streaming the results to --out.

    Labels go to OUT/<stem> in the input's format, probabilities to OUT/<stem>_prob.tif, the overlay to
    OUT/<stem>_overlay.png.

    Example: unetkit predict runs/demo/model.safetensors scans/*.tif --out preds --overlay
    """
    from unetkit.data.io import open_image
    from unetkit.infer import expand_inputs, load_predictor, predict_file
    from unetkit.infer.files import plan_outputs
    from unetkit.postprocess.files import postprocess_file
    from unetkit.postprocess.instances import INSTANCE_METHODS
    from unetkit.postprocess.pipeline import parse_postprocess

    if instances is not None and instances not in INSTANCE_METHODS:
        raise UnetkitError(f"--instances {instances!r}: choose one of {', '.join(INSTANCE_METHODS)}")
    parse_postprocess(postprocess)  # a bad pipeline fails before any work

    setup_logging(verbose, quiet)
    files = expand_inputs(inputs)
    opts = dict(
        tile=tile, overlap=overlap, blend=blend, tta=tta, backend=backend, device=device, batch_size=batch_size,
        channels_last=channels_last, compile=compile,
    )  # fmt: skip
    if dask is not None:
        from unetkit.infer.dask_predict import predict_files_dask

        if overlay or postprocess or instances:
            err_console.print(
                "[yellow]--dask writes labels and probabilities only; --overlay, --postprocess and --instances "
                "are ignored[/]"
            )

        results = predict_files_dask(
            str(model), files, out, address=None if dask == "local" else dask, probabilities=probabilities,
            prob_dtype=prob_dtype, **opts,
        )  # fmt: skip
        for src, written in results:
            console.print(f"{src} -> {', '.join(map(str, written))}")
        return
    predictor = load_predictor(str(model), **opts)
    plans = plan_outputs(files, out, probabilities=probabilities, overlay=overlay)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} tiles"),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=quiet,
    ) as progress:  # fmt: skip
        for src, plan in zip(files, plans, strict=True):
            with open_image(src, spatial_dims=predictor.spatial_dims) as img:
                spatial = tuple(int(s) for s in img.shape[1:])
                spacing = img.spacing
            if not quiet:
                progress.log(f"{src}: {predictor.describe(spatial)}")
            meter = _Meter(progress, src.name, predictor.tiles_for(spatial), math.prod(spatial) / 1e6)
            res = predict_file(
                predictor, src, outputs=plan, probabilities=probabilities, prob_dtype=prob_dtype, overlay=overlay,
                on_tiles=meter,
            )  # fmt: skip
            progress.update(meter.task, rate=f"{res.megapixels / max(res.seconds, 1e-9):.2f} MP/s")
            for p in res.outputs.all():
                console.print(f"  wrote {p}")
            if postprocess or instances:
                for p in postprocess_file(
                    res.outputs.labels, postprocess or "", num_classes=predictor.num_classes, image_path=src,
                    probabilities_path=res.outputs.probabilities, instances=instances,  # type: ignore[arg-type]
                    spacing=spacing,
                ):  # fmt: skip
                    console.print(f"  wrote {p} (post-processed)" if p == res.outputs.labels else f"  wrote {p}")


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
    format: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    out: Path = typer.Option(None, "--out", help="Output file; default: MODEL with the .onnx suffix."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version."),
) -> None:
    """Export a model file to ONNX (dynamic batch and spatial axes; the model description as metadata).

    Example: unetkit export runs/demo/model.safetensors --format onnx --out model.onnx
    """
    from unetkit.errors import ConfigError
    from unetkit.infer.export import export_onnx
    from unetkit.modelfile import load_model

    if format != "onnx":
        raise ConfigError(f"--format {format!r}: only 'onnx' is supported")
    target = out or model.with_suffix(".onnx")
    if target.resolve() == model.resolve():
        raise ConfigError(f"--out {target} is the model file itself; choose another path")
    path = export_onnx(load_model(model), target, opset=opset)
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)
    app.command("export")(export_cmd)
