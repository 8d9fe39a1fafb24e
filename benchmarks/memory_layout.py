"""The memory layout the plan trains in: channels-first (PyTorch's default) against channels-last, in one run.

For four datasets (restoration and segmentation, 2D and 3D; synthetic, seeded) the planner plans a run as
``unetkit train DATA`` does, timing its steps (no cache). The planned configuration then trains for a fixed
number of steps in each layout (``train.channels_last`` false and true, nothing else changed) through
``unetkit.train.train``; the second epoch's patches per second are compared (the first warms the caches), and
the plan's own choice (its ``channels-last`` row) is checked against the faster one.

    python benchmarks/memory_layout.py           # about 6 minutes on 2 CPU cores
    python benchmarks/memory_layout.py --quick   # small images and networks, under a minute

Writes ``benchmarks/results/memory_layout.json``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from unetkit.data.io import write_image
from unetkit.plan import detect_machine, measure_step, plan_dataset
from unetkit.plan.apply import planned_config
from unetkit.synthetic import synthetic_cells, write_restore_dataset
from unetkit.train import train

#: name -> (task, dims, images, shape); ``--quick`` shrinks the shapes
CASES: dict[str, tuple[str, int, int, tuple[int, ...]]] = {
    "restore 2D": ("restore", 2, 6, (256, 256)),
    "restore 3D": ("restore", 3, 4, (48, 96, 96)),
    "segment 2D": ("segment", 2, 6, (256, 256)),
    "segment 3D": ("segment", 3, 4, (48, 96, 96)),
}
#: seconds each epoch should take in the default layout (the step count follows from the plan's step time)
EPOCH_SECONDS = 20.0


def write_cells_dataset(root: Path, n: int, shape: tuple[int, ...]) -> None:
    for i in range(n):
        c = synthetic_cells(shape, seed=i, cell_radius=8 if len(shape) == 3 else 10)
        write_image(root / "images" / f"c{i}.tif", c.image)
        write_image(root / "masks" / f"c{i}.tif", c.instances.astype(np.uint16))


def planned_step_seconds(plan: Any) -> float:
    """The step time the plan sized its schedule on (the ``batch`` row's step of 2, scaled to the batch)."""
    rows = {choice: why for choice, _, why in plan.rows()}
    two = float(re.search(r"([0-9.]+) s per step of 2", rows["batch"]).group(1))  # type: ignore[union-attr]
    return two / 2 * int(plan.overrides()["train.batch_size"])


def run_case(name: str, task: str, dims: int, n: int, shape: tuple[int, ...], work: Path, budget: float) -> dict:
    root = work / name.replace(" ", "_")
    if task == "restore":
        write_restore_dataset(str(root), n=n, shape=shape)
    else:
        write_cells_dataset(root, n, shape)
    plan = plan_dataset(
        root, budget=budget, device="cpu", task=task, timer=measure_step(detect_machine("cpu"), cache=False)
    )
    chosen = bool(plan.overrides()["train.channels_last"])
    step = planned_step_seconds(plan)
    steps = max(4, int(EPOCH_SECONDS / max(step, 1e-3)))
    rates = {}
    for channels_last in (False, True):
        user = {
            "data": {"path": str(root)},
            "train": {"epochs": 2, "iterations_per_epoch": steps, "max_minutes": None, "fill_budget": False,
                      "val_every": 2, "channels_last": channels_last, "device": "cpu"},
        }  # fmt: skip
        cfg = planned_config(plan, user)
        result = train(cfg, root / f"run_{'last' if channels_last else 'first'}")
        rates[channels_last] = float(result.history[-1]["images_per_s"])
    speedup = rates[True] / rates[False]
    row = {
        "case": name,
        "network": f"{plan.overrides()['model.name']} depth {plan.overrides()['model.args.depth']}, "
        f"width {plan.overrides()['model.args.width']}, norm {plan.overrides()['model.args.norm']}",
        "patch": plan.overrides()["data.patch_size"],
        "batch": plan.overrides()["train.batch_size"],
        "steps_per_epoch": steps,
        "patches_per_s_channels_first": round(rates[False], 2),
        "patches_per_s_channels_last": round(rates[True], 2),
        "channels_last_speedup": round(speedup, 3),
        "plan_layout": "channels-last" if chosen else "channels-first",
        "plan_why": {c: w for c, _, w in plan.rows()}["channels-last"],
        "plan_picked_the_faster": chosen == (speedup > 1.0),
    }
    print(
        f"{name:11s} {row['network']:40s} patch {row['patch']} batch {row['batch']}: "
        f"{rates[False]:.1f} -> {rates[True]:.1f} patches/s channels-last ({speedup:.2f}x); plan: {row['plan_layout']}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small images, a smoke run")
    args = parser.parse_args()
    global EPOCH_SECONDS
    if args.quick:
        EPOCH_SECONDS = 2.0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (task, dims, n, shape) in CASES.items():
            if args.quick:
                shape = (16, 32, 32) if dims == 3 else (64, 64)
            rows.append(run_case(name, task, dims, n, shape, Path(tmp), budget=0.5 if args.quick else 5.0))
    path = write_result("memory_layout", {"quick": args.quick, "rows": rows})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
