"""Time to a target accuracy: the minutes each side trains to reach a validation Dice on the ISBI split.

The figure users feel is minutes to a good model. In one run on one machine:

1. **MONAI** BasicUNet with MONAI transforms (``_common.monai_train``: the accuracy benchmark's baseline)
   trains for ``--monai-minutes`` (default 10), its validation Dice (cell interior, slices 25-29) measured
   every ``--check`` seconds of training. The **target** is the Dice it has at the end; its time to target is
   the first check at or above it.
2. **unetkit** ``unetkit train DATA --budget Nm`` with the held-out slices as its validation set
   (``data.val_path``) and nothing else: it plans itself and validates every epoch. Its time to target is
   the training time (``metrics.csv``: ``seconds``, summed) of the first epoch at or above the target.

Both clocks count training only: validation, start-up and planning are left out on both sides (planning
time is reported beside). Goal: unetkit's time <= 1/2 of MONAI's.

Usage:
    python benchmarks/train_to_target.py [--monai-minutes 10] [--budget 10] [--quick]
    (results: benchmarks/results/train_to_target.json)
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import isbi_scores, monai_predictor, monai_train, write_result

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_isbi(data: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """Slices 00-24 (train) and 25-29 (validation): images float32 in [0, 1], masks 1 = cell interior."""
    from isbi2012 import load_split

    return load_split(data / "isbi2012")


def write_set(pairs: list[tuple[np.ndarray, np.ndarray]], folder: Path) -> Path:
    from unetkit.data.io import write_image

    for i, (img, mask) in enumerate(pairs):
        write_image(folder / "images" / f"s{i:02d}.tif", img)
        write_image(folder / "masks" / f"s{i:02d}.tif", mask.astype(np.uint8))
    return folder


def first_reaching(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first time (seconds) of ``(time, dice)`` points at or above ``target``; ``None`` if never."""
    return next((t for t, d in curve if d >= target), None)


def monai_side(train: list, val: list, minutes: float, check_s: float) -> dict[str, Any]:
    """MONAI for ``minutes``, validated every ``check_s`` seconds of training: the Dice curve."""
    curve: list[tuple[float, float]] = []
    patch = (256, 256)

    def on_check(net: Any, seconds: float) -> None:
        predict = monai_predictor(net, patch)
        preds = [predict(img[None].astype(np.float32)).argmax(0) for img, _ in val]
        dice = isbi_scores(preds, [m for _, m in val])["dice"]
        curve.append((seconds, dice))
        print(f"  monai {seconds / 60:5.2f} min  val Dice {dice:.4f}", flush=True)

    pairs = [(img, (mask > 0).astype(np.int64)) for img, mask in train]
    _, steps, train_s = monai_train(pairs, 2, patch, 4, minutes, on_check=on_check, check_every_s=check_s)
    return {"curve": curve, "steps": steps, "train_seconds": train_s, "target": curve[-1][1]}


def unetkit_side(
    train: list, val: list, minutes: float, work: Path, overrides: list[str] | None = None
) -> dict[str, Any]:
    """``unetkit train DATA --budget Nm`` (held-out validation set, plus any ``--set`` ``overrides``: a lever
    measured against the plan); the Dice curve from ``metrics.csv``."""
    data, vdir, run = write_set(train, work / "train"), write_set(val, work / "val"), work / "run"
    cmd = [
        sys.executable, "-m", "unetkit", "train", str(data), "--out", str(run), "--budget", f"{minutes:g}m",
        "--quiet", "--set", f"data.val_path={vdir}",
    ]  # fmt: skip
    for item in overrides or []:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"unetkit train failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    curve, elapsed = [], 0.0
    with open(run / "metrics.csv") as f:
        for row in csv.DictReader(f):
            elapsed += float(row["seconds"])
            if row.get("val_dice"):
                curve.append((elapsed, float(row["dice_foreground"] or row["val_dice"])))
    for t, d in curve:
        print(f"  unetkit {t / 60:5.2f} min  val Dice {d:.4f}", flush=True)
    plan = (run / "plan.yaml").read_text() if (run / "plan.yaml").exists() else ""
    return {"curve": curve, "train_seconds": elapsed, "process_seconds": wall, "overrides": overrides or [],
            "plan_yaml": plan}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--monai-minutes", type=float, default=10.0)
    ap.add_argument("--budget", type=float, default=None, help="unetkit's --budget in minutes (default: MONAI's)")
    ap.add_argument("--check", type=float, default=30.0, help="MONAI validation every N seconds of training")
    ap.add_argument("--quick", action="store_true", help="1 minute each, checks every 15 s (a smoke run)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for unetkit's side (a lever to measure; repeatable)")  # fmt: skip
    ap.add_argument("--reuse-monai", action="store_true",
                    help="take MONAI's curve from the last results/train_to_target.json instead of training it "
                         "again (for measuring unetkit levers; the output says so)")  # fmt: skip
    ap.add_argument("--tag", default="", help="suffix of the results file (train_to_target_<tag>.json)")
    args = ap.parse_args(argv)
    if not (args.data / "isbi2012").is_dir():
        print(f"no ISBI data under {args.data}: nothing to do")
        return 0
    if args.quick:
        args.monai_minutes, args.check = 1.0, 15.0
    budget = args.budget or args.monai_minutes
    train, val = load_isbi(args.data)
    if args.reuse_monai:
        import json

        monai = json.loads((Path(__file__).resolve().parent / "results" / "train_to_target.json").read_text())["monai"]
        monai["reused"] = True
        print(f"MONAI: reused from results/train_to_target.json ({len(monai['curve'])} checks)", flush=True)
    else:
        print(f"MONAI BasicUNet, {args.monai_minutes:g} min:", flush=True)
        monai = monai_side(train, val, args.monai_minutes, args.check)
    target = monai["target"]
    monai["time_to_target"] = first_reaching(monai["curve"], target)
    print(f"target: val Dice {target:.4f} (MONAI after {args.monai_minutes:g} min)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"unetkit, --budget {budget:g}m:", flush=True)
        unet = unetkit_side(train, val, budget, Path(tmp), args.overrides)
    unet["time_to_target"] = first_reaching(unet["curve"], target)
    ratio = (
        unet["time_to_target"] / monai["time_to_target"]
        if unet["time_to_target"] is not None and monai["time_to_target"]
        else None
    )
    for name, side in (("MONAI", monai), ("unetkit", unet)):
        t = side["time_to_target"]
        print(f"{name:8s} time to Dice {target:.4f}: {'not reached' if t is None else f'{t / 60:.2f} min'}")
    print(f"unetkit / MONAI time: {'n/a' if ratio is None else f'{ratio:.2f}x'} (goal <= 0.5)")
    name = "train_to_target_quick" if args.quick else "train_to_target"
    write_result(
        f"{name}_{args.tag}" if args.tag else name,
        {"target_dice": target, "monai": monai, "unetkit": unet, "ratio": ratio},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
