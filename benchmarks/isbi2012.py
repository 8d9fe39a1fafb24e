"""ISBI 2012: the U-Net paper's benchmark, unetkit against MONAI at an equal CPU time budget, in one run.

Trains on slices 00-24 of ``../shared/data/isbi2012`` and tests on 25-29 (the challenge's test labels are not
public). unetkit follows the paper's recipe: a valid-padded U-Net, the weighted cross-entropy with the weight
map, elastic deformation among the augmentations, AdamW (``--sgd`` for the paper's SGD with momentum 0.99),
overlap-tile prediction with mirrored borders, and optional averaging over the 8 rotations/flips of the input
(``--tta``; the paper averaged 7 rotations). MONAI trains its BasicUNet (about the same parameter count) with
MONAI transforms and Dice + CE, and predicts with ``sliding_window_inference``. Both get the same wall-clock
training budget on the same machine; prediction time is reported apart.

Reported on the 5 test slices: pixel error, Rand error (foreground-restricted), warping error, IoU of the cell
interior. The paper's goal on the hidden test set: pixel error <= 0.0611, Rand error <= 0.0382.

    python benchmarks/isbi2012.py                     # 30 minutes per side
    python benchmarks/isbi2012.py --budget 10 --tta   # 10 minutes per side, rotation averaging
    python benchmarks/isbi2012.py --quick             # a smoke run (1 minute per side)

Writes ``benchmarks/results/isbi2012.json``.
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
from augment_throughput import monai_pipeline

from unetkit.config import load_config
from unetkit.data.io import read_image
from unetkit.infer import Predictor
from unetkit.metrics import ConfusionMatrix, pixel_error, rand_error, warping_error
from unetkit.modelfile import load_model
from unetkit.train import train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
TRAIN, TEST = range(0, 25), range(25, 30)


def load_split(data: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    def pair(i: int) -> tuple[np.ndarray, np.ndarray]:
        img = read_image(data / "images" / f"{i:02d}.png").array[0]
        mask = (read_image(data / "masks" / f"{i:02d}.png").array[0] > 127).astype(np.int64)
        return img, mask

    return [pair(i) for i in TRAIN], [pair(i) for i in TEST]


def dihedral_proba(predict: Any, image: np.ndarray, tta: bool) -> np.ndarray:
    """Class probabilities ``(K, H, W)``, averaged over the 8 rotations/flips of the input when ``tta``."""
    if not tta:
        return predict(image)
    acc = None
    for k in range(4):
        for flip in (False, True):
            x = np.rot90(image[..., ::-1] if flip else image, k, axes=(1, 2))
            p = np.rot90(predict(np.ascontiguousarray(x)), -k, axes=(1, 2))
            p = p[..., ::-1] if flip else p
            acc = p if acc is None else acc + p
    assert acc is not None
    return acc / 8


def scores(probas: list[np.ndarray], test: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """The ISBI errors and the IoU of the cell interior (class 1), averaged over the test slices."""
    cm = ConfusionMatrix(2)
    pe, re, we = [], [], []
    for proba, (_, truth) in zip(probas, test, strict=True):
        pred = proba.argmax(0)
        cm.update(pred, truth)
        pe.append(pixel_error(pred, truth))
        re.append(rand_error(pred, truth))
        we.append(warping_error(pred, truth))
    return {
        "pixel_error": float(np.mean(pe)),
        "rand_error": float(np.mean(re)),
        "warping_error": float(np.mean(we)),
        "iou": float(cm.iou()[1]),
        "dice": float(cm.dice()[1]),
    }


def run_unetkit(
    data: Path, test: list[tuple[np.ndarray, np.ndarray]], budget: float, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    listing = work / "train.csv"
    listing.write_text(
        "image,mask\n"
        + "".join(f"{data / 'images' / f'{i:02d}.png'},{data / 'masks' / f'{i:02d}.png'}\n" for i in TRAIN)
    )
    cfg = load_config(
        overrides=[
            f"data.path={listing}",
            "data.val_fraction=0",
            "data.patch_size=252",
            "data.foreground_fraction=0",
            "model.name=unet_paper",
            "model.args.depth=3",
            "model.args.width=32",
            "model.args.norm=batch",
            "train.loss=weighted_ce",
            "train.batch_size=4",
            "train.iterations_per_epoch=25",
            "train.epochs=100000",
            f"train.max_minutes={budget}",
            "train.device=cpu",
            *(
                ["train.optimizer=sgd", "train.lr=0.01", "train.schedule=poly"]
                if args.sgd
                else ["train.optimizer=adamw", "train.lr=0.001", "train.schedule=constant"]
            ),
            "augment.elastic.p=0.5",
        ]
    )
    t0 = time.perf_counter()
    result = train(cfg, work / "run")
    train_s = time.perf_counter() - t0
    model = load_model(result.model_path)
    predictor = Predictor(model)
    t0 = time.perf_counter()
    probas = [dihedral_proba(predictor.predict_proba, img[None], args.tta) for img, _ in test]
    return {
        "model": f"unet_paper depth 3 width 32 batch norm, valid ({model.count_parameters():,} parameters)",
        "epochs": len(result.history),
        "patches": len(result.history) * 25 * 4,
        "train_seconds": train_s,
        "predict_seconds": time.perf_counter() - t0,
        **scores(probas, test),
    }


def run_monai(
    train_pairs: list[tuple[np.ndarray, np.ndarray]],
    test: list[tuple[np.ndarray, np.ndarray]],
    budget: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    import monai.transforms as mt
    from monai.data import DataLoader, Dataset
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import BasicUNet

    patch = 256
    items = monai_items(train_pairs)
    pre = mt.Compose(
        [
            mt.NormalizeIntensityd("image"),
            mt.RandCropByPosNegLabeld(
                ("image", "label"), label_key="label", spatial_size=(patch, patch), pos=1, neg=1, num_samples=1
            ),
        ]
    )
    augment = monai_pipeline(2, patch)

    def transform(d: dict[str, Any]) -> dict[str, Any]:
        return augment(pre(d)[0])

    loader = DataLoader(Dataset(items * 4, transform=transform), batch_size=4, shuffle=True, num_workers=0)
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, norm="batch")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    deadline, steps = time.monotonic() + budget * 60, 0
    t0 = time.perf_counter()
    while time.monotonic() < deadline:
        for batch in loader:
            net.train()
            loss = loss_fn(net(batch["image"]), batch["label"].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.monotonic() >= deadline:
                break
    train_s = time.perf_counter() - t0
    net.eval()
    norm = mt.NormalizeIntensity()

    def predict(image: np.ndarray) -> np.ndarray:
        x = norm(torch.from_numpy(image.astype(np.float32)))[None]
        with torch.inference_mode():
            y = sliding_window_inference(
                x, (patch, patch), 4, net, overlap=0.25, mode="gaussian", padding_mode="reflect"
            )
        return y.softmax(1)[0].numpy()

    t0 = time.perf_counter()
    probas = [dihedral_proba(predict, img[None], args.tta) for img, _ in test]
    return {
        "model": f"MONAI BasicUNet batch norm, same ({sum(p.numel() for p in net.parameters()):,} parameters)",
        "patches": steps * 4,
        "train_seconds": train_s,
        "predict_seconds": time.perf_counter() - t0,
        **scores(probas, test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=30.0, help="training minutes per side (default 30)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the isbi2012 folder")
    parser.add_argument("--tta", action="store_true", help="average the 8 rotations/flips at prediction")
    parser.add_argument("--sgd", action="store_true", help="the paper's SGD, momentum 0.99, instead of AdamW")
    parser.add_argument("--skip-monai", action="store_true", help="only unetkit")
    parser.add_argument("--quick", action="store_true", help="1 minute per side")
    args = parser.parse_args()
    if not (args.data / "images").is_dir():
        sys.exit(f"{args.data}: ISBI 2012 data not found (expected images/ and masks/); pass --data")
    budget = 1.0 if args.quick else args.budget
    print(f"machine: {machine()}\nbudget: {budget} min per side, tta={args.tta}")
    train_pairs, test = load_split(args.data)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as work:
        results["unetkit"] = run_unetkit(args.data, test, budget, args, Path(work))
    print("unetkit:", results["unetkit"])
    if not args.skip_monai:
        results["monai"] = run_monai(train_pairs, test, budget, args)
        print("monai:  ", results["monai"])
    path = write_result(
        "isbi2012",
        {
            "budget_minutes": budget,
            "tta": args.tta,
            "results": results,
            "goal": {"pixel_error": 0.0611, "rand_error": 0.0382},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
