"""``unetkit models`` and ``unetkit info``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from unetkit.cli._common import console


def models_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the model presets with their parameter counts.

    Example: unetkit models
    """
    from unetkit.models import model_info

    rows = model_info()
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="unetkit models")
    for col in ("name", "dims", "padding", "parameters", "description"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for r in rows:
        table.add_row(r["name"], f"{r['spatial_dims']}D", r["padding"], f"{r['parameters']:,}", r["description"])
    console.print(table)


def info_cmd(
    model: Path = typer.Argument(..., help="A .safetensors model file."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON description."),
) -> None:
    """Print a model file's description: architecture, task, classes (or a restoration's output channels and
    target scaling), normalisation, tile size, provenance.

    Example: unetkit info runs/demo/model.safetensors
    """
    from unetkit.modelfile import read_description

    desc = read_description(model)
    if as_json:
        console.print_json(desc.model_dump_json(by_alias=True))
        return
    table = Table(title=str(model), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    arch = desc.architecture
    table.add_row("network", f"{arch.cls} (preset {arch.preset})" if arch.preset else arch.cls)
    table.add_row("arguments", ", ".join(f"{k}={v}" for k, v in arch.args.items()))
    table.add_row("task", desc.task)
    if desc.task == "restore":
        table.add_row("dims / channels", f"{desc.spatial_dims}D, {desc.in_channels} in, {desc.num_classes} out")
    else:
        table.add_row("dims / channels", f"{desc.spatial_dims}D, {desc.in_channels} in, {desc.num_classes} classes")
        classes = ", ".join(
            f"[rgb({r},{g},{b})]■[/] {n}" for n, (r, g, b) in zip(desc.class_names, desc.class_colours, strict=True)
        )
        table.add_row("classes", classes)
    table.add_row("normalisation", f"{desc.normalization.kind} {desc.normalization.params or ''}".strip())
    if desc.task == "restore":  # how outputs come back to the targets' intensity range
        scaling = dict(desc.target_normalization or {})
        table.add_row(
            "target scaling",
            f"{scaling.get('kind', 'none')} {scaling.get('params') or ''}, inverted at prediction; "
            f"targets were {scaling.get('dtype', 'float32')}",
        )
    table.add_row("tile size", str(desc.tile_size) if desc.tile_size else "-")
    if desc.spacing:
        table.add_row("spacing", str(desc.spacing))
    for k, v in desc.provenance.items():
        table.add_row(f"provenance.{k}", str(v))
    table.add_row("unetkit / format", f"{desc.unetkit_version} / {desc.format} v{desc.format_version}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models_cmd)
    app.command("info")(info_cmd)
