"""``unetkit check``: check a dataset and print its fingerprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from unetkit.cli._common import console, setup_logging
from unetkit.errors import DataError

if TYPE_CHECKING:
    from unetkit.data.check import CheckReport


def check_cmd(
    data: Path = typer.Argument(..., help="Dataset folder (images/ + masks/) or a CSV/YAML list of image,mask pairs."),
    num_classes: int = typer.Option(
        None, "--num-classes", help="Pin the number of classes: mask values beyond them are problems."
    ),
    classes: str = typer.Option(
        None, "--classes", help="Class names, class 0 first (e.g. membrane,cell); pins the number of classes."
    ),
    ignore_index: int = typer.Option(None, "--ignore-index", help="Raw mask value meaning 'not labelled'."),
    mask_kind: str = typer.Option("auto", "--mask-kind", help="auto | classes | instances."),
    spatial_dims: int = typer.Option(None, "--spatial-dims", help="Force 2D or 3D reading (default: per file)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    task: str = typer.Option("segment", "--task", help="segment (images/ + masks/) | restore (inputs/ + targets/)."),
    self_supervised: bool = typer.Option(False, "--self-supervised", help="restore: inputs only (Noise2Void)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Check a dataset before training: report every problem (file, problem, fix), then its fingerprint.

    Exits with code 2 when any problem is found.

    Example: unetkit check data/isbi2012 --num-classes 2
    """
    from unetkit.classes import parse_classes
    from unetkit.data.check import check_dataset

    setup_logging(verbose=verbose, quiet=as_json)
    if task == "restore":
        _check_restore(data, self_supervised, spatial_dims, as_json)
        return
    report = check_dataset(
        data,
        num_classes,
        ignore_index=ignore_index,
        mask_kind=mask_kind,  # type: ignore[arg-type]
        spatial_dims=spatial_dims,
        classes=parse_classes(classes, "--classes") if classes is not None else None,
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        if not report.ok:
            raise typer.Exit(2)
        return
    for p in report.problems:
        console.print(
            f"[bold red]✗[/] [bold]{p.file}[/]: {p.problem} [dim](fix: {p.fix})[/]", highlight=False, soft_wrap=True
        )
    console.print(_fingerprint_table(report))
    if not report.ok:
        n = len(report.problems)
        raise DataError(
            f"{n} problem{'s' * (n != 1)} found (listed above)", file=data, fix="correct them and run the check again"
        )
    console.print(f"[bold green]✓[/] {data}: {report.fingerprint.num_samples} pairs, no problems", soft_wrap=True)


def _fingerprint_table(report: CheckReport) -> Table:
    fp = report.fingerprint
    table = Table(title=f"fingerprint of {report.root}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("pairs", str(fp.num_samples))
    if fp.spatial_dims:
        table.add_row("images", f"{fp.spatial_dims}D, {fp.in_channels} channel(s), {fp.image_dtype}")
        table.add_row("size min / median / max", f"{fp.size_min} / {fp.size_median} / {fp.size_max}")
        table.add_row("spacing (median)", str(fp.spacing_median) if fp.spacing_median else "-")
    for key, values in fp.intensity.items():
        table.add_row(f"intensity {key}", ", ".join(f"{v:.4g}" for v in values))
    if fp.label_mapping:
        table.add_row("label mapping", fp.label_mapping)
        freq = ", ".join(f"{i}: {f:.2%}" for i, f in enumerate(fp.class_frequencies))
        table.add_row("class frequencies", freq)
    if fp.ignored_voxels:
        table.add_row("ignored voxels", str(fp.ignored_voxels))
    table.add_row("digest", fp.digest)
    return table


def _check_restore(data: Path, self_supervised: bool, spatial_dims: int | None, as_json: bool) -> None:
    from unetkit.data.restore import check_restore_dataset

    problems, loaded, _ = check_restore_dataset(
        data, self_supervised=self_supervised, spatial_dims=spatial_dims, keep=True
    )
    if as_json:
        typer.echo(json.dumps({"root": str(data), "ok": not problems, "problems": [p.to_dict() for p in problems]}))
    else:
        for p in problems:
            console.print(
                f"[bold red]✗[/] [bold]{p.file}[/]: {p.problem} [dim](fix: {p.fix})[/]", highlight=False, soft_wrap=True
            )
    if problems:
        if as_json:
            raise typer.Exit(2)
        n = len(problems)
        raise DataError(f"{data}: {n} problem{'s' * (n != 1)} found (listed above); fix them and run the check again")
    if not as_json:
        a, b = loaded[0][1].array, loaded[0][2].array
        console.print(
            f"[bold green]✓[/] {data}: {len(loaded)} restoration pairs, {a.ndim - 1}D, {a.shape[0]} -> "
            f"{b.shape[0]} channel(s), targets {b.dtype}, no problems",
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.command("check")(check_cmd)
