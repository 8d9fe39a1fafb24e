"""Accuracy at equal budget: unetkit against nnU-Net v2 and MONAI on three sets, in one run on one machine.

The sets (from ``../shared/data``):

- **a** ISBI 2012, 2D: slices 00-24 train, 25-29 test; pixel, Rand and warping error, Dice of the cell interior.
- **b** the same 30 slices as one anisotropic 3D stack (spacing 50 x 4 x 4 nm, z first): z 00-19 train,
  z 20-29 test; Dice and Rand error of each test slice, averaged.
- **c** the DSB 2018 nuclei image cut into its four 256x256 quarters: three train, the bottom-right one tests;
  instance F1 at IoU 0.5 and the DSB average precision against the true nuclei.

The sides, each with the same wall-clock training budget per set and all cores for torch:

- **unetkit**: ``unetkit train DATA --budget Nm`` and nothing else (it plans itself), then ``unetkit predict``
  (``--instances`` for set c: ``boundary`` when the model was trained on interior/boundary classes).
- **nnU-Net v2**: the set in nnU-Net's raw format, its own fingerprint, plan and preprocessing, configuration
  ``2d`` (a, c) or ``3d_fullres`` (b), ``fold all``, on the CPU, with ``nnUNetTrainerBudget``: nnU-Net's trainer
  that stops at the wall-clock deadline and runs its poly learning-rate decay over the budget instead of 1000
  epochs; prediction with its own predictor (mirroring on, its default). Instances: connected components.
- **MONAI**: BasicUNet, MONAI transforms, Dice + CE, ``sliding_window_inference`` (as ``isbi2012.py``);
  instances: connected components.

    python benchmarks/accuracy.py                          # 30 minutes per side per set (4.5 hours)
    python benchmarks/accuracy.py --budget 10 --sets a,c   # 10 minutes, two sets
    python benchmarks/accuracy.py --quick --sets a         # a smoke run (1 minute per side)

Prints one table per set and writes ``benchmarks/results/accuracy.json``. It reports; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import isbi_scores, machine, monai_predictor, monai_train, write_result
from isbi2012 import load_split

from unetkit.data.io import read_image, read_mask, write_image

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIDES = ("unetkit", "nnunet", "monai")
STACK_SPACING = (50.0, 4.0, 4.0)  # nm, (Z, Y, X)
STACK_TRAIN, STACK_TEST = slice(0, 20), slice(20, 30)
DSB_TEST_QUARTER = 3  # the bottom-right quarter tests; the other three train
NNUNET_IDS = {"a": 501, "b": 502, "c": 503}
MONAI_PATCH = {2: (256, 256), 3: (16, 128, 128)}
MONAI_BATCH = {2: 4, 3: 2}
ISBI_GOAL = {"pixel_error": 0.0611, "rand_error": 0.0382}  # Ronneberger et al. 2015, hidden test set


# --------------------------------------------------------------------------------------------------- the sets


@dataclass
class BenchSet:
    """One benchmark set: training and test cases as arrays, plus how they are stored and scored.

    ``train``/``test`` hold ``(image, mask)`` pairs of ``(*S)`` arrays: binary masks (1 = object) for the
    semantic sets, instance labels (0 = background) when ``instances``.
    """

    key: str
    title: str
    name: str  # a file-safe name (the nnU-Net dataset name)
    spatial_dims: int
    train: list[tuple[np.ndarray, np.ndarray]]
    test: list[tuple[np.ndarray, np.ndarray]]
    train_names: list[str]
    test_names: list[str]
    spacing: tuple[float, ...] | None = None
    instances: bool = False
    suffix: str = ".png"  # the file format of unetkit's dataset folder
    channel: str = "EM"


def isbi_2d(data: Path) -> BenchSet:
    """Set a: the 30 ISBI 2012 slices, 00-24 train, 25-29 test (as ``isbi2012.py``)."""
    train, test = load_split(data / "isbi2012")
    cast = [(img, mask.astype(np.uint8)) for img, mask in train], [(i, m.astype(np.uint8)) for i, m in test]
    return BenchSet(
        key="a", title="ISBI 2012, 2D (train 00-24, test 25-29)", name="ISBI2D", spatial_dims=2,
        train=cast[0], test=cast[1],
        train_names=[f"isbi_{i:02d}" for i in range(len(train))],
        test_names=[f"isbi_{i:02d}" for i in range(len(train), len(train) + len(test))],
    )  # fmt: skip


def isbi_stack(data: Path) -> BenchSet:
    """Set b: the 30 slices as one ``(30, 512, 512)`` stack, spacing 50 x 4 x 4 nm; z 00-19 train, 20-29 test."""
    train, test = load_split(data / "isbi2012")
    pairs = train + test
    volume = np.stack([img for img, _ in pairs])
    mask = np.stack([m for _, m in pairs]).astype(np.uint8)
    return BenchSet(
        key="b", title="ISBI 2012 as a 3D stack, 50 x 4 x 4 nm (train z 00-19, test z 20-29)", name="ISBIStack",
        spatial_dims=3, train=[(volume[STACK_TRAIN], mask[STACK_TRAIN])],
        test=[(volume[STACK_TEST], mask[STACK_TEST])], train_names=["stack_z00-19"], test_names=["stack_z20-29"],
        spacing=STACK_SPACING, suffix=".nii.gz",
    )  # fmt: skip


def quarters(image: np.ndarray) -> list[np.ndarray]:
    """The four quarters of an ``(H, W)`` image, row by row: top-left, top-right, bottom-left, bottom-right.

    >>> [q.tolist() for q in quarters(np.arange(16).reshape(4, 4))][1]
    [[2, 3], [6, 7]]
    """
    h, w = image.shape[0] // 2, image.shape[1] // 2
    return [image[:h, :w], image[:h, w:], image[h:, :w], image[h:, w:]]


def relabel(instances: np.ndarray) -> np.ndarray:
    """Instance ids made consecutive (1..n in order of first appearance of the sorted ids), same dtype.

    >>> relabel(np.array([[0, 7, 7, 3]])).tolist()
    [[0, 2, 2, 1]]
    """
    ids, inverse = np.unique(instances, return_inverse=True)
    new = np.arange(ids.size) if ids.size and ids[0] == 0 else np.arange(1, ids.size + 1)
    return new[inverse].reshape(instances.shape).astype(instances.dtype)


def dsb_quarters(data: Path) -> BenchSet:
    """Set c: the DSB 2018 nuclei image and its instance labels cut into four 256x256 quarters; the nuclei on
    the cuts become partial nuclei of each quarter (ids made consecutive per quarter)."""
    folder = data / "dsb2018_nuclei"
    image = read_image(folder / "images" / "img2d.tif").array[0]
    labels = read_image(folder / "masks" / "img2d.tif").array[0]
    pairs = [(i, relabel(m)) for i, m in zip(quarters(image), quarters(labels), strict=True)]
    names = [f"dsb_q{k}" for k in range(4)]
    train_idx = [k for k in range(4) if k != DSB_TEST_QUARTER]
    return BenchSet(
        key="c", title=f"DSB 2018 nuclei quarters (train 3, test quarter {DSB_TEST_QUARTER})", name="DSBNuclei",
        spatial_dims=2, train=[pairs[k] for k in train_idx], test=[pairs[DSB_TEST_QUARTER]],
        train_names=[names[k] for k in train_idx], test_names=[names[DSB_TEST_QUARTER]], instances=True,
        suffix=".tif", channel="fluorescence",
    )  # fmt: skip


LOADERS: dict[str, Callable[[Path], BenchSet]] = {"a": isbi_2d, "b": isbi_stack, "c": dsb_quarters}


def write_unetkit_dataset(bset: BenchSet, folder: Path) -> tuple[Path, Path]:
    """unetkit's dataset folder (``images/`` + ``masks/``, the spacing in the files) and a ``test/`` folder.

    Returns:
        ``(dataset folder, test images folder)``.
    """
    data, test = folder / "data", folder / "test"
    for sub in (data / "images", data / "masks", test):
        sub.mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = {"spacing": bset.spacing, "spatial_dims": bset.spatial_dims}
    for name, (img, mask) in zip(bset.train_names, bset.train, strict=True):
        write_image(data / "images" / f"{name}{bset.suffix}", img, **kw)
        write_image(data / "masks" / f"{name}{bset.suffix}", mask, **kw)
    for name, (img, _) in zip(bset.test_names, bset.test, strict=True):
        write_image(test / f"{name}{bset.suffix}", img, **kw)
    return data, test


def _write_nnunet_file(path: Path, array: np.ndarray, bset: BenchSet) -> None:
    if bset.spatial_dims == 2:  # nnU-Net's NaturalImage2DIO reads a plain grey PNG (8 or 16 bit)
        from PIL import Image

        Image.fromarray(np.ascontiguousarray(array)).save(path)
    else:  # NIfTI, read by its SimpleITKIO: spacing (X, Y, Z) in the header = ours (Z, Y, X)
        write_image(path, array, spacing=bset.spacing, spatial_dims=3)


def write_nnunet_raw(bset: BenchSet, raw: Path) -> Path:
    """The set in nnU-Net v2's raw format: ``DatasetXXX_Name/{imagesTr,labelsTr,imagesTs}`` + ``dataset.json``.

    Images are ``CASE_0000.png`` (2D, read by ``NaturalImage2DIO``) or ``CASE_0000.nii.gz`` with the spacing
    (3D, ``SimpleITKIO``); labels are the binary foreground (instance sets too: nnU-Net trains a plain
    semantic U-Net, and its instances are the connected components).

    Returns:
        The dataset folder.
    """
    folder = raw / f"Dataset{NNUNET_IDS[bset.key]:03d}_{bset.name}"
    ext = ".png" if bset.spatial_dims == 2 else ".nii.gz"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name, (img, mask) in zip(bset.train_names, bset.train, strict=True):
        _write_nnunet_file(folder / "imagesTr" / f"{name}_0000{ext}", img, bset)
        _write_nnunet_file(folder / "labelsTr" / f"{name}{ext}", (mask > 0).astype(np.uint8), bset)
    for name, (img, _) in zip(bset.test_names, bset.test, strict=True):
        _write_nnunet_file(folder / "imagesTs" / f"{name}_0000{ext}", img, bset)
    dataset = {
        "name": bset.name,
        "channel_names": {"0": bset.channel},
        "labels": {"background": 0, "nucleus" if bset.instances else "cell": 1},
        "numTraining": len(bset.train),
        "file_ending": ext,
        "overwrite_image_reader_writer": "NaturalImage2DIO" if bset.spatial_dims == 2 else "SimpleITKIO",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


# ------------------------------------------------------------------------------------------------- scoring


def score(bset: BenchSet, preds: list[np.ndarray], foreground: list[np.ndarray] | None = None) -> dict[str, float]:
    """The set's metrics of one side's test predictions (class labels, or instance labels for set c); on set a
    with the sides' foreground probabilities also the challenge's protocol (``*_challenge``: each error at its
    best threshold for the test set, as the U-Net paper's figures were scored)."""
    from unetkit.metrics import (
        ConfusionMatrix,
        challenge_scores,
        errors_by_threshold,
        instance_scores,
        pixel_error,
        rand_error,
    )

    truths = [mask for _, mask in bset.test]
    if bset.key == "a":
        out = isbi_scores([np.asarray(p, np.int64) for p in preds], [t.astype(np.int64) for t in truths])
        if foreground is not None:
            ch = challenge_scores([errors_by_threshold(f, t > 0) for f, t in zip(foreground, truths, strict=True)])
            out |= {"pixel_error_challenge": ch.pixel_error, "pixel_threshold": ch.pixel_threshold,
                    "rand_error_challenge": ch.rand_error, "rand_threshold": ch.rand_threshold}  # fmt: skip
        return out
    if bset.key == "b":
        dice, rand, pixel = [], [], []
        for pred, truth in zip(preds, truths, strict=True):
            for p, t in zip(np.asarray(pred, np.int64), truth.astype(np.int64), strict=True):  # slice by slice
                dice.append(float(ConfusionMatrix(2).update(p, t).dice()[1]))
                rand.append(rand_error(p, t))
                pixel.append(pixel_error(p, t))
        return {"dice": float(np.mean(dice)), "rand_error": float(np.mean(rand)), "pixel_error": float(np.mean(pixel))}
    out: dict[str, float] = {}
    cm = ConfusionMatrix(2)
    rows = []
    for pred, truth in zip(preds, truths, strict=True):
        rows.append(instance_scores(np.asarray(pred, np.int64), truth.astype(np.int64)))
        cm.update((np.asarray(pred) > 0).astype(np.int64), (truth > 0).astype(np.int64))
    for k in ("f1", "ap", "precision", "recall"):
        out[k] = float(np.mean([r[k] for r in rows]))
    out["dice"] = float(cm.dice()[1])
    out["predicted_instances"] = float(np.mean([np.unique(p[p > 0]).size for p in preds]))
    out["true_instances"] = float(np.mean([np.unique(t[t > 0]).size for t in truths]))
    return out


# (metric, True when higher is better): the table's columns; the first ones decide "better".
COLUMNS: dict[str, list[tuple[str, bool]]] = {
    "a": [
        ("pixel_error", False),
        ("rand_error", False),
        ("warping_error", False),
        ("dice", True),
        ("iou", True),
        ("pixel_error_challenge", False),
        ("rand_error_challenge", False),
    ],
    "b": [("dice", True), ("rand_error", False), ("pixel_error", False)],
    "c": [("f1", True), ("ap", True), ("precision", True), ("recall", True), ("dice", True)],
}
PRIMARY = {"a": ("pixel_error", "rand_error"), "b": ("dice", "rand_error"), "c": ("f1", "ap")}


# --------------------------------------------------------------------------------------------------- sides


def _env(threads: int) -> dict[str, str]:
    """The environment for subprocesses: this checkout's unetkit first, ``threads`` threads everywhere."""
    import unetkit

    src = str(Path(unetkit.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["COLUMNS"] = "200"  # rich help text unwrapped
    env["NO_COLOR"] = "1"
    return env


def _run(what: str, cmd: list[str], log: Path, env: dict[str, str]) -> float:
    """Run ``cmd`` with its output to ``log``; returns the wall seconds; a failure raises with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False).returncode
    seconds = time.perf_counter() - t0
    if rc != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise RuntimeError(f"{what} exited {rc}; the end of {log}:\n{tail}")
    return seconds


def unetkit_has_budget(env: dict[str, str]) -> bool:
    """Whether ``unetkit train --help`` lists ``--budget`` (the planner's CLI)."""
    out = subprocess.run(
        [sys.executable, "-m", "unetkit", "train", "--help"], capture_output=True, text=True, env=env, check=False
    )
    return "--budget" in out.stdout


def run_unetkit(
    bset: BenchSet, work: Path, budget: float, env: dict[str, str]
) -> tuple[dict[str, Any], list, list | None]:
    """``unetkit train DATA --out RUN --budget Nm --quiet`` then ``unetkit predict``; returns (info, predictions,
    foreground probabilities on set a, else None)."""
    from unetkit.modelfile import read_description
    from unetkit.postprocess.files import instances_path
    from unetkit.postprocess.instances import INSTANCE_METHODS

    data, test = write_unetkit_dataset(bset, work / "unetkit")
    run, pred, log = work / "unetkit" / "run", work / "unetkit" / "pred", work / "unetkit" / "log.txt"
    cli = [sys.executable, "-m", "unetkit"]
    info: dict[str, Any] = {}
    if unetkit_has_budget(env):
        extra = ["--budget", f"{budget:g}m"]
        info["mode"] = f"planner: --budget {budget:g}m"
    else:  # before the planner lands: the fixed defaults, stopped at the budget
        extra = ["--set", f"train.max_minutes={budget:g}"]
        if bset.spatial_dims == 3:
            extra += ["--model", "unet3d_small", "--set", "data.patch_size=[16,96,96]"]
        info["mode"] = f"FALLBACK (no --budget in this unetkit): defaults, {' '.join(extra)}"
        print(f"  unetkit train has no --budget yet: {info['mode']}")
    info["train_seconds"] = _run(
        "unetkit train", [*cli, "train", str(data), "--out", str(run), *extra, "--quiet"], log, env
    )
    model = run / "model.safetensors"
    desc = read_description(model)
    info["model"] = f"{desc.architecture.cls} {desc.architecture.args}"
    info["classes"] = desc.class_names
    method = None
    if bset.instances:
        method = "boundary" if "boundary" in desc.class_names and "boundary" in INSTANCE_METHODS else "distance"
        info["instance_method"] = method
    cmd = [*cli, "predict", str(model), str(test), "--out", str(pred), "--quiet"]
    cmd += ["--instances", method] if method else []
    cmd += ["--probabilities"] if bset.key == "a" else []
    info["predict_seconds"] = _run("unetkit predict", cmd, log, env)
    preds, foreground = [], []
    for name in bset.test_names:
        labels = pred / f"{name}{bset.suffix}"
        # label PNGs are palette PNGs: read_mask gives the class indices (read_image would give the colours)
        preds.append(read_mask(instances_path(labels) if method else labels))
        if bset.key == "a":
            foreground.append(read_image(pred / f"{name}_prob.tif", spatial_dims=2).array[1].astype(np.float32))
    return info, preds, (foreground if bset.key == "a" else None)


def nnunet_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("nnunetv2") is not None


def nnunet_env(root: Path, threads: int) -> dict[str, str]:
    """nnU-Net's folders, all inside ``root`` (the run's work folder)."""
    env = _env(threads)
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(root / sub)
    env["nnUNet_compile"] = "false"  # nnU-Net turns compile off on CPU anyway
    return env


def run_nnunet(
    bset: BenchSet, work: Path, budget: float, threads: int, args: argparse.Namespace
) -> tuple[dict[str, Any], list, list | None]:
    """nnU-Net v2 with its own planning and preprocessing, trained for ``budget`` minutes in a subprocess."""
    from unetkit.postprocess.instances import label_components

    if not nnunet_available():
        raise RuntimeError("nnunetv2 is not installed: pip install -e '.[bench]'")
    root = work / "nnunet"
    folder = write_nnunet_raw(bset, root / "raw")
    out = root / "predictions"
    ext = ".png" if bset.spatial_dims == 2 else ".nii.gz"
    spec = {
        "dataset_id": NNUNET_IDS[bset.key],
        "configuration": "2d" if bset.spatial_dims == 2 else "3d_fullres",
        "budget_seconds": budget * 60,
        "threads": threads,
        "augmentation_processes": args.nnunet_workers,
        "mirroring": not args.nnunet_no_mirroring,
        "test_images": [str(folder / "imagesTs" / f"{n}_0000{ext}") for n in bset.test_names],
        "out": str(out),
    }
    spec_path = root / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    env = nnunet_env(root, threads)
    worker = [sys.executable, str(Path(__file__).resolve()), "--nnunet-worker", str(spec_path)]
    wall = _run("the nnU-Net worker", worker, root / "log.txt", env)
    info = json.loads((out / "result.json").read_text())
    info["wall_seconds"] = wall
    preds = [np.load(out / f"{i}.npy") for i in range(len(bset.test_names))]
    if bset.instances:
        preds = [label_components(p) for p in preds]
    fg_files = [out / f"{i}_foreground.npy" for i in range(len(bset.test_names))]
    foreground = [np.load(f).astype(np.float32) for f in fg_files] if bset.key == "a" else None
    return info, preds, foreground


def run_monai(bset: BenchSet, budget: float) -> tuple[dict[str, Any], list, list | None]:
    """MONAI's BasicUNet on the binary foreground (``_common.monai_train``); instances: connected components."""
    from unetkit.postprocess.instances import label_components

    patch, batch = MONAI_PATCH[bset.spatial_dims], MONAI_BATCH[bset.spatial_dims]
    pairs = [(img, (mask > 0).astype(np.int64)) for img, mask in bset.train]
    net, steps, train_s = monai_train(pairs, bset.spatial_dims, patch, batch, budget)
    predict = monai_predictor(net, patch)
    t0 = time.perf_counter()
    probs = [predict(img[None]) for img, _ in bset.test]
    preds = [p.argmax(0) for p in probs]
    if bset.instances:
        preds = [label_components(p) for p in preds]
    info = {
        "model": f"BasicUNet batch norm ({sum(p.numel() for p in net.parameters()):,} parameters)",
        "patch": list(patch),
        "patches": steps * batch,
        "train_seconds": train_s,
        "predict_seconds": time.perf_counter() - t0,
    }
    return info, preds, ([p[1] for p in probs] if bset.key == "a" else None)


# ---------------------------------------------------------------------------------- nnU-Net (subprocess side)


def budget_trainer_class() -> type:
    """``nnUNetTrainerBudget``: nnU-Net's own trainer, stopped by the clock instead of 1000 epochs.

    Everything nnU-Net plans (network, patch, batch, augmentation, loss, SGD with Nesterov momentum 0.99) stays;
    epochs are 50 iterations with 5 validation iterations (nnU-Net's 250:50 ratio), the poly learning-rate
    decay ``lr0 * (1 - t / budget) ** 0.9`` follows the elapsed fraction of the budget, updated every
    iteration, and training stops at the deadline (the last epoch is cut short there). Set ``budget_seconds``
    on the instance before ``run_training``.
    """
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class WallClockPoly:
        """nnU-Net's poly schedule over wall-clock time: ``step()`` sets the learning rate for now."""

        def __init__(self, optimizer: Any, initial_lr: float, budget_seconds: float) -> None:
            self.optimizer, self.initial_lr, self.budget_seconds = optimizer, initial_lr, budget_seconds
            self.start = time.monotonic()

        def fraction(self) -> float:
            return min((time.monotonic() - self.start) / self.budget_seconds, 1.0)

        def step(self, *_: Any) -> None:
            lr = self.initial_lr * (1 - self.fraction()) ** 0.9
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    class nnUNetTrainerBudget(nnUNetTrainer):  # nnU-Net's naming
        budget_seconds = 1800.0
        iterations = 0

        def initialize(self) -> None:
            self.num_iterations_per_epoch = 50
            self.num_val_iterations_per_epoch = 5
            super().initialize()

        def configure_optimizers(self) -> tuple[Any, Any]:
            # nnU-Net's optimizer settings; its PolyLRScheduler itself no longer constructs on torch >= 2.7
            optimizer = torch.optim.SGD(
                self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                nesterov=True,
            )  # fmt: skip
            return optimizer, WallClockPoly(optimizer, self.initial_lr, self.budget_seconds)

        def run_training(self) -> None:
            self.on_train_start()  # data loaders, network, unpacking: before the clock starts
            self.lr_scheduler.start = time.monotonic()
            deadline = self.lr_scheduler.start + self.budget_seconds
            while True:
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs = []
                for _ in range(self.num_iterations_per_epoch):
                    self.lr_scheduler.step()
                    outputs.append(self.train_step(next(self.dataloader_train)))
                    self.iterations += 1
                    if time.monotonic() >= deadline:
                        break
                self.on_train_epoch_end(outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val = [self.validation_step(next(self.dataloader_val))]
                    while len(val) < self.num_val_iterations_per_epoch and time.monotonic() < deadline:
                        val.append(self.validation_step(next(self.dataloader_val)))
                    self.on_validation_epoch_end(val)
                self.on_epoch_end()
                if time.monotonic() >= deadline:
                    break
            self.on_train_end()

    return nnUNetTrainerBudget


def nnunet_worker(spec_path: Path) -> int:
    """The nnU-Net side in its own process (nnU-Net reads its folders from the environment at import):
    fingerprint, plan, preprocess, train for the budget, predict the test images; writes ``result.json`` and
    one ``<i>.npy`` label array per test image into ``spec["out"]``."""
    import torch

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    did, config, n = spec["dataset_id"], spec["configuration"], max(1, spec["threads"])
    t0 = time.perf_counter()
    extract_fingerprints([did], num_processes=n, check_dataset_integrity=True, verbose=False)
    plan_experiments([did])
    preprocess([did], configurations=(config,), num_processes=(n,))
    prep_s = time.perf_counter() - t0

    # nnUNet_n_proc_DA only now: the planner also takes its thread count from it (and fails on 0)
    os.environ["nnUNet_n_proc_DA"] = str(spec["augmentation_processes"])
    torch.set_num_threads(spec["threads"])
    pre = Path(nnUNet_preprocessed) / convert_id_to_dataset_name(did)
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    trainer = budget_trainer_class()(
        plans=plans, configuration=config, fold="all", dataset_json=dataset_json, device=torch.device("cpu")
    )
    trainer.budget_seconds = spec["budget_seconds"]
    t0 = time.perf_counter()
    trainer.run_training()
    train_s = time.perf_counter() - t0

    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=spec["mirroring"], perform_everything_on_device=False,
        device=torch.device("cpu"), allow_tqdm=False,
    )  # fmt: skip
    predictor.manual_initialization(
        trainer.network, trainer.plans_manager, trainer.configuration_manager, [trainer.network.state_dict()],
        trainer.dataset_json, type(trainer).__name__, trainer.inference_allowed_mirroring_axes,
    )  # fmt: skip
    reader = trainer.plans_manager.image_reader_writer_class()
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, path in enumerate(spec["test_images"]):
        image, props = reader.read_images([path])
        seg, probs = predictor.predict_single_npy_array(image, {"spacing": props["spacing"]}, None, None, True)
        seg, fg = np.asarray(seg), np.asarray(probs)[1]  # probabilities (K, *S): the foreground's
        np.save(out / f"{i}.npy", seg[0] if seg.ndim == 3 and config == "2d" else seg)
        np.save(out / f"{i}_foreground.npy", (fg[0] if fg.ndim == 3 and config == "2d" else fg).astype(np.float16))
    predict_s = time.perf_counter() - t0

    cm = trainer.configuration_manager
    result = {
        "model": f"{cm.network_arch_class_name.rsplit('.', 1)[-1]} "
        f"({sum(p.numel() for p in trainer.network.parameters()):,} parameters)",
        "configuration": config,
        "patch": list(cm.patch_size),
        "batch_size": cm.batch_size,
        "spacing": list(cm.spacing),
        "epochs": trainer.current_epoch,
        "iterations": trainer.iterations,
        "patches": trainer.iterations * trainer.batch_size,
        "mirroring": spec["mirroring"],
        "preprocess_seconds": prep_s,
        "train_seconds": train_s,
        "predict_seconds": predict_s,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------------- report


def _fmt(column: str, v: Any) -> str:
    if not isinstance(v, float):
        return str(v)
    return f"{v:.1f}" if column.endswith("seconds") else f"{v:.4f}"


def print_table(bset: BenchSet, sides: dict[str, dict[str, Any]]) -> None:
    cols = [c for c, _ in COLUMNS[bset.key]] + ["train_seconds", "predict_seconds"]
    widths = [max(17, len(c) + 2) for c in cols]
    sys.stdout.write(
        f"\n{bset.title}\n{'side':<10}" + "".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True)) + "\n"
    )
    for side, r in sides.items():
        if "error" in r:
            sys.stdout.write(f"{side:<10} failed: {r['error'].splitlines()[0]}\n")
            continue
        cells = (f"{_fmt(c, r.get(c, '-')):>{w}}" for c, w in zip(cols, widths, strict=True))
        sys.stdout.write(f"{side:<10}" + "".join(cells) + "\n")
    sys.stdout.flush()


def verdict(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Whether unetkit met the paper's ISBI numbers, and on which sets it beat each peer on every primary metric."""
    out: dict[str, Any] = {}
    a = results.get("a", {}).get("unetkit", {})
    if "pixel_error" in a:
        out["isbi_paper_goal_met"] = all(a[k] <= v for k, v in ISBI_GOAL.items())
    if "rand_error_challenge" in a:  # scored as the paper's figures were
        out["isbi_paper_goal_met_challenge_protocol"] = all(a[f"{k}_challenge"] <= v for k, v in ISBI_GOAL.items())
    for key, sides in results.items():
        mine = sides.get("unetkit", {})
        higher = dict(COLUMNS[key])
        for peer in ("nnunet", "monai"):
            theirs = sides.get(peer, {})
            if "error" in mine or "error" in theirs or not mine or not theirs:
                continue
            wins = [(mine[m] > theirs[m]) if higher[m] else (mine[m] < theirs[m]) for m in PRIMARY[key]]
            out[f"{key}_better_than_{peer}"] = all(wins)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--nnunet-worker"]:
        return nnunet_worker(Path(argv[1]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=30.0, help="training minutes per side per set (default 30)")
    parser.add_argument("--sets", default="a,b,c", help="which sets: a (ISBI 2D), b (ISBI stack), c (DSB nuclei)")
    parser.add_argument("--sides", default=",".join(SIDES), help="which sides (default: unetkit,nnunet,monai)")
    parser.add_argument("--quick", action="store_true", help="1 minute per side: a smoke run")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    parser.add_argument("--work", type=Path, default=None, help="keep the datasets, runs and logs here")
    parser.add_argument("--nnunet-workers", type=int, default=0, help="nnU-Net augmentation processes (default 0)")
    parser.add_argument("--nnunet-no-mirroring", action="store_true", help="nnU-Net predicts without mirroring")
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if bad := sorted(set(sets) - set(LOADERS)) + sorted(set(sides) - set(SIDES)):
        parser.error(f"unknown set(s)/side(s) {bad}; sets: a, b, c; sides: {', '.join(SIDES)}")
    if not (args.data / "isbi2012" / "images").is_dir():
        parser.error(f"{args.data}: no isbi2012/images here; pass --data (the folder holding isbi2012/)")

    import torch

    torch.set_num_threads(args.threads)
    budget = 1.0 if args.quick else args.budget
    print(f"machine: {machine()}\nbudget: {budget:g} min per side per set; sets {sets}; sides {sides}")
    work = args.work or Path(tempfile.mkdtemp(prefix="unetkit-accuracy-"))
    env = _env(args.threads)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    titles: dict[str, str] = {}
    try:
        for key in sets:
            bset = LOADERS[key](args.data)
            titles[key], results[key] = bset.title, {}
            for side in sides:
                print(f"[{key}] {side}: training {budget:g} min ...", flush=True)
                side_work = work / key
                try:
                    if side == "unetkit":
                        info, preds, fg = run_unetkit(bset, side_work, budget, env)
                    elif side == "nnunet":
                        info, preds, fg = run_nnunet(bset, side_work, budget, args.threads, args)
                    else:
                        info, preds, fg = run_monai(bset, budget)
                    results[key][side] = {**score(bset, preds, fg), **info}
                except Exception as exc:  # one side failing still reports the others
                    results[key][side] = {"error": f"{type(exc).__name__}: {exc}"}
                    print(f"  {side} failed: {exc}", flush=True)
            print_table(bset, results[key])
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = verdict(results)
    print(f"\nverdict: {summary}")
    path = write_result(
        "accuracy",
        {
            "budget_minutes": budget,
            "threads": args.threads,
            "sets": {key: {"title": titles[key], "sides": r} for key, r in results.items()},
            "goal": {"isbi_2d": ISBI_GOAL, "better_on": PRIMARY},
            "verdict": summary,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
