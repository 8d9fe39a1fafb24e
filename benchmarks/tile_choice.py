"""Tile size and batch per CPU backend: megapixels/s of the tile loop for each, to choose the prediction tile.

Larger tiles waste less on the overlap (and, for valid nets, on the halo) but cost more memory per tile and
may leave a backend's threads or streams less busy; the batch of tiles trades the same way. This sweeps
both for every installed CPU backend with the benchmark network of ``predict.py`` (``unet2d_small``, batch
norm, random weights with non-trivial statistics) on one 2048x2048 image, gaussian blending, overlap 0.25,
labels as the output; each figure is the best of ``--repeats`` timed runs after a warm-up.

    python benchmarks/tile_choice.py                 # tiles 256, 384, 512, 768; batches 1, 4
    python benchmarks/tile_choice.py --quick         # 1024x1024, tiles 256 and 512, batch 4

Writes ``benchmarks/results/tile_choice.json``: Mpx/s per backend, tile and batch, and per backend the best
tile's speed-up over the 256 tile (batch 4), which is what the model file records by default.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result
from predict import make_model, normalise, synthetic


def measure(model: Any, image: Any, backend: str, tile: int, batch: int, repeats: int) -> float:
    """Best seconds of ``repeats`` predictions of ``image`` (``(H, W)`` uint8) after one warm-up."""
    from unetkit.infer import Predictor

    pred = Predictor(
        model, tile=tile, overlap=0.25, blend="gaussian", batch_size=batch, backend=backend, device="cpu",
        normalization={"kind": "none"},
    )  # fmt: skip
    x = normalise(image)[None]
    pred.predict(x[:, : 2 * tile, : 2 * tile])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred.predict(x)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    from unetkit.infer.select import installed_backends

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1024x1024, two tiles, one batch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", default=",".join(installed_backends()))
    args = parser.parse_args(argv)
    size = 1024 if args.quick else 2048
    tiles = (256, 512) if args.quick else (256, 384, 512, 768)
    batches = (4,) if args.quick else (1, 4)
    print(f"machine: {machine()}")
    model = make_model()
    image = synthetic((size, size))
    mpx = size * size / 1e6
    rows: list[dict[str, Any]] = []
    speedups: dict[str, float] = {}
    for backend in args.backends.split(","):
        for batch in batches:
            for tile in tiles:
                seconds = measure(model, image, backend, tile, batch, args.repeats)
                rows.append({"backend": backend, "tile": tile, "batch": batch, "mpx_s": mpx / seconds})
                print(f"{backend:12s} tile {tile:4d} batch {batch}: {mpx / seconds:.3f} Mpx/s", flush=True)
        mine = [r for r in rows if r["backend"] == backend]
        base = next((r["mpx_s"] for r in mine if r["tile"] == 256 and r["batch"] == max(batches)), None)
        best = max(mine, key=lambda r: r["mpx_s"])
        if base:
            speedups[backend] = best["mpx_s"] / base
            print(f"{backend}: best tile {best['tile']} batch {best['batch']}, {speedups[backend]:.2f}x the 256 tile")
    path = write_result("tile_choice", {"size": size, "quick": args.quick, "rows": rows,
                                        "speedup_best_tile_vs_256": speedups})  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
