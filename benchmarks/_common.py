"""Shared benchmark helpers: the machine's description, results files, peak-memory readings."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    """The CPU's model name, as lscpu shows it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, core count, memory, Python/torch versions: printed and stored with every number."""
    import os

    import torch

    cpu = cpu_name()
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gb, 1),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine and the command line."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]), **payload}
    path.write_text(json.dumps(payload, indent=2))
    return path


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` on Linux (``ru_maxrss`` carries the parent's
    high-water mark across fork + exec, so a child started by a large parent would report the parent's peak),
    else ``ru_maxrss``."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def monai_items(pairs: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
    """MONAI dictionary items ``{"image": (1, *S) float32, "label": (1, *S) float32}`` from (image, mask) arrays."""
    import numpy as np
    import torch

    return [
        {
            "image": torch.from_numpy(np.asarray(i, np.float32)[None]),
            "label": torch.from_numpy(np.asarray(m, np.float32)[None]),
        }
        for i, m in pairs
    ]


def isbi_scores(preds: list[Any], truths: list[Any]) -> dict[str, float]:
    """The ISBI 2012 errors and the overlap of the cell interior (class 1), averaged over images.

    Pixel, Rand (foreground-restricted) and warping errors are means over the images; IoU and Dice of class 1
    come from one confusion matrix over all of them.

    Shape:
        ``preds``, ``truths``: lists of ``(H, W)`` labels, 1 = cell interior, 0 = membrane.
    """
    import numpy as np

    from unetkit.metrics import ConfusionMatrix, pixel_error, rand_error, warping_error

    cm = ConfusionMatrix(2)
    pe, re, we = [], [], []
    for pred, truth in zip(preds, truths, strict=True):
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


def monai_train(
    pairs: list[tuple[Any, Any]],
    spatial_dims: int,
    patch: tuple[int, ...],
    batch_size: int,
    budget_minutes: float,
    num_classes: int = 2,
    on_check: Any = None,
    check_every_s: float = 30.0,
) -> tuple[Any, int, float]:
    """Train MONAI's BasicUNet (batch norm) for a wall-clock budget: the plain-U-Net baseline.

    MONAI transforms (``NormalizeIntensityd``, ``RandCropByPosNegLabeld`` with half the patches on foreground,
    then the augmentation benchmark's MONAI pipeline), Dice + CE, AdamW (lr 1e-3), batches of ``batch_size``
    patches until ``budget_minutes`` have passed.

    Args:
        pairs: ``(image, mask)`` arrays, ``(*S)`` each, mask in ``0..num_classes-1``.
        spatial_dims: 2 or 3.
        patch: the patch size per spatial axis (each divisible by 16).
        on_check: ``on_check(net, train_seconds)`` every ``check_every_s`` seconds of training and at the end
            (e.g. a validation); its time is not counted and the budget's deadline moves by it.

    Returns:
        ``(network in eval mode, optimizer steps, training seconds)``.
    """
    import time

    import monai.transforms as mt
    import torch
    from augment_throughput import monai_pipeline
    from monai.data import DataLoader, Dataset
    from monai.losses import DiceCELoss
    from monai.networks.nets import BasicUNet

    items = monai_items(pairs)
    pre = mt.Compose(
        [
            mt.NormalizeIntensityd("image"),
            mt.RandCropByPosNegLabeld(
                ("image", "label"), label_key="label", spatial_size=patch, pos=1, neg=1, num_samples=1
            ),
        ]
    )
    augment = monai_pipeline(spatial_dims, max(patch))

    def transform(d: dict[str, Any]) -> dict[str, Any]:
        return augment(pre(d)[0])

    repeat = max(1, 100 // len(items))  # a pass over the loader is ~100 patches, however many images
    loader = DataLoader(
        Dataset(items * repeat, transform=transform), batch_size=batch_size, shuffle=True, num_workers=0
    )
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=spatial_dims, in_channels=1, out_channels=num_classes, norm="batch")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    budget_s, steps = budget_minutes * 60, 0
    t0 = time.perf_counter()
    paused, next_check = 0.0, check_every_s

    def trained() -> float:  # training seconds so far: the checks' time is not counted
        return time.perf_counter() - t0 - paused

    def check() -> None:
        nonlocal paused
        c0 = time.perf_counter()
        net.eval()
        on_check(net, trained())
        paused += time.perf_counter() - c0

    while trained() < budget_s:
        for batch in loader:
            net.train()
            loss = loss_fn(net(batch["image"]), batch["label"].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if on_check is not None and trained() >= next_check:
                check()
                next_check += check_every_s
            if trained() >= budget_s:
                break
    train_s = time.perf_counter() - t0 - paused
    if on_check is not None:
        check()
    net.eval()
    return net, steps, train_s


def monai_predictor(net: Any, patch: tuple[int, ...]) -> Any:
    """``predict(image (C, *S)) -> probabilities (K, *S)``: ``sliding_window_inference`` with gaussian blending,
    overlap 0.25, reflected borders, 4 windows per call, on the MONAI-normalised image."""
    import monai.transforms as mt
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    norm = mt.NormalizeIntensity()

    def predict(image: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(norm(torch.from_numpy(image.astype(np.float32))))[None]
        with torch.inference_mode():
            y = sliding_window_inference(x, patch, 4, net, overlap=0.25, mode="gaussian", padding_mode="reflect")
        assert isinstance(y, torch.Tensor)
        return y.softmax(1)[0].numpy()

    return predict
