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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import isbi_scores, machine, monai_predictor, monai_train, write_result

from unetkit.config import load_config
from unetkit.data.io import read_image
from unetkit.infer import Predictor
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
    return isbi_scores([p.argmax(0) for p in probas], [truth for _, truth in test])


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
    patch = (256, 256)
    net, steps, train_s = monai_train(train_pairs, 2, patch, 4, budget)
    predict = monai_predictor(net, patch)
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
