"""Training throughput: unetkit's loop against MONAI's BasicUNet fed by MONAI transforms, in one run.

Both sides train the same architecture (4 poolings, widths 16-32-64-128-256 in 2D, 8-16-32-64-128 in 3D,
batch norm in 2D, instance norm in 3D) with Dice + cross-entropy and AdamW, at equal patch and batch size,
with the same augmentation ranges (flip, rotation, zoom, elastic, noise, blur, brightness, contrast, gamma;
the pipelines of ``augment_throughput.py``) and foreground-biased crops (1 in 3), on CPU, with the same number
of torch threads. unetkit's side is the real ``unetkit.train.train`` with the paper's weight map on (weighted
CE term) and validation off; MONAI's is a plain PyTorch loop over a ``DataLoader`` (the faster of 0 and 1
workers is reported). Images/s counts training patches.

    python benchmarks/train_throughput.py            # 2D 256x256 batch 8; 3D 64^3 batch 2
    python benchmarks/train_throughput.py --quick    # a smoke run

Writes ``benchmarks/results/train_throughput.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, monai_items, write_result
from augment_throughput import monai_pipeline, unetkit_config

from unetkit.config import load_config
from unetkit.data.io import write_image
from unetkit.synthetic import synthetic_cells
from unetkit.train import train

SETTINGS = {
    2: {"image": (384, 384), "n": 6, "patch": 256, "batch": 8, "width": 16, "norm": "batch", "radius": 14},
    3: {"image": (96, 96, 96), "n": 3, "patch": 64, "batch": 2, "width": 8, "norm": "instance", "radius": 8},
}


def make_data(root: Path, dims: int, s: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for i in range(s["n"]):
        c = synthetic_cells(s["image"], seed=i, cell_radius=s["radius"])
        write_image(root / "images" / f"c{i}.tif", c.image)
        write_image(root / "masks" / f"c{i}.tif", c.instances.astype(np.uint16))
        pairs.append((c.image, c.mask))
    return pairs


def run_unetkit(root: Path, dims: int, s: dict[str, Any], steps: int) -> float:
    cfg = load_config(
        overrides=[
            f"data.path={root}",
            "data.mask_kind=instances",
            f"data.patch_size={s['patch']}",
            "data.val_fraction=0",
            "data.foreground_fraction=0.33",
            "data.weight_map.enabled=true",
            f"model.name={'unet2d_small' if dims == 2 else 'unet3d_small'}",
            "model.args.depth=4",
            f"model.args.width={s['width']}",
            f"model.args.norm={s['norm']}",
            "train.loss=dice_ce",
            "train.epochs=2",
            f"train.iterations_per_epoch={steps}",
            f"train.batch_size={s['batch']}",
            "train.device=cpu",
        ]
    )
    cfg.augment = unetkit_config(dims)
    with tempfile.TemporaryDirectory() as run:
        result = train(cfg, Path(run) / "run")
    return float(result.history[-1]["images_per_s"])  # the second epoch: warm caches


def run_monai(
    pairs: list[tuple[np.ndarray, np.ndarray]], dims: int, s: dict[str, Any], steps: int, workers: int
) -> float:
    import monai.transforms as mt
    from monai.data import DataLoader, Dataset
    from monai.losses import DiceCELoss
    from monai.networks.nets import BasicUNet

    patch = [s["patch"]] * dims
    crop = mt.RandCropByPosNegLabeld(
        ("image", "label"), label_key="label", spatial_size=patch, pos=1, neg=2, num_samples=1
    )
    scale = mt.NormalizeIntensityd("image")
    augment = monai_pipeline(dims, s["patch"])

    def transform(d: dict[str, Any]) -> dict[str, Any]:
        return augment(crop(scale(d))[0])

    items = monai_items(pairs)
    n = (steps * 2 + 1) * s["batch"]
    loader = DataLoader(
        Dataset([items[i % len(items)] for i in range(n)], transform=transform),
        batch_size=s["batch"],
        num_workers=workers,
        shuffle=True,
    )
    torch.manual_seed(0)
    net = BasicUNet(
        spatial_dims=dims,
        in_channels=1,
        out_channels=2,
        features=(*tuple(s["width"] * 2**i for i in range(5)), s["width"]),
        norm=s["norm"],
        dropout=0.0,
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    net.train()
    t0, seen = 0.0, 0
    for i, batch in enumerate(loader):
        if i == steps:  # the first `steps` batches warm up, as unetkit's first epoch
            t0, seen = time.perf_counter(), 0
        if i >= 2 * steps:
            break
        logits = net(batch["image"])
        loss = loss_fn(logits, batch["label"].long())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        opt.step()
        seen += batch["image"].shape[0]
    return seen / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps, small sizes")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side (default 8, quick 2)")
    args = parser.parse_args()
    steps = args.steps or (2 if args.quick else 8)
    torch.set_num_threads(torch.get_num_threads())
    results: dict[str, Any] = {}
    print(f"machine: {machine()}")
    for dims, s in SETTINGS.items():
        s = dict(s)
        if args.quick:
            s.update(patch=s["patch"] // 2, image=tuple(n // 2 for n in s["image"]), batch=2)
        with tempfile.TemporaryDirectory() as tmp:
            pairs = make_data(Path(tmp), dims, s)
            ours = run_unetkit(Path(tmp), dims, s, steps)
            monai = {w: run_monai(pairs, dims, s, steps, w) for w in (0, 1)}
        best_w = max(monai, key=lambda w: monai[w])
        key = f"{dims}d"
        results[key] = {
            "patch": s["patch"],
            "batch": s["batch"],
            "unetkit_images_per_s": ours,
            "monai_images_per_s": monai[best_w],
            "monai_workers": best_w,
            "monai_all": monai,
            "ratio": ours / monai[best_w],
        }
        print(
            f"{key}: patch {s['patch']}, batch {s['batch']}: unetkit {ours:.2f} img/s, MONAI {monai[best_w]:.2f} "
            f"img/s ({best_w} workers) -> ratio {ours / monai[best_w]:.2f}"
        )
    path = write_result("train_throughput", {"quick": args.quick, "steps": steps, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
