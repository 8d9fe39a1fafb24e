"""Tile size and batch per CPU backend: megapixels/s of the tile loop for each, to choose the prediction tile.

Larger tiles waste less on the overlap (and, for valid nets, on the halo) but cost more memory per tile and
may leave a backend's threads or streams less busy; the batch of tiles trades the same way. This sweeps
both for every installed CPU backend with the benchmark network of ``predict.py`` (``unet2d_small``, batch
norm, random weights with non-trivial statistics) on one 2048x2048 image, gaussian blending, overlap 0.25,
labels as the output; each figure is the best of ``--repeats`` timed runs after a warm-up.

    python benchmarks/tile_choice.py                 # tiles 256, 384, 512, 768; batches 1, 2, 4
    python benchmarks/tile_choice.py --quick         # 1024x1024, tiles 256 and 512, batch 4
    python benchmarks/tile_choice.py --model RUN/model.safetensors   # a trained network instead

Each backend is also run with unetkit's defaults (no tile, no batch: the model file's tile, else
:func:`unetkit.infer.tiling.default_tile`; the batch of :func:`unetkit.infer.backends.tiles_per_call`), so
the table shows how close the rules come to the best combination measured.

Writes ``benchmarks/results/tile_choice.json``: Mpx/s per backend, tile and batch, per backend the best
tile's speed-up over the 256 tile (batch 4, the old default), and the defaults' fraction of the best.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result
from predict import make_model, normalise, synthetic


def measure(
    model: Any, image: Any, backend: str, tile: int | None, batch: int | None, repeats: int
) -> tuple[float, str]:
    """Best seconds of ``repeats`` predictions of ``image`` (``(C, H, W)`` float32) after one warm-up, and the
    predictor's one-line description (tile and batch as chosen; ``None``: unetkit's defaults)."""
    from unetkit.infer import Predictor

    pred = Predictor(
        model, tile=tile, overlap=0.25, blend="gaussian", batch_size=batch, backend=backend, device="cpu",
        normalization={"kind": "none"},
    )  # fmt: skip
    x = image
    edge = 2 * max(pred.plan(x.shape[1:]).tile_in)
    pred.predict(x[:, :edge, :edge])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred.predict(x)
        best = min(best, time.perf_counter() - t0)
    return best, pred.describe(x.shape[1:])


def main(argv: list[str] | None = None) -> int:
    from unetkit.infer.select import installed_backends

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1024x1024, two tiles, one batch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", default=",".join(installed_backends()))
    parser.add_argument("--model", help="a model file (.safetensors) to sweep instead of the benchmark network")
    args = parser.parse_args(argv)
    size = 1024 if args.quick else 2048
    tiles = (256, 512) if args.quick else (256, 384, 512, 768)
    batches = (4,) if args.quick else (1, 2, 4)
    print(f"machine: {machine()}")
    if args.model:
        from unetkit import load_model

        model = load_model(args.model).eval()
    else:
        model = make_model()
    channels = int(model.in_channels)
    image = np.repeat(normalise(synthetic((size, size)))[None], channels, axis=0)
    mpx = size * size / 1e6
    rows: list[dict[str, Any]] = []
    speedups: dict[str, float] = {}
    defaults: dict[str, dict[str, Any]] = {}
    for backend in args.backends.split(","):
        for batch in batches:
            for tile in tiles:
                seconds, _ = measure(model, image, backend, tile, batch, args.repeats)
                rows.append({"backend": backend, "tile": tile, "batch": batch, "mpx_s": mpx / seconds})
                print(f"{backend:12s} tile {tile:4d} batch {batch}: {mpx / seconds:.3f} Mpx/s", flush=True)
        mine = [r for r in rows if r["backend"] == backend]
        base = next((r["mpx_s"] for r in mine if r["tile"] == 256 and r["batch"] == max(batches)), None)
        best = max(mine, key=lambda r: r["mpx_s"])
        if base:
            speedups[backend] = best["mpx_s"] / base
            print(f"{backend}: best tile {best['tile']} batch {best['batch']}, {speedups[backend]:.2f}x the 256 tile")
        seconds, described = measure(model, image, backend, None, None, args.repeats)
        defaults[backend] = {
            "chosen": described,
            "mpx_s": mpx / seconds,
            "fraction_of_best": mpx / seconds / best["mpx_s"],
        }
        print(f"{backend}: defaults ({described}): {mpx / seconds:.3f} Mpx/s, "
              f"{defaults[backend]['fraction_of_best']:.0%} of the best", flush=True)  # fmt: skip
    path = write_result("tile_choice", {"size": size, "quick": args.quick, "model": args.model or "unet2d_small",
                                        "rows": rows, "speedup_best_tile_vs_256": speedups,
                                        "defaults": defaults})  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
