"""``unetkit augment-preview``: see what the augmentation does to your training patches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from unetkit.cli._common import console, setup_logging


def augment_preview_cmd(
    data: Path = typer.Argument(..., help="Dataset folder (images/ and masks/ with matching names)."),
    out: Path = typer.Option(Path("augment_preview.png"), "--out", help="PNG to write."),
    n: int = typer.Option(8, "--n", min=1, max=64, help="Number of random patches (rows)."),
    seed: int = typer.Option(0, "--seed", help="Seed for patch sampling and augmentation."),
    config: Path | None = typer.Option(None, "--config", help="Augmentation YAML (see docs/augmentation.md)."),
    patch_size: int | None = typer.Option(
        None, "--patch-size", min=1, help="Patch size per axis (default: image size, at most 256 in 2D, 64 in 3D)."
    ),
    spatial_dims: int | None = typer.Option(None, "--spatial-dims", help="2 or 3 (default: from the files)."),
    normalize: str = typer.Option(
        "zscore",
        "--normalize",
        help="Normalisation applied before augmenting, as in training: zscore|percentile|range|none.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Write a PNG of random training patches: original, augmented, and augmented with the mask overlaid.

    3D volumes show their middle slice. The augmented patch uses the original's intensity window, so
    brightness, contrast and gamma changes are visible.

    Example: unetkit augment-preview data/isbi2012 --out preview.png --n 8 --seed 0 --config aug.yaml
    """
    setup_logging(verbose)
    from unetkit.augment.config import AugmentConfig
    from unetkit.augment.preview import render_preview
    from unetkit.data.normalize import Normalizer

    cfg = AugmentConfig.from_yaml(config) if config is not None else AugmentConfig()  # fail before any work
    if (data / "targets").is_dir() and not (data / "masks").is_dir():
        from unetkit.errors import DataError

        raise DataError(
            "a restoration dataset (targets/ beside the inputs): augment-preview shows the segmentation "
            "augmentation, and a restoration trains with lossless flips and transposes only, nothing to preview",
            file=data,
            fix="train it with unetkit train DATA --task restore (docs/restoration.md); give augment-preview a "
            "folder of images/ and masks/",
        )
    normalizer = Normalizer(normalize)
    from unetkit.data.datasets import load_dataset

    dataset = load_dataset(data, spatial_dims=spatial_dims)
    normalizer.fit(dataset.samples)
    samples = [dataclasses.replace(s, image=normalizer(s.image)) for s in dataset.samples]
    path = render_preview(
        samples,
        out,
        config=cfg,
        n=n,
        seed=seed,
        patch_size=patch_size,
        class_colours=dataset.class_colours,
    )
    console.print(f"wrote {path} ({n} patches from {len(dataset.samples)} images)")


def register(app: typer.Typer) -> None:
    app.command("augment-preview")(augment_preview_cmd)
