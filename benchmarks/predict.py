"""Prediction benchmark: unetkit's tiler against MONAI's ``sliding_window_inference``, in one run.

1. Throughput (megapixels/s) on a 4096x4096 image: same network and weights (unet2d_small), same tile
   (= MONAI's roi), same overlap, gaussian blending, same batch of tiles, labels as the final output.
2. Peak RSS on a 20000x20000 uint8 tiled TIFF (unetkit streams it to a TIFF), each tool in its own
   subprocess. MONAI needs the whole image and a full-size float32 output in memory, so it is measured on
   smaller images and extrapolated linearly in the pixel count (said so in the table).
3. Achieved GFLOP/s (conv FLOPs from ``torch.utils.flop_counter``) as a fraction of this machine's fp32
   matmul peak (the best large fp32 matmul of torch, ONNX Runtime and OpenVINO, measured in the same run),
   and the network's own ceiling: each fp32 graph backend running one batch of tiles over and over (no
   tiling, reading or blending), at batch 1 and the shared batch. At the fastest of those the tiles alone need
   ``FLOPs / ceiling`` seconds at the shared tile and overlap, whatever the tiler: the report says whether the
   3x-MONAI goal of 4. fits above that bound.
4. The whole process: wall seconds of ``unetkit predict MODEL image.tif --out O`` (the CLI as users run it:
   imports, model file, backend choice, graph export or cache, reading the TIFF, tiles, writing the labels),
   with an empty cache (first run on a machine) and with the cache warm (every later run), against MONAI's
   inference alone (section 1: the issue's reference) and against a MONAI script doing the same job as a
   process (imports, weights, read the TIFF, ``sliding_window_inference``, write the labels). Also
   ``unetkit predict`` as a user gets it, with no tile or batch flags on a model file that records no tile
   (its default tile and per-backend batch, docs/prediction.md), against MONAI's inference at the shared tile
   and at that same default tile.

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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name

HERE = Path(__file__).resolve().parent
TILE, OVERLAP, BATCH = 256, 0.25, 4
DEFAULT_TILE = 512  # unetkit.infer.tiling.default_tile(2), checked in main()


def make_model(path: Path | None = None, *, record_tile: bool = True) -> torch.nn.Module:
    """The benchmark network; with ``path`` also its model file, recording the shared tile unless
    ``record_tile`` is false (then unetkit's own default tile applies, as for a trained model's)."""
    from unetkit import create_model, save_model

    torch.manual_seed(0)
    model = create_model("unet2d_small").eval()
    # Give the batch norms non-trivial statistics so the network is not degenerate.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    if path is not None:
        save_model(path, model, tile_size=[TILE, TILE] if record_tile else None)
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
def unetkit_run(
    model: torch.nn.Module, image: np.ndarray, backend: str, precision: str = "fp32"
) -> tuple[np.ndarray, float, int]:
    from unetkit.infer import Predictor

    pred = Predictor(
        model, tile=TILE, overlap=OVERLAP, blend="gaussian", batch_size=BATCH, backend=backend, device="cpu",
        normalization={"kind": "none"}, precision=precision,
    )  # fmt: skip
    pred.predict(normalise(image[:512, :512])[None])  # warm-up (and, for onnxruntime, the export)
    t0 = time.perf_counter()
    labels = pred.predict(normalise(image)[None])  # normalisation is part of the timed work for both tools
    return labels, time.perf_counter() - t0, pred.plan(image.shape).num_tiles


def monai_run(model: torch.nn.Module, image: np.ndarray, tile: int = TILE) -> tuple[np.ndarray, float]:
    from monai.inferers import sliding_window_inference

    def run(img: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(normalise(img))[None, None]
        with torch.inference_mode():
            logits = sliding_window_inference(
                x, (tile, tile), BATCH, model, overlap=OVERLAP, mode="gaussian", progress=False
            )  # fmt: skip
            return torch.softmax(logits, 1).argmax(1)[0].to(torch.uint8).numpy()

    run(image[:512, :512])
    t0 = time.perf_counter()
    labels = run(image)
    return labels, time.perf_counter() - t0


def make_int8(model: torch.nn.Module, tmp: Path) -> None:
    """Calibrate the INT8 graph of ``model`` (cached for ``precision="int8"``) on synthetic images.

    The benchmark's network has random weights, so its labels are near ties everywhere and INT8 flips many
    of them: the guard is switched off here (tolerance 1) and the label agreement is reported instead.
    """
    from unetkit.data.io import write_image
    from unetkit.infer.quantize import CalibrationSet, export_int8

    paths = []
    for seed in range(4):
        paths.append(tmp / f"calib{seed}.tif")
        write_image(paths[-1], normalise(synthetic((512, 512), seed=100 + seed))[None])
    export_int8(model, CalibrationSet(paths[:3], paths[3:], "synthetic"), tolerance=1.0, tile=TILE, batch_size=BATCH)


def _best_seconds(run: Callable[[], object], reps: int) -> float:
    run()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peaks(n: int = 4096, reps: int = 5) -> dict[str, float]:
    """GFLOP/s of an ``n x n`` fp32 matmul in each installed library (the best of ``reps``).

    The machine's peak is the best of them: torch's BLAS (MKL) does not reach it on every CPU (on AMD EPYC
    VMs the convolutions of the tile loop ran faster than torch's matmul), ONNX Runtime's MLAS and
    OpenVINO's oneDNN are measured beside it, each in fp32 (as the tile loop it is compared with).
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    flop = 2 * n**3
    peaks = {"torch": flop / _best_seconds(lambda: torch.matmul(a, b), reps) / 1e9}
    onnx_model = _matmul_onnx(n)
    an, bn = a.numpy(), b.numpy()
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
        peaks["onnxruntime"] = flop / _best_seconds(lambda: session.run(None, {"a": an, "b": bn}), reps) / 1e9
    except ImportError:
        pass
    try:
        import openvino as ov

        core = ov.Core()
        # f32 pinned: on CPUs with AVX512-BF16 or AMX OpenVINO would otherwise run the matmul in bf16
        # (315 against 194 GFLOP/s on the AMD EPYC VM), which is not the fp32 peak
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        compiled = core.compile_model(core.read_model(onnx_model, b""), "CPU", config)
        peaks["openvino"] = flop / _best_seconds(lambda: compiled({"a": an, "b": bn}), reps) / 1e9
    except ImportError:
        pass
    return peaks


def _matmul_onnx(n: int) -> bytes:
    """An ONNX graph of one ``(n, n) @ (n, n)`` fp32 MatMul with inputs ``a``, ``b``."""
    import onnx
    from onnx import TensorProto, helper

    spec = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in ("a", "b", "c")]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def network_ceiling(model: torch.nn.Module, backend: str, batch: int, calls: int = 40) -> float:
    """Seconds per tile of ``backend`` (fp32) running the same ``(batch, 1, TILE, TILE)`` input ``calls`` times,
    the best of two passes: the network alone, no tiling around it."""
    from unetkit.infer import Predictor

    pred = Predictor(model, tile=TILE, batch_size=batch, backend=backend, device="cpu", normalization={"kind": "none"})
    x = np.random.default_rng(0).random((batch, 1, TILE, TILE), dtype=np.float32)
    pred.backend(x)  # compile / warm-up
    return _best_seconds(lambda: [pred.backend(x) for _ in range(calls)], 2) / (calls * batch)


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


def child_process(argv: list[str]) -> None:
    """The MONAI side of the whole-process figure: ``--child-process MODEL IMAGE OUT`` reads, infers, writes."""
    model_path, image_path, out = argv
    import tifffile

    from unetkit.modelfile import load_model

    model = load_model(model_path).eval()
    image = tifffile.imread(image_path)
    labels, _ = monai_run(model, image)
    tifffile.imwrite(out, labels, compression="zlib")


def whole_process(
    model_path: Path, image: Path, tmp: Path, repeats: int, defaults_model: Path | None = None
) -> dict[str, float]:
    """Wall seconds of each tool as a fresh process (see the module docstring, 4): cold, warm (best of
    ``repeats``), and the MONAI script (best of ``repeats``); with ``defaults_model`` (a model file with no
    recorded tile) also ``unetkit predict`` warm with no tile or batch flags: the tile and batch a user gets."""
    exe = Path(sys.executable).with_name("unetkit")
    cache = tmp / "cache-process"
    env = {**os.environ, "UNETKIT_CACHE_DIR": str(cache)}

    def unetkit_once(k: int, defaults: bool = False) -> float:
        cmd = [str(exe), "predict", str(defaults_model if defaults else model_path), str(image),
               "--out", str(tmp / f"p{k}"), "--quiet"]  # fmt: skip
        if not defaults:
            cmd += ["--tile", str(TILE), "--overlap", str(OVERLAP), "--batch-size", str(BATCH)]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"unetkit predict failed:\n{res.stderr[-3000:]}")
        return time.perf_counter() - t0

    def monai_once(k: int) -> float:
        cmd = [sys.executable, __file__, "--child-process", str(model_path), str(image), str(tmp / f"m{k}.tif")]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"MONAI process failed:\n{res.stderr[-3000:]}")
        return time.perf_counter() - t0

    cold = unetkit_once(0)
    if defaults_model is not None:
        unetkit_once(0, defaults=True)  # its own graph export and cache entry: the warm runs below reuse it
    warm, monai, own = float("inf"), float("inf"), float("inf")
    for k in range(repeats):
        monai = min(monai, monai_once(k))
        warm = min(warm, unetkit_once(k + 1))
        if defaults_model is not None:
            own = min(own, unetkit_once(k + 1, defaults=True))
    times = {"unetkit_cold_s": cold, "unetkit_warm_s": warm, "monai_process_s": monai}
    if defaults_model is not None:
        times["unetkit_defaults_warm_s"] = own
    return times


def measure(tool: str, model_path: Path, image_path: Path, out: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", tool, str(model_path), str(image_path), str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ})
    if res.returncode != 0:
        raise RuntimeError(f"{tool} child failed:\n{res.stderr[-3000:]}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small images: a smoke run of a minute")
    parser.add_argument("--no-memory", action="store_true", help="throughput and FLOP/s only (no peak-RSS runs)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--child-process", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.child_process:
        child_process(args.child_process)
        return
    from unetkit.infer.tiling import default_tile

    assert default_tile(2) == DEFAULT_TILE, "update DEFAULT_TILE to unetkit's default tile"
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
    # exported graphs go to a fresh cache (the export is not timed: each tool's warm-up makes it)
    cache = tempfile.TemporaryDirectory(prefix="unetkit-bench-cache-")
    os.environ["UNETKIT_CACHE_DIR"] = cache.name
    import importlib.util

    variants = [("onnxruntime", "fp32"), ("torch", "fp32")]
    if importlib.util.find_spec("openvino") is not None:
        variants.insert(1, ("openvino", "fp32"))
    make_int8(model, Path(cache.name))
    variants += [(b, "int8") for b, _ in variants if b != "torch"]

    # 1. throughput: the tools alternate and each keeps its best time, so load from other processes on a
    # shared machine hits them alike.
    rows = []
    best: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    tiles = 0
    for _ in range(1 if args.quick else 2):
        ref, t = monai_run(model, image)
        best["monai"] = min(best.get("monai", float("inf")), t)
        for backend, precision in variants:
            name = backend if precision == "fp32" else f"{backend}_int8"
            outputs[name], t, tiles = unetkit_run(model, image, backend, precision)
            best[name] = min(best.get(name, float("inf")), t)
    t_monai = best["monai"]
    rows.append(("MONAI sliding_window_inference", mp / t_monai, 1.0, tiles / t_monai))
    speeds = {}
    for name in (k for k in best if k != "monai"):
        t = best[name]
        speeds[name] = (mp / t, tiles, t, float((outputs[name] == ref).mean()))
        rows.append((f"unetkit ({name.replace('_', ' ')})", mp / t, t_monai / t, tiles / t))
    results["throughput"] = {
        "image": speed_size, "monai_mp_s": mp / t_monai,
        **{f"unetkit_{k}_mp_s": v[0] for k, v in speeds.items()},
        **{f"unetkit_{k}_tiles_s": v[1] / v[2] for k, v in speeds.items()},
        **{f"label_agreement_{k}": v[3] for k, v in speeds.items()},
        "speedup_default": speeds["onnxruntime"][0] / (mp / t_monai),
    }  # fmt: skip

    # 3. FLOP/s
    peaks = matmul_peaks()
    peak = max(peaks.values())
    flops = tile_flops(model)
    fp32_best = min((k for k in speeds if not k.endswith("_int8")), key=lambda k: speeds[k][2])
    _, tiles, t_best, _ = speeds[fp32_best]
    achieved = flops * tiles / t_best / 1e9
    results["flops"] = {
        "backend": fp32_best, "tile_gflop": flops / 1e9, "tiles": tiles, "achieved_gflop_s": achieved,
        "matmul_peak_gflop_s": peak, "matmul_peaks_gflop_s": peaks, "fraction_of_peak": achieved / peak,
    }  # fmt: skip
    # the network's ceiling: each fp32 graph backend on one batch, no tiler (batch 1 and the shared one)
    graphs = [b for b, p in variants if p == "fp32" and b != "torch"]
    per_tile = {
        (g, b): network_ceiling(model, g, b, 10 if args.quick else 40) for g in graphs for b in (1, BATCH)
    }  # fmt: skip
    fastest = min(per_tile.values())
    results["flops"].update(  # type: ignore[attr-defined]
        ceiling_gflop_s={f"{g} batch {b}": flops / s / 1e9 for (g, b), s in per_tile.items()},
        tiles_alone_at_ceiling_s=fastest * tiles,
        ratio_tile_loop_to_network_ceiling=achieved / (flops / fastest / 1e9),
    )  # fmt: skip

    # 4. the whole process, start-up included
    with tempfile.TemporaryDirectory(prefix="unetkit-bench-proc-") as tmp:
        tmpd = Path(tmp)
        model_path, img_path = tmpd / "m.safetensors", tmpd / "image.tif"
        make_model(model_path)
        own_path = tmpd / "own.safetensors"
        make_model(own_path, record_tile=False)
        import tifffile

        tifffile.imwrite(img_path, image)
        proc = whole_process(model_path, img_path, tmpd, 1 if args.quick else 2, own_path)
    # MONAI at unetkit's default tile too, so the defaults' figure is also compared at equal tiles
    t_monai_own = min(monai_run(model, image, DEFAULT_TILE)[1] for _ in range(1 if args.quick else 2))
    results["process"] = {
        "image": speed_size, **proc, "monai_inference_s": t_monai,
        "monai_inference_default_tile_s": t_monai_own, "default_tile": DEFAULT_TILE,
        "speedup_process_vs_monai_inference": t_monai / proc["unetkit_warm_s"],
        "speedup_process_vs_monai_process": proc["monai_process_s"] / proc["unetkit_warm_s"],
        "speedup_cold_process_vs_monai_process": proc["monai_process_s"] / proc["unetkit_cold_s"],
        "speedup_defaults_process_vs_monai_inference": t_monai / proc["unetkit_defaults_warm_s"],
        "speedup_defaults_process_vs_monai_inference_same_tile": t_monai_own / proc["unetkit_defaults_warm_s"],
    }  # fmt: skip

    # 2. memory, each in its own process
    cache.cleanup()
    if args.no_memory:
        _report(results, rows, speed_size, tiles, t_best, achieved, peak, None)
        return
    with tempfile.TemporaryDirectory(prefix="unetkit-bench-") as tmp:
        tmpd = Path(tmp)
        os.environ["UNETKIT_CACHE_DIR"] = str(tmpd / "cache")  # the children's exported graphs
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

    _report(results, rows, speed_size, tiles, t_best, achieved, peak, monai_sizes)


def _report(
    results: dict[str, object], rows: list[tuple[str, float, float, float]], speed_size: int, tiles: int,
    t_best: float, achieved: float, peak: float, monai_sizes: tuple[int, int] | None,
) -> None:  # fmt: skip
    """Print the tables and write benchmarks/results/predict.json."""
    print(f"\nthroughput on {speed_size}x{speed_size} (tile {TILE}, overlap {OVERLAP}, gaussian, batch {BATCH}):")
    print(f"{'tool':34s} {'MP/s':>8s} {'tiles/s':>8s} {'vs MONAI':>9s}")
    for name, rate, ratio, tiles_s in rows:
        print(f"{name:34s} {rate:8.2f} {tiles_s:8.2f} {ratio:8.2f}x")
    if "process" in results:
        pr = results["process"]
        print(
            f"\nwhole process on {pr['image']}x{pr['image']} TIFF (`unetkit predict`, start-up included): "  # type: ignore[index]
            f"cold cache {pr['unetkit_cold_s']:.1f}s, warm {pr['unetkit_warm_s']:.1f}s; "  # type: ignore[index]
            f"MONAI inference alone {pr['monai_inference_s']:.1f}s, MONAI as a process {pr['monai_process_s']:.1f}s "  # type: ignore[index]
            f"-> {pr['speedup_process_vs_monai_inference']:.2f}x MONAI's inference, "  # type: ignore[index]
            f"{pr['speedup_process_vs_monai_process']:.2f}x its process"  # type: ignore[index]
        )
        print(
            f"with unetkit's defaults (no --tile/--batch-size; tile {pr['default_tile']}): "  # type: ignore[index]
            f"warm {pr['unetkit_defaults_warm_s']:.1f}s -> {pr['speedup_defaults_process_vs_monai_inference']:.2f}x "  # type: ignore[index]
            f"MONAI's inference at tile {TILE}, "
            f"{pr['speedup_defaults_process_vs_monai_inference_same_tile']:.2f}x MONAI's at tile "  # type: ignore[index]
            f"{pr['default_tile']} ({pr['monai_inference_default_tile_s']:.1f}s)"  # type: ignore[index]
        )
    f = results["flops"]
    each = ", ".join(f"{k} {v:.0f}" for k, v in f["matmul_peaks_gflop_s"].items())  # type: ignore[index]
    print(
        f"\nFLOPs ({f['backend']}, the fastest fp32): {f['tile_gflop']:.2f} GFLOP/tile x {tiles} tiles "  # type: ignore[index]
        f"in {t_best:.1f}s = {achieved:.1f} GFLOP/s; "
        f"fp32 matmul peak {peak:.1f} GFLOP/s ({each}) -> {achieved / peak:.0%} of peak"
    )
    ceil = f["ceiling_gflop_s"]  # type: ignore[index]
    print(
        "network ceiling (fp32, one batch over and over, no tiler): "
        + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in ceil.items())
        + f"; the {tiles} tiles alone need >= {f['tiles_alone_at_ceiling_s']:.1f}s"  # type: ignore[index]
    )
    if "process" in results:
        need = results["process"]["monai_inference_s"] / 3  # type: ignore[index]
        fits = "fits" if f["tiles_alone_at_ceiling_s"] < need else "does NOT fit"  # type: ignore[index]
        print(f"3x MONAI's inference needs the whole process in <= {need:.1f}s: the tiles' bound {fits}")
    if monai_sizes is not None:
        m = results["memory"]
        monai_pts = m["monai_measured"]  # type: ignore[index]
        big_size = m["image"]  # type: ignore[index]
        print(
            f"\npeak RSS on {big_size}x{big_size} uint8 TIFF: unetkit {m['unetkit_peak_rss_gb']:.2f} GB "  # type: ignore[index]
            f"(after imports {m['unetkit_baseline_rss_gb']:.2f} GB) "  # type: ignore[index]
            f"({m['unetkit_seconds']:.0f}s); MONAI {m['monai_extrapolated_peak_rss_gb']:.2f} GB "  # type: ignore[index]
            f"(extrapolated linearly from {monai_sizes} measured: "
            f"{', '.join(f'{r:.2f} GB' for _, r in monai_pts)}) -> ratio {m['ratio']:.3f}"  # type: ignore[index]
        )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "predict.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out / 'predict.json'}")


if __name__ == "__main__":
    main()
