"""Prediction benchmark: unetkit's tiler against MONAI's ``sliding_window_inference``, in one run.

1. Throughput (megapixels/s) on a 4096x4096 image: same network and weights (unet2d_small), same tile
   (= MONAI's roi), same overlap, gaussian blending, same batch of tiles, labels as the final output.
2. Peak RSS on a 20000x20000 uint8 tiled TIFF (unetkit streams it to a TIFF), each tool in its own
   subprocess. MONAI needs the whole image and a full-size float32 output in memory, so it is measured on
   smaller images and extrapolated linearly in the pixel count (said so in the table).
3. Achieved GFLOP/s (conv FLOPs from ``torch.utils.flop_counter``) as a fraction of this machine's fp32
   matmul peak (a large ``torch.matmul``, measured in the same run).

Usage: python benchmarks/predict.py [--quick]   (results: benchmarks/results/predict.json)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name

HERE = Path(__file__).resolve().parent
TILE, OVERLAP, BATCH = 256, 0.25, 4


def make_model(path: Path | None = None) -> torch.nn.Module:
    from unetkit import create_model, save_model

    torch.manual_seed(0)
    model = create_model("unet2d_small").eval()
    # Give the batch norms non-trivial statistics so the network is not degenerate.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    if path is not None:
        save_model(path, model, tile_size=[TILE, TILE])
    return model


def synthetic(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A uint8 image with blob-like structure (so labels are not all one class)."""
    rng = np.random.default_rng(seed)
    small = rng.random((shape[0] // 32 + 2, shape[1] // 32 + 2)).astype(np.float32)
    big = np.kron(small, np.ones((32, 32), np.float32))[: shape[0], : shape[1]]
    return (big * 200 + rng.integers(0, 55, shape)).astype(np.uint8)


def normalise(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


# ---------------------------------------------------------------------------------------- throughput
def unetkit_run(model: torch.nn.Module, image: np.ndarray, backend: str) -> tuple[np.ndarray, float, int]:
    from unetkit.infer import Predictor

    pred = Predictor(
        model, tile=TILE, overlap=OVERLAP, blend="gaussian", batch_size=BATCH, backend=backend, device="cpu",
        normalization={"kind": "none"},
    )  # fmt: skip
    pred.predict(normalise(image[:512, :512])[None])  # warm-up (and, for onnxruntime, the export)
    t0 = time.perf_counter()
    labels = pred.predict(normalise(image)[None])  # normalisation is part of the timed work for both tools
    return labels, time.perf_counter() - t0, pred.plan(image.shape).num_tiles


def monai_run(model: torch.nn.Module, image: np.ndarray) -> tuple[np.ndarray, float]:
    from monai.inferers import sliding_window_inference

    def run(img: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(normalise(img))[None, None]
        with torch.inference_mode():
            logits = sliding_window_inference(
                x, (TILE, TILE), BATCH, model, overlap=OVERLAP, mode="gaussian", progress=False
            )  # fmt: skip
            return torch.softmax(logits, 1).argmax(1)[0].to(torch.uint8).numpy()

    run(image[:512, :512])
    t0 = time.perf_counter()
    labels = run(image)
    return labels, time.perf_counter() - t0


def matmul_peak(n: int = 4096, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def tile_flops(model: torch.nn.Module) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, TILE, TILE))
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------------------------ memory
def peak_rss() -> int:
    """This process's peak resident memory in bytes: VmHWM (``ru_maxrss`` would include the parent's
    memory at fork time, since Linux carries it across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_big_tiff(path: Path, size: int) -> None:
    import tifffile

    tiles_per_side = -(-size // 512)

    def tiles():  # type: ignore[no-untyped-def]
        for i in range(tiles_per_side):
            for j in range(tiles_per_side):
                yield synthetic((512, 512), seed=i * tiles_per_side + j)

    tifffile.imwrite(path, tiles(), shape=(size, size), dtype=np.uint8, tile=(512, 512), bigtiff=True)


def child(argv: list[str]) -> None:
    """Run one tool in this (fresh) process and print its peak RSS: ``child unetkit|monai MODEL IMAGE OUT``."""
    tool, model_path, image_path, out = argv
    from unetkit.modelfile import load_model

    model = load_model(model_path)
    if tool.startswith("unetkit"):
        import onnxruntime  # noqa: F401  (each tool imports what it needs before the baseline)
    else:
        import monai  # noqa: F401
    baseline = peak_rss()
    t0 = time.perf_counter()
    if tool.startswith("unetkit"):
        from unetkit.infer import Predictor, predict_file

        backend = tool.split(":")[1]
        pred = Predictor(model, tile=TILE, overlap=OVERLAP, batch_size=BATCH, backend=backend, device="cpu")
        predict_file(pred, image_path, out)
    else:
        from unetkit.data.io import read_image

        image = read_image(image_path).array[0]
        monai_run(model, image)
    rss = peak_rss()
    print(json.dumps({"peak_rss_bytes": rss, "baseline_rss_bytes": baseline, "seconds": time.perf_counter() - t0}))


def measure(tool: str, model_path: Path, image_path: Path, out: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", tool, str(model_path), str(image_path), str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ})
    if res.returncode != 0:
        raise RuntimeError(f"{tool} child failed:\n{res.stderr[-3000:]}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small images: a smoke run of a minute")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    speed_size = 1024 if args.quick else 4096
    big_size = 3000 if args.quick else 20000
    monai_sizes = (1024, 2048) if args.quick else (2048, 4096)
    results: dict[str, object] = {
        "machine": cpu_name(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "quick": args.quick, "tile": TILE, "overlap": OVERLAP,
        "batch": BATCH, "model": "unet2d_small",
    }  # fmt: skip
    model = make_model()
    image = synthetic((speed_size, speed_size))
    mp = speed_size**2 / 1e6

    # 1. throughput: the tools alternate and each keeps its best time, so load from other processes on a
    # shared machine hits them alike.
    rows = []
    best: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    tiles = 0
    for _ in range(1 if args.quick else 2):
        ref, t = monai_run(model, image)
        best["monai"] = min(best.get("monai", float("inf")), t)
        for backend in ("onnxruntime", "torch"):
            outputs[backend], t, tiles = unetkit_run(model, image, backend)
            best[backend] = min(best.get(backend, float("inf")), t)
    t_monai = best["monai"]
    rows.append(("MONAI sliding_window_inference", mp / t_monai, 1.0))
    speeds = {}
    for backend in ("onnxruntime", "torch"):
        t = best[backend]
        speeds[backend] = (mp / t, tiles, t, float((outputs[backend] == ref).mean()))
        rows.append((f"unetkit ({backend})", mp / t, t_monai / t))
    results["throughput"] = {
        "image": speed_size, "monai_mp_s": mp / t_monai,
        **{f"unetkit_{k}_mp_s": v[0] for k, v in speeds.items()},
        **{f"label_agreement_{k}": v[3] for k, v in speeds.items()},
        "speedup_default": speeds["onnxruntime"][0] / (mp / t_monai),
    }  # fmt: skip

    # 3. FLOP/s
    peak = matmul_peak()
    flops = tile_flops(model)
    _, tiles, t_best, _ = speeds["onnxruntime"]
    achieved = flops * tiles / t_best / 1e9
    results["flops"] = {
        "tile_gflop": flops / 1e9, "tiles": tiles, "achieved_gflop_s": achieved, "matmul_peak_gflop_s": peak,
        "fraction_of_peak": achieved / peak,
    }  # fmt: skip

    # 2. memory, each in its own process
    with tempfile.TemporaryDirectory(prefix="unetkit-bench-") as tmp:
        tmpd = Path(tmp)
        model_path = tmpd / "m.safetensors"
        make_model(model_path)
        big = tmpd / "big.tif"
        write_big_tiff(big, big_size)
        mem_u = measure("unetkit:onnxruntime", model_path, big, tmpd / "out")
        monai_pts = []
        for s in monai_sizes:
            p = tmpd / f"m{s}.tif"
            write_big_tiff(p, s)
            res = measure("monai", model_path, p, tmpd / "out_m")
            monai_pts.append((s * s, res["peak_rss_bytes"]))
            monai_base = res["baseline_rss_bytes"]
        (x0, y0), (x1, y1) = monai_pts
        slope = (y1 - y0) / (x1 - x0)
        monai_big = y1 + slope * (big_size**2 - x1)
    results["memory"] = {
        "image": big_size, "unetkit_peak_rss_gb": mem_u["peak_rss_bytes"] / 1e9,
        "unetkit_baseline_rss_gb": mem_u["baseline_rss_bytes"] / 1e9,
        "unetkit_seconds": mem_u["seconds"], "monai_measured": [(s, r / 1e9) for s, r in monai_pts],
        "monai_baseline_rss_gb": monai_base / 1e9, "monai_extrapolated_peak_rss_gb": monai_big / 1e9,
        "ratio": mem_u["peak_rss_bytes"] / monai_big,
    }  # fmt: skip

    print(f"\nthroughput on {speed_size}x{speed_size} (tile {TILE}, overlap {OVERLAP}, gaussian, batch {BATCH}):")
    print(f"{'tool':34s} {'MP/s':>8s} {'vs MONAI':>9s}")
    for name, rate, ratio in rows:
        print(f"{name:34s} {rate:8.2f} {ratio:8.2f}x")
    f = results["flops"]
    print(
        f"\nFLOPs: {f['tile_gflop']:.2f} GFLOP/tile x {tiles} tiles in {t_best:.1f}s = {achieved:.1f} GFLOP/s; "  # type: ignore[index]
        f"fp32 matmul peak {peak:.1f} GFLOP/s -> {achieved / peak:.0%} of peak"
    )
    m = results["memory"]
    print(
        f"\npeak RSS on {big_size}x{big_size} uint8 TIFF: unetkit {m['unetkit_peak_rss_gb']:.2f} GB "  # type: ignore[index]
        f"(after imports {m['unetkit_baseline_rss_gb']:.2f} GB) "  # type: ignore[index]
        f"({m['unetkit_seconds']:.0f}s); MONAI {m['monai_extrapolated_peak_rss_gb']:.2f} GB "  # type: ignore[index]
        f"(extrapolated linearly from {monai_sizes} measured: "
        f"{', '.join(f'{r / 1e9:.2f} GB' for _, r in monai_pts)}) -> ratio {m['ratio']:.3f}"  # type: ignore[index]
    )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "predict.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out / 'predict.json'}")


if __name__ == "__main__":
    main()
