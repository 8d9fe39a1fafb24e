"""Training memory benchmark: peak RSS of `unetkit train` on a dataset far larger than memory vs a small one.

Two generated 2D datasets of 4096 x 4096 uint8 TIFF pairs (one contiguous strip each, the most common
layout): a small one (3 pairs, ~100 MB on disk, loaded into memory: the default for a set that fits) and a
large one (256 pairs, ~8.6 GB on disk, 52 GB decoded: the default ``data.read: auto`` streams it, reading
patches from the files). Each trains the same few steps of the same small network in its own process (no
plan: fixed model, patch, batch; one validation image); the table gives peak RSS and wall time.

Goal: the large set's peak RSS close to the small set's (it must not grow with the dataset).

Usage: python benchmarks/train_memory.py [--quick]   (--quick: 24 pairs of 1024^2; results:
benchmarks/results/train_memory.json)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import write_result  # noqa: E402

# the CLI, printing its own peak memory (VmHWM) at exit: ru_maxrss from wait4 would carry this parent's
UNETKIT = [
    sys.executable, "-c",
    "import atexit, sys; from pathlib import Path; "
    "atexit.register(lambda: print('VMHWM_KB', [l for l in Path('/proc/self/status').read_text().splitlines() "
    "if l.startswith('VmHWM:')][0].split()[1], flush=True)); "
    "from unetkit.cli import main; sys.argv = ['unetkit', *sys.argv[1:]]; main()",
]  # fmt: skip


def write_set(root: Path, pairs: int, side: int) -> int:
    """``pairs`` image/mask TIFF pairs of ``side``^2 pixels; returns the bytes on disk."""
    import tifffile

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    base = np.sin(yy / 23) * np.cos(xx / 31)
    for i in range(pairs):
        shifted = np.roll(base, (i * 37) % side, axis=1)
        mask = (shifted > 0.3).astype(np.uint8)
        rng = np.random.default_rng(i)
        noisy = (127 + 80 * shifted + rng.normal(0, 20, shifted.shape)).clip(0, 255).astype(np.uint8)
        tifffile.imwrite(root / "images" / f"p{i:04d}.tif", noisy)
        tifffile.imwrite(root / "masks" / f"p{i:04d}.tif", mask)
    return sum(f.stat().st_size for f in root.rglob("*.tif"))


def train(data: Path, out: Path, val_fraction: float, read: str = "auto") -> dict[str, float]:
    """One `unetkit train` process: a few fixed steps; its peak RSS (from wait4) and wall time."""
    cmd = [
        *UNETKIT, "train", str(data), "--out", str(out), "--no-plan",
        "--model", "unet2d_small", "--patch", "128", "--batch", "4", "--epochs", "1",
        "--set", "train.iterations_per_epoch=20", "--set", f"data.val_fraction={val_fraction}",
        "--set", "model.args.depth=3", "--set", "model.args.width=8",
        "--set", "data.weight_map.enabled=false", "--set", f"data.read={read}",
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    log = proc.stdout.read() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"unetkit train failed on {data}:\n{log[-3000:]}")
    hwm = [int(ln.split()[1]) for ln in log.splitlines() if ln.startswith("VMHWM_KB")]
    peak_gb = hwm[-1] / 2**20 if hwm else usage.ru_maxrss / 2**20
    reading = next((ln.split("INFO", 1)[-1].strip() for ln in log.splitlines() if "training data" in ln), "")
    return {"peak_rss_gb": peak_gb, "seconds": seconds, "reading": reading}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="24 pairs of 1024^2 (a smoke run)")
    ap.add_argument("--workdir", default=None, help="where to write the datasets (default: a temp folder)")
    args = ap.parse_args()
    side, small, large = (1024, 3, 24) if args.quick else (4096, 3, 256)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="unetkit-train-memory-"))
    rows = {}
    try:
        for name, pairs in (("small", small), ("large", large)):
            data = work / name
            t0 = time.perf_counter()
            disk = write_set(data, pairs, side)
            print(f"{name}: {pairs} pairs of {side}^2, {disk / 2**30:.2f} GiB on disk, written in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
            # one validation image in both runs (whole-image validation is the same work)
            # --quick: the large set is small enough for memory, so make it stream (the path under test)
            read = "disk" if args.quick and name == "large" else "auto"
            row = train(data, work / f"run_{name}", val_fraction=max(0.01, 1 / pairs), read=read)
            row.update(pairs=pairs, side=side, disk_gb=disk / 2**30, decoded_gb=pairs * side * side * 12 / 2**30)
            rows[name] = row
            print(f"  peak RSS {row['peak_rss_gb']:.2f} GB, {row['seconds']:.0f} s; {row['reading']}", flush=True)
            shutil.rmtree(data)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    ratio = rows["large"]["peak_rss_gb"] / rows["small"]["peak_rss_gb"]
    print(f"peak RSS large/small: {ratio:.2f}x", flush=True)
    write_result(
        "train_memory_quick" if args.quick else "train_memory",
        {"date": time.strftime("%Y-%m-%d"), "quick": args.quick, "rows": rows, "rss_ratio_large_over_small": ratio},
    )


if __name__ == "__main__":
    main()
