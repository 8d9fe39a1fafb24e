"""Restoration: unetkit (supervised CARE-style, Noise2Void, pix2pix GAN) against classical denoisers and
CAREamics, at an equal CPU training budget per learning side, in one run.

Settings (each: train images, held-out test images, clean in [0, 1]; PSNR and SSIM against the clean image):

- ``synthetic``: the demo's seeded textures (:func:`unetkit.synthetic.synthetic_texture`), degraded by a
  Gaussian blur (sigma 0.7 px) and Poisson-Gaussian noise (20 photons per unit, read noise 0.05).
- ``isbi_noise``: ISBI 2012 EM slices (``../shared/data/isbi2012``; train 00-24, test 25-29), intensities / 255,
  degraded by Poisson-Gaussian noise.
- ``isbi_blur``: the same slices, blurred (sigma 1.5 px) then noised.

Methods:

- ``unetkit``: ``unetkit train DATA --task restore --budget B`` as a user runs it: the planner picks network,
  patch, batch and schedule for the budget; percentile normalisation, L1.
- ``unetkit_n2v``: the same with ``--self-supervised`` (Noise2Void), from the noisy training inputs alone.
- ``unetkit_gan``: the same with ``--gan`` (L1 + PatchGAN adversarial loss).
- ``nlm``: scikit-image ``denoise_nl_means`` (patch 5, distance 6, fast mode), ``h`` tuned on the training
  images (a grid of multiples of the estimated noise sigma).
- ``bm3d``: the ``bm3d`` package (reference implementation; free for non-commercial use only), ``sigma_psd``
  tuned likewise (the estimated sigma with ``--quick``).
- ``careamics_care``, ``careamics_n2v``: CAREamics 0.3.5 CARE (supervised) and Noise2Void, as its documentation
  configures them (``benchmarks/_careamics_side.py`` says how), trained for the same budget. CAREamics needs
  torchvision, which does not import beside unetkit's CPU torch, so it runs in its own environment
  (``make .venv-careamics/.installed``: torch 2.9.1 + torchvision 0.24.1 from PyPI, about 7 GB; ``make bench``
  builds it) as a subprocess; without that environment these rows say so and are skipped.

The classical denoisers do not deblur: in the blur setting they remove the noise only.

    python benchmarks/restore.py                 # 3 minutes of training per learning side and setting
    python benchmarks/restore.py --budget 10     # 10 minutes
    python benchmarks/restore.py --quick         # a smoke run (under a minute: the synthetic setting, a fixed
                                                 # small network, 6 s of training per side)

Writes ``benchmarks/results/restore.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result

from unetkit.data.io import read_image, write_image
from unetkit.metrics import psnr, ssim
from unetkit.synthetic import degrade, synthetic_texture

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
TRAIN, TEST = range(0, 25), range(25, 30)
PHOTONS, READ_NOISE = 20.0, 0.05
CAREAMICS_PYTHON = Path(__file__).resolve().parents[1] / ".venv-careamics" / "bin" / "python"
CAREAMICS_SIDE = Path(__file__).resolve().parent / "_careamics_side.py"

Pairs = list[tuple[np.ndarray, np.ndarray]]  # (noisy, clean), (H, W) float32


# ---- data --------------------------------------------------------------------------------------------------
def synthetic_setting(n_train: int, n_test: int, size: int, seed: int = 0) -> tuple[Pairs, Pairs]:
    rng = np.random.default_rng(seed + 1)

    def pair(i: int) -> tuple[np.ndarray, np.ndarray]:
        clean = synthetic_texture((size, size), seed=seed * 1000 + i)
        return degrade(clean, rng, photons=PHOTONS, read_noise=READ_NOISE, blur=0.7), clean

    return [pair(i) for i in range(n_train)], [pair(500 + i) for i in range(n_test)]


def isbi_setting(data: Path, blur: float, crop: int | None, n_train: int, seed: int = 0) -> tuple[Pairs, Pairs]:
    rng = np.random.default_rng(seed + 7)

    def pair(i: int) -> tuple[np.ndarray, np.ndarray]:
        clean = read_image(data / "images" / f"{i:02d}.png").array[0].astype(np.float32) / 255.0
        if crop:
            clean = np.ascontiguousarray(clean[:crop, :crop])
        return degrade(clean, rng, photons=PHOTONS, read_noise=READ_NOISE, blur=blur), clean

    return [pair(i) for i in list(TRAIN)[:n_train]], [pair(i) for i in TEST]


def write_pairs(root: Path, pairs: Pairs) -> Path:
    for i, (noisy, clean) in enumerate(pairs):
        write_image(root / "inputs" / f"{i:02d}.tif", noisy, spatial_dims=2)
        write_image(root / "targets" / f"{i:02d}.tif", clean, spatial_dims=2)
    return root


def scores(restore: Callable[[np.ndarray], np.ndarray], test: Pairs) -> dict[str, float]:
    t0 = time.perf_counter()
    outs = [restore(noisy) for noisy, _ in test]
    seconds = time.perf_counter() - t0
    return {
        "psnr": float(np.mean([psnr(o, c, 1.0) for o, (_, c) in zip(outs, test, strict=True)])),
        "ssim": float(np.mean([ssim(o, c, 1.0) for o, (_, c) in zip(outs, test, strict=True)])),
        "predict_s": round(seconds, 2),
    }


# ---- unetkit -----------------------------------------------------------------------------------------------
def run_unetkit(
    train: Pairs, test: Pairs, budget: float, work: Path, mode: str, seed: int, quick: bool
) -> dict[str, Any]:
    """Plan and train as ``unetkit train DATA --task restore --budget B [--self-supervised | --gan]`` does
    (``quick``: a fixed small network, no planning, whose step timing alone would take longer than the run)."""
    from unetkit.config import load_config
    from unetkit.data.restore import invert_scaling
    from unetkit.infer import load_predictor
    from unetkit.plan import flatten, plan_dataset
    from unetkit.plan.apply import planned_config
    from unetkit.train import train as train_run

    data = write_pairs(work / f"data_{mode}", train)
    user: dict[str, Any] = {"task": "restore", "data": {"path": str(data)}, "train": {"device": "cpu", "seed": seed}}
    if mode == "n2v":
        user["restore"] = {"self_supervised": True}
    elif mode == "gan":
        user["restore"] = {"gan": True}
    t0 = time.perf_counter()
    if quick:
        plan = None
        user["train"].update(max_minutes=budget, epochs=1000, iterations_per_epoch=10, batch_size=4)
        user["data"]["patch_size"] = 32
        user["model"] = {"args": {"depth": 2, "width": 16}}
        cfg = load_config(overrides=[f"{k}={v}" for k, v in flatten(user).items()])
    else:
        fixed = flatten(user)
        plan = plan_dataset(
            data, budget=budget, device="cpu", fixed=fixed, task="restore", self_supervised=mode == "n2v"
        )
        cfg = planned_config(plan, user)
    plan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = train_run(cfg, work / f"run_{mode}", plan=plan)
    train_s = time.perf_counter() - t0
    predictor = load_predictor(str(result.model_path), device="cpu")
    scaling = predictor.description.target_normalization  # type: ignore[union-attr]
    steps = sum(1 for _ in result.history) * cfg.train.iterations_per_epoch

    def restore(noisy: np.ndarray) -> np.ndarray:
        return invert_scaling(predictor.predict_proba(noisy[None]), scaling)[0]

    row = scores(restore, test)
    flipped = load_predictor(str(result.model_path), device="cpu", tta=True)  # `unetkit predict --tta`
    row["tta"] = scores(lambda noisy: invert_scaling(flipped.predict_proba(noisy[None]), scaling)[0], test)
    row.update(
        train_s=round(train_s, 1), plan_s=round(plan_s, 1), epochs=len(result.history), steps_at_most=steps,
        patch=cfg.data.patch_size, batch=cfg.train.batch_size, model_depth=cfg.model.args.get("depth"),
        model_width=cfg.model.args.get("width"),
    )  # fmt: skip
    return row


# ---- CAREamics ---------------------------------------------------------------------------------------------
def run_careamics(
    mode: str, train: Pairs, test: Pairs, budget: float, work: Path, python: Path, seed: int
) -> dict[str, Any]:
    """Train and predict with CAREamics (``mode``: care or n2v) in its own environment, then score here."""
    if not python.exists():
        return {"skipped": f"no CAREamics environment at {python}: make .venv-careamics/.installed"}
    work.mkdir(parents=True, exist_ok=True)
    data, out = work / f"careamics_{mode}_data.npz", work / f"careamics_{mode}_pred.npz"
    np.savez(
        data, train_noisy=np.stack([n for n, _ in train]), train_clean=np.stack([c for _, c in train]),
        test_noisy=np.stack([n for n, _ in test]),
    )  # fmt: skip
    cmd = [str(python), str(CAREAMICS_SIDE), str(data), str(out), "--mode", mode, "--minutes", str(budget)]
    cmd += ["--seed", str(seed)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=budget * 60 * 3 + 600)
    wall_s = time.perf_counter() - t0
    if done.returncode != 0:
        return {"failed": (done.stderr or done.stdout).strip().splitlines()[-4:] or ["no output"], "command": cmd}
    result = np.load(out)
    preds = list(result["pred"])
    row = scores(lambda x: preds.pop(0), test)
    info = json.loads(str(result["info"]))
    row.update(info, wall_s=round(wall_s, 1), predict_s=info["predict_s"])
    return row


# ---- classical ---------------------------------------------------------------------------------------------
def _sigma(x: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(x))


def _tune(denoise: Callable[[np.ndarray, float], np.ndarray], train: Pairs, factors: list[float]) -> float:
    """The multiple of the estimated noise sigma that scores best on (up to) two training images."""
    best, best_f = -np.inf, factors[0]
    for f in factors:
        value = float(np.mean([psnr(denoise(n, f * _sigma(n)), c, 1.0) for n, c in train[:2]]))
        if value > best:
            best, best_f = value, f
    return best_f


def nlm(x: np.ndarray, h: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    return np.asarray(
        denoise_nl_means(x, h=h, sigma=_sigma(x), patch_size=5, patch_distance=6, fast_mode=True), np.float32
    )


def bm3d_denoise(x: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    return np.asarray(bm3d.bm3d(x, sigma_psd=sigma), np.float32)


def run_classical(name: str, train: Pairs, test: Pairs, quick: bool) -> dict[str, Any]:
    if name == "nlm":
        factor = _tune(nlm, train, [0.3, 0.45, 0.6, 0.8, 1.0])
        return {**scores(lambda x: nlm(x, factor * _sigma(x)), test), "h_over_sigma": factor}
    try:
        import bm3d  # noqa: F401
    except ImportError:
        return {"skipped": "pip install bm3d (the bench extra)"}
    factor = 1.0 if quick else _tune(bm3d_denoise, train, [0.6, 0.8, 1.0, 1.25])
    return {**scores(lambda x: bm3d_denoise(x, factor * _sigma(x)), test), "sigma_factor": factor}


# ---- main --------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=3.0, help="training minutes per learning side and setting")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the isbi2012 folder")
    parser.add_argument("--quick", action="store_true", help="a smoke run: crops, seconds of training")
    parser.add_argument(
        "--methods",
        default="unetkit,unetkit_n2v,unetkit_gan,careamics_care,careamics_n2v,nlm,bm3d",
        help="comma-separated",
    )
    parser.add_argument(
        "--careamics-python", type=Path, default=CAREAMICS_PYTHON, help="the Python of the CAREamics environment"
    )
    parser.add_argument("--settings", default="synthetic,isbi_noise,isbi_blur", help="comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    budget = 0.1 if args.quick else args.budget
    wanted = {x.strip() for x in args.settings.split(",")}
    print(f"machine: {machine()}\nbudget: {budget} min per learning side and setting")
    settings: dict[str, tuple[Pairs, Pairs]] = {}
    if args.quick:
        settings["synthetic"] = synthetic_setting(6, 2, 96, args.seed)
    else:
        settings["synthetic"] = synthetic_setting(16, 4, 192, args.seed)
    if args.quick:
        print("--quick: the synthetic setting only")
    elif (args.data / "images").is_dir():
        settings["isbi_noise"] = isbi_setting(args.data, 0.0, None, 25, args.seed)
        settings["isbi_blur"] = isbi_setting(args.data, 1.5, None, 25, args.seed)
    else:
        print(f"{args.data}: no ISBI 2012 data; the ISBI settings are skipped")
    settings = {k: v for k, v in settings.items() if k in wanted}
    results: dict[str, Any] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for name, (train, test) in settings.items():
            rows: dict[str, Any] = {"input": scores(lambda x: x, test)}
            for method in methods:
                if method.startswith("unetkit"):
                    mode = {"unetkit": "supervised", "unetkit_n2v": "n2v", "unetkit_gan": "gan"}[method]
                    rows[method] = run_unetkit(train, test, budget, Path(work) / name, mode, args.seed, args.quick)
                elif method in ("careamics_care", "careamics_n2v"):
                    mode = method.removeprefix("careamics_")
                    rows[method] = run_careamics(
                        mode, train, test, budget, Path(work) / name, args.careamics_python, args.seed
                    )
                elif method in ("nlm", "bm3d"):
                    rows[method] = run_classical(method, train, test, args.quick)
            results[name] = {
                "train_images": len(train), "test_images": len(test), "shape": list(test[0][1].shape),
                "methods": rows,
            }  # fmt: skip
            print(f"\n{name}: {len(train)} train / {len(test)} test images of {test[0][1].shape}")
            for method, row in rows.items():
                if "skipped" in row:
                    print(f"  {method:16s} skipped: {row['skipped']}")
                elif "failed" in row:
                    print(f"  {method:16s} FAILED: {row['failed']}")
                else:
                    print(f"  {method:16s} PSNR {row['psnr']:6.2f} dB  SSIM {row['ssim']:.4f}")
                    if "tta" in row:
                        tta = row["tta"]
                        print(f"  {method + ' --tta':16s} PSNR {tta['psnr']:6.2f} dB  SSIM {tta['ssim']:.4f}")
    path = write_result(
        "restore",
        {"budget_minutes": budget, "quick": args.quick, "seconds": round(time.perf_counter() - t_all, 1),
         "settings": results},
    )  # fmt: skip
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
