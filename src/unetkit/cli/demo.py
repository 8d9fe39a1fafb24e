"""``unetkit demo``: the main job on a built-in default that needs no download."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from unetkit.cli._common import console, setup_logging


def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder to write into."),
    seed: int = typer.Option(0, "--seed", help="Seed for the data, sampling and augmentation."),
    epochs: int = typer.Option(12, "--epochs", help="Training epochs (20 steps of 8 patches each)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    task: str = typer.Option("segment", "--task", help="segment | restore (denoise synthetic textures)."),
) -> None:
    """Generate synthetic touching cells, train a small U-Net with the paper's weight map, segment a held-out
    image 3x larger than the training images, print Dice/IoU and write overlay, curves and model to --out.
    --task restore: denoise and deblur synthetic textures instead, print the PSNR of input and output.

    Example: unetkit demo --out runs/demo
    """
    from unetkit.cli.train import RichProgress
    from unetkit.demo import run_demo

    setup_logging(quiet=quiet)
    if task == "restore":
        from unetkit.demo import run_restore_demo

        console.print("[bold]unetkit demo --task restore[/]: noisy textures -> U-Net, L1 -> tiled restoration")
        rr = run_restore_demo(out, seed=seed, epochs=epochs, callbacks=[RichProgress(quiet)])
        table = Table(title=f"held-out image {rr.image_shape[0]}x{rr.image_shape[1]} against the clean image")
        for col in ("PSNR input", "PSNR output", "SSIM input", "SSIM output", "training"):
            table.add_column(col, justify="right")
        table.add_row(f"{rr.psnr_input:.2f} dB", f"{rr.psnr_output:.2f} dB", f"{rr.ssim_input:.4f}",
                      f"{rr.ssim_output:.4f}", f"{rr.train_seconds:.0f} s")  # fmt: skip
        console.print(table)
        console.print(f"model:  {rr.model_path}\npanel:  {rr.panel_path}")
        return
    if task != "segment":
        from unetkit.errors import ConfigError

        raise ConfigError(f"--task {task!r}: use segment or restore")
    console.print("[bold]unetkit demo[/]: synthetic cells -> unet2d_small + weighted CE -> overlap-tile prediction")
    r = run_demo(out, seed=seed, epochs=epochs, callbacks=[RichProgress(quiet)])
    table = Table(title=f"held-out image {r.image_shape[0]}x{r.image_shape[1]}")
    for col in ("Dice (cells)", "IoU (cells)", "training", "prediction"):
        table.add_column(col, justify="right")
    table.add_row(f"{r.dice:.4f}", f"{r.iou:.4f}", f"{r.train_seconds:.0f} s", f"{r.predict_seconds:.2f} s")
    console.print(table)
    console.print(
        f"model:   {r.model_path}\noverlay: {r.overlay_path}\ncurves:  {r.curves_path}\n"
        f"metrics: {r.run_dir / 'metrics.csv'}"
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
