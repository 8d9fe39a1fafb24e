"""Augmentation throughput: unetkit's batched Augmenter against an equivalent MONAI dictionary pipeline.

Both sides apply flips, rotation, zoom, elastic deformation, Gaussian noise, Gaussian blur, brightness
(intensity scaling), contrast and gamma to an image and its label map (label: nearest), every transform with
probability 1, on CPU, with the same number of torch threads, in one run. MONAI's dictionary transforms work on
one sample at a time, so its side loops over the batch (that is how its DataLoader uses them).

    python benchmarks/augment_throughput.py            # 2D 256x256 (batch 8) and 3D 96^3 (batch 2)
    python benchmarks/augment_throughput.py --quick    # small sizes, a smoke run

Writes ``benchmarks/results/augment_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name

from unetkit.augment import AugmentConfig, Augmenter

RESULTS = Path(__file__).resolve().parent / "results"

# The shared parameter ranges (unetkit names; the MONAI pipeline below is set to the same ranges).
ROT_2D, ROT_3D = 180.0, 30.0
ZOOM = (0.7, 1.4)
ELASTIC_SIGMA = 10.0
NOISE_STD = 0.1
BLUR = (0.5, 1.0)
BRIGHTNESS = (0.75, 1.25)
CONTRAST = (0.75, 1.25)
GAMMA = (0.7, 1.5)


def unetkit_config(spatial_dims: int) -> AugmentConfig:
    rot = ROT_2D if spatial_dims == 2 else ROT_3D
    return AugmentConfig.model_validate(
        {
            "flip": {"p": 0.5},
            "rot90": {"p": 0.0},
            "rotate": {"p": 1.0, "degrees": (-rot, rot)},
            "scale": {"p": 1.0, "range": ZOOM},
            "elastic": {"p": 1.0, "grid": 3, "sigma": ELASTIC_SIGMA},
            "noise": {"p": 1.0, "std": (0.0, NOISE_STD)},
            "blur": {"p": 1.0, "sigma": BLUR},
            "brightness": {"p": 1.0, "range": BRIGHTNESS},
            "contrast": {"p": 1.0, "range": CONTRAST},
            "gamma": {"p": 1.0, "range": GAMMA},
        }
    )


def monai_pipeline(
    spatial_dims: int, size: int, fused: bool = False
) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """The MONAI equivalent. ``fused=True`` lets MONAI's elastic transform do rotation and zoom in its own
    resampling (its fastest equivalent); ``fused=False`` is the usual RandAffined + Rand*DElasticd chain."""
    import monai.transforms as mt
    from monai.data import set_track_meta

    set_track_meta(False)  # plain tensors: MONAI's fastest mode
    keys = ("image", "label")
    modes = ("bilinear", "nearest")
    rot = math.radians(ROT_2D if spatial_dims == 2 else ROT_3D)
    scale = [(1 / ZOOM[1] - 1, 1 / ZOOM[0] - 1)] * spatial_dims  # MONAI scales coordinates: 1/zoom
    flips = [mt.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(spatial_dims)]
    affine_args = {"rotate_range": [rot] * (1 if spatial_dims == 2 else 3), "scale_range": scale}
    affine = [] if fused else [mt.RandAffined(keys, prob=1.0, mode=modes, padding_mode="reflection", **affine_args)]
    elastic_args = affine_args if fused else {}
    if spatial_dims == 2:
        # 3x3 control points spanning the image, displacements of ~10 px (MONAI draws them uniformly)
        elastic = mt.Rand2DElasticd(
            keys, spacing=size / 2, magnitude_range=(0.0, 2 * ELASTIC_SIGMA), prob=1.0, mode=modes,
            padding_mode="reflection", **elastic_args,
        )  # fmt: skip
    else:
        # MONAI's 3D elastic smooths a dense random field instead of using control points
        elastic = mt.Rand3DElasticd(
            keys, sigma_range=(5.0, 8.0), magnitude_range=(0.0, 2 * ELASTIC_SIGMA), prob=1.0,
            mode=modes, padding_mode="reflection", **elastic_args,
        )  # fmt: skip
    sigma = {f"sigma_{a}": BLUR for a in "xyz"[:spatial_dims]}
    pipeline = mt.Compose(
        [
            *flips,
            *affine,
            elastic,
            mt.RandGaussianNoised("image", prob=1.0, std=NOISE_STD),
            mt.RandGaussianSmoothd("image", prob=1.0, **sigma),
            mt.RandScaleIntensityd("image", factors=(BRIGHTNESS[0] - 1, BRIGHTNESS[1] - 1), prob=1.0),
            mt.RandScaleIntensityFixedMeand(
                "image", factors=(CONTRAST[0] - 1, CONTRAST[1] - 1), preserve_range=True, prob=1.0
            ),
            mt.RandAdjustContrastd("image", gamma=GAMMA, prob=1.0),
        ]
    )
    pipeline.set_random_state(seed=0)
    return pipeline  # type: ignore[return-value]


def timed_round_robin(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Time each step ``repeats`` times, interleaved, so load changes on a shared machine hit all sides alike."""
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return times


def run_case(spatial_dims: int, size: int, batch: int, repeats: int) -> dict[str, object]:
    shape = (size,) * spatial_dims
    gen = torch.Generator().manual_seed(0)
    image = torch.rand((batch, 1, *shape), generator=gen)
    label = (torch.rand((batch, *shape), generator=gen) > 0.5).long()
    items = [{"image": image[i], "label": label[i, None].float()} for i in range(batch)]

    augmenter = Augmenter(unetkit_config(spatial_dims), spatial_dims)
    monai = monai_pipeline(spatial_dims, size, fused=False)
    monai_fused = monai_pipeline(spatial_dims, size, fused=True)
    steps: dict[str, Callable[[], object]] = {
        "unetkit": lambda: augmenter(image, label, generator=gen),
        "monai": lambda: [monai(dict(item)) for item in items],
        "monai_fused": lambda: [monai_fused(dict(item)) for item in items],
    }
    rates = {name: batch / statistics.median(t) for name, t in timed_round_robin(steps, repeats).items()}
    best_peer = max(rates["monai"], rates["monai_fused"])
    return {
        "case": f"{spatial_dims}D {'x'.join(map(str, shape))} batch {batch}",
        **{f"{k}_samples_per_s": round(v, 2) for k, v in rates.items()},
        "ratio_vs_best_monai": round(rates["unetkit"] / best_peer, 2),
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both sides (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions per case")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    cases = [(2, 64, 4), (3, 32, 2)] if args.quick else [(2, 256, 8), (3, 96, 2)]
    repeats = args.repeats or (2 if args.quick else 7)
    rows = [run_case(dims, size, batch, repeats) for dims, size, batch in cases]

    sys.stdout.write(f"{'case':<26}{'unetkit/s':>11}{'MONAI/s':>10}{'MONAI fused/s':>15}{'ratio':>8}\n")
    for r in rows:
        sys.stdout.write(
            f"{r['case']:<26}{r['unetkit_samples_per_s']:>11}{r['monai_samples_per_s']:>10}"
            f"{r['monai_fused_samples_per_s']:>15}{r['ratio_vs_best_monai']:>7}x\n"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "augment_throughput.json"
    meta = {
        "cpu": cpu_name(),
        "threads": args.threads,
        "torch": torch.__version__,
        "quick": args.quick,
        "load_average": list(__import__("os").getloadavg()),
    }
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    sys.stdout.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
