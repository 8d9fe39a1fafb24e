"""The main job on a built-in default: synthetic cells -> train with the weight map -> segment a big image.

``unetkit demo`` (and ``make demo``) runs :func:`run_demo`: no download, a few minutes on two CPU cores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetkit.train.callbacks import BaseCallback

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """Scores on the held-out image and where everything was written."""

    dice: float
    iou: float
    train_seconds: float
    predict_seconds: float
    image_shape: tuple[int, ...]
    run_dir: Path
    model_path: Path
    overlay_path: Path
    curves_path: Path


def make_demo_data(root: Path, n_train: int, size: int, seed: int) -> Path:
    """Write ``n_train`` synthetic images with instance-label masks as a dataset folder under ``root``."""
    from unetkit.data.io import write_image
    from unetkit.synthetic import synthetic_cells

    for i in range(n_train):
        s = synthetic_cells((size, size), seed=seed * 1000 + i)
        write_image(root / "images" / f"cells_{i:02d}.tif", s.image)
        write_image(root / "masks" / f"cells_{i:02d}.tif", s.instances.astype(np.uint16))
    return root


def run_demo(
    out: str | Path = "runs/demo",
    *,
    seed: int = 0,
    epochs: int = 12,
    iterations_per_epoch: int = 20,
    n_train: int = 8,
    size: int = 256,
    test_size: int = 768,
    callbacks: Sequence[BaseCallback] = (),
) -> DemoResult:
    """Generate data, train ``unet2d_small`` with the paper's weighted loss, segment a held-out image.

    Args:
        out: the run folder (replaced if it holds an earlier demo).
        seed: seeds the data, the sampling and the augmentation.
        epochs, iterations_per_epoch: training length (the defaults take 1-3 minutes on 2 CPU cores).
        n_train: number of 256x256 training images (one in five is held out for validation).
        size: training image size.
        test_size: size of the held-out test image, segmented by overlap-tile prediction.
        callbacks: progress hooks.

    Returns:
        A :class:`DemoResult`.
    """
    import shutil

    from unetkit.config import load_config
    from unetkit.infer import Predictor
    from unetkit.metrics import ConfusionMatrix
    from unetkit.modelfile import load_model
    from unetkit.synthetic import synthetic_cells
    from unetkit.train import train

    out = Path(out)
    if (out / "checkpoints").exists():
        shutil.rmtree(out)  # a demo run is disposable; a real run is never overwritten (see `unetkit train`)
    data_dir = make_demo_data(out / "data", n_train, size, seed)
    cfg = load_config(
        overrides=[
            f"data.path={data_dir}",
            "data.mask_kind=instances",
            "data.patch_size=128",
            "data.val_fraction=0.25",
            "data.foreground_fraction=0.5",
            "model.name=unet2d_small",
            "train.loss=weighted_ce",
            f"train.epochs={epochs}",
            f"train.iterations_per_epoch={iterations_per_epoch}",
            "train.batch_size=8",
            "train.lr=0.003",
            "train.schedule=poly",
            "train.device=cpu",
            f"train.seed={seed}",
        ]
    )
    t0 = time.perf_counter()
    result = train(cfg, out, callbacks=callbacks)
    train_seconds = time.perf_counter() - t0

    # The held-out image goes through the same path as `unetkit predict`: model file -> tiler -> files.
    from unetkit.data.io import read_image, write_image
    from unetkit.infer.files import predict_file

    test = synthetic_cells((test_size, test_size), seed=seed * 1000 + 999)
    test_dir = out / "test"
    write_image(test_dir / "cells_test.tif", test.image)
    write_image(test_dir / "cells_test_truth.png", (test.mask * 255).astype(np.uint8))
    model = load_model(result.model_path)
    t0 = time.perf_counter()
    pred = predict_file(Predictor(model), test_dir / "cells_test.tif", test_dir / "prediction", overlay=True)
    predict_seconds = time.perf_counter() - t0
    labels = read_image(pred.outputs.labels).array[0]
    cm = ConfusionMatrix(model.num_classes)
    cm.update(labels, test.mask)
    overlay = pred.outputs.overlay
    return DemoResult(
        dice=float(cm.dice()[1]),
        iou=float(cm.iou()[1]),
        train_seconds=train_seconds,
        predict_seconds=predict_seconds,
        image_shape=test.image.shape,
        run_dir=out,
        model_path=result.model_path,
        overlay_path=Path(str(overlay)),
        curves_path=out / "curves.png",
    )


@dataclass
class RestoreDemoResult:
    """PSNR/SSIM of the noisy input and of the restored output against the clean held-out image."""

    psnr_input: float
    psnr_output: float
    ssim_input: float
    ssim_output: float
    train_seconds: float
    image_shape: tuple[int, ...]
    run_dir: Path
    model_path: Path
    panel_path: Path


def run_restore_demo(
    out: str | Path,
    *,
    seed: int = 0,
    epochs: int = 12,
    size: int = 96,
    n_train: int = 8,
    steps: int = 20,
    callbacks: Sequence[BaseCallback] = (),
) -> RestoreDemoResult:
    """Seeded synthetic textures degraded by Poisson-Gaussian noise and a slight blur, a short supervised
    training (L1), then a held-out image twice the training size restored through the tiler."""
    from unetkit.config import load_config
    from unetkit.data.io import read_image, write_image
    from unetkit.infer import load_predictor
    from unetkit.metrics import psnr, ssim
    from unetkit.synthetic import degrade, synthetic_texture, write_restore_dataset
    from unetkit.train import train
    from unetkit.viz.restore import restore_panel

    out = Path(out)
    data = out / "data"
    write_restore_dataset(str(data), n=n_train, shape=(size, size), seed=seed, blur=0.7)
    cfg = load_config(
        overrides=[
            "task=restore", f"data.path={data}", f"train.epochs={epochs}", f"train.iterations_per_epoch={steps}",
            "train.batch_size=8", "data.patch_size=64", "model.args.depth=3", "model.args.width=16",
            f"train.seed={seed}", "data.val_fraction=0.25",
        ]
    )  # fmt: skip
    t0 = time.perf_counter()
    result = train(cfg, out / "run", callbacks=callbacks)
    train_seconds = time.perf_counter() - t0
    clean = synthetic_texture((2 * size, 2 * size), seed=10_000 + seed)
    noisy = degrade(clean, np.random.default_rng(seed + 99), blur=0.7)
    test = out / "test"
    write_image(test / "noisy.tif", noisy, spatial_dims=2)
    write_image(test / "clean.tif", clean, spatial_dims=2)
    predictor = load_predictor(str(result.model_path), device="cpu")
    from unetkit.infer.files import restore_file

    res = restore_file(predictor, test / "noisy.tif", out / "pred")
    restored = read_image(res.outputs.labels).array[0]
    panel = out / "restore_panel.png"
    s_in, s_out = ssim(noisy, clean, 1.0), ssim(restored, clean, 1.0)
    p_in, p_out = psnr(noisy, clean, 1.0), psnr(restored, clean, 1.0)
    restore_panel(panel, noisy[None], restored[None], clean[None], scores={"PSNR": p_out, "SSIM": s_out})
    log.info("restore demo: PSNR %.2f -> %.2f dB", p_in, p_out)
    return RestoreDemoResult(
        p_in, p_out, s_in, s_out, train_seconds, clean.shape, out / "run", result.model_path, panel
    )
