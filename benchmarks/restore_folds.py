"""Restoration folds as an ensemble against one model, at the same CPU budget, in one run.

ISBI 2012 slices 00-24 degraded with Poisson-Gaussian noise (``restore.py``'s ``isbi_noise`` setting), slices
25-29 held out. unetkit plans for ``--budget`` minutes a fold and trains ``--folds`` folds as
``unetkit train DATA --task restore --folds N`` does; each fold and their ensemble (``load_ensemble``: each
fold normalises by its own training images, its outputs mapped into the first fold's target scaling) are
scored; then one model (the plan's own split) trains for the folds' whole budget. PSNR and SSIM (data range 1)
against the clean slices.

    python benchmarks/restore_folds.py                 # 2 folds of 2.5 min, then one model of 5 min: ~12 min
    python benchmarks/restore_folds.py --budget 0.2    # a smoke run

Writes ``benchmarks/results/restore_folds.json``; needs ``../shared/data/isbi2012`` (skipped without it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import restore as R
from _common import write_result

from unetkit.infer import load_predictor
from unetkit.infer.ensemble import load_ensemble
from unetkit.plan import flatten, plan_dataset
from unetkit.plan.apply import planned_config
from unetkit.train import train


def run(data: Path, test: R.Pairs, budget: float, folds: int, work: Path, seed: int) -> dict[str, Any]:
    """Plan for ``budget`` minutes, train ``folds`` folds (one model where ``folds == 1``); score each and,
    with several, their ensemble."""
    user: dict[str, Any] = {"task": "restore", "data": {"path": str(data)}, "train": {"device": "cpu", "seed": seed}}
    plan = plan_dataset(data, budget=budget, device="cpu", fixed=flatten(user), task="restore")
    cfg = planned_config(plan, user)
    models, t0 = [], time.perf_counter()
    for k in range(folds):
        fold_cfg = cfg.model_copy(deep=True)
        if folds > 1:
            fold_cfg.data.fold, fold_cfg.data.num_folds = k, folds
        models.append(str(train(fold_cfg, work / f"fold_{k + 1}", plan=plan).model_path))
    row: dict[str, Any] = {"folds": folds, "minutes_each": budget, "train_s": round(time.perf_counter() - t0, 1)}
    row["plan"] = {"patch": cfg.data.patch_size, "batch": cfg.train.batch_size}
    for k, path in enumerate(models):
        one = load_predictor(path, device="cpu")
        row[f"fold_{k + 1}" if folds > 1 else "model"] = R.scores(lambda x, p=one: p.restore(x[None])[0], test)
    if folds > 1:
        both = load_ensemble(models, device="cpu")
        row["ensemble"] = R.scores(lambda x: both.restore(x[None])[0], test)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=2.5, help="minutes of training per fold")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=R.DEFAULT_DATA)
    args = ap.parse_args()
    if not (args.data / "images").is_dir():
        print(f"skipped: no ISBI 2012 data at {args.data}")
        return
    train_pairs, test = R.isbi_setting(args.data, 0.0, None, 25, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = R.write_pairs(work / "data", train_pairs)
        ensemble = run(data, test, args.budget, args.folds, work / "folds", args.seed)
        single = run(data, test, args.budget * args.folds, 1, work / "single", args.seed)
    gain = single["model"]["psnr"] - ensemble["ensemble"]["psnr"]
    print(f"{args.folds} folds of {args.budget:g} min as an ensemble: {ensemble['ensemble']['psnr']:.2f} dB; "
          f"one model of {args.budget * args.folds:g} min: {single['model']['psnr']:.2f} dB ({gain:+.2f})")  # fmt: skip
    path = write_result("restore_folds", {"setting": "isbi_noise", "ensemble": ensemble, "single": single,
                                          "one_model_minus_ensemble_db": round(gain, 3)})  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
