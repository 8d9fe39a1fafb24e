"""The CAREamics side of ``benchmarks/restore.py``: train CARE or Noise2Void for a wall-clock budget, predict.

CAREamics needs torchvision, which does not import beside the CPU torch unetkit is tested with, so this
script runs in its own environment (``make .venv-careamics/.installed``: torch 2.9.1, torchvision 0.24.1,
careamics 0.3.5) and imports nothing of unetkit. ``restore.py`` calls it as a subprocess:

    .venv-careamics/bin/python benchmarks/_careamics_side.py DATA.npz OUT.npz --mode care --minutes 10

``DATA.npz`` holds ``train_noisy``, ``train_clean`` (N, H, W) and ``test_noisy`` (M, H, W), float32.
``OUT.npz`` gets ``pred`` (M, H, W) float32 and ``info`` (a JSON string: versions, the configuration used,
epochs and steps trained, seconds).

The configuration is what a CAREamics user writes from its documentation: ``create_care_config`` /
``create_n2v_config`` with patch 64x64, batch 16, the factory's defaults for everything else (its UNet,
Adam, ReduceLROnPlateau, flips and 90-degree rotations, mean/std normalisation, 8 validation patches from
the training data; fewer when the data has under 32 patches, as in ``--quick``), trained until Lightning's
``max_time`` (the budget) with an epoch cap high enough never to bind; prediction on 256x256 tiles with
CAREamics' default overlap (48 px), from the checkpoint CAREamics picks by default (best for CARE, last for
N2V).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

PATCH, BATCH, TILE = 64, 16, 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--mode", choices=("care", "n2v"), required=True)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import careamics
    import torch
    from careamics import CAREamist
    from careamics.config import create_care_config, create_n2v_config

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    data = np.load(args.data)
    train_noisy, train_clean, test_noisy = (
        np.asarray(data[k], np.float32) for k in ("train_noisy", "train_clean", "test_noisy")
    )
    common = {"data_type": "array", "axes": "SYX", "patch_size": [PATCH, PATCH], "batch_size": BATCH}
    common["num_epochs"] = 100_000  # never binds: max_time ends the run
    patches = train_noisy.shape[0] * (train_noisy.shape[1] // PATCH) * (train_noisy.shape[2] // PATCH)
    common["n_val_patches"] = min(8, max(1, patches // 4))  # the default 8, fewer for a smoke run's tiny set
    if args.mode == "care":
        config = create_care_config(experiment_name="care_budget", **common)
    else:
        config = create_n2v_config(experiment_name="n2v_budget", **common)
    config.training_config.trainer_params["max_time"] = {"seconds": round(args.minutes * 60)}
    config.training_config.trainer_params["accelerator"] = "cpu"
    config.data_config.seed = args.seed + 1  # CAREamics wants a seed > 0
    with tempfile.TemporaryDirectory() as work:
        model = CAREamist(config, work_dir=work, enable_progress_bar=False)
        t0 = time.perf_counter()
        if args.mode == "care":
            model.train(train_data=train_noisy, train_data_target=train_clean)
        else:
            model.train(train_data=train_noisy)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        preds = [
            np.asarray(model.predict(x[None], axes="SYX", tile_size=(TILE, TILE), batch_size=1)[0], np.float32)
            for x in test_noisy
        ]
        preds = [p.reshape(x.shape) for p, x in zip(preds, test_noisy, strict=True)]
        predict_s = time.perf_counter() - t0
        trainer = model.trainer
        info = {
            "careamics": careamics.__version__, "torch": torch.__version__, "mode": args.mode,
            "patch": PATCH, "batch": BATCH, "tile": TILE, "epochs": int(trainer.current_epoch),
            "steps": int(trainer.global_step), "train_s": round(train_s, 1), "predict_s": round(predict_s, 2),
            "threads": torch.get_num_threads(),
        }  # fmt: skip
    np.savez(args.out, pred=np.stack(preds), info=json.dumps(info))


if __name__ == "__main__":
    main()
