"""``unetkit demo``: the end-to-end path on a built-in default that needs no download."""

from __future__ import annotations

from pathlib import Path

import typer

from unetkit.cli._common import console


def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run folder to write into."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Run the main job on built-in synthetic data and write the results into --out.

    Example: unetkit demo --out runs/demo
    """
    import torch

    from unetkit.modelfile import load_model, save_model
    from unetkit.models import create_model

    torch.manual_seed(seed)
    model = create_model("unet2d_small").eval()
    x = torch.rand(1, 1, 256, 256)
    with torch.no_grad():
        y = model(x)
    path = save_model(out / "model.safetensors", model, tile_size=[256, 256])
    again = load_model(path)
    with torch.no_grad():
        same = torch.equal(again(x), y)
    console.print(f"model unet2d_small: {model.count_parameters():,} parameters, output {tuple(y.shape)}")
    console.print(f"wrote {path}; reloaded bit-identical: {same}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
