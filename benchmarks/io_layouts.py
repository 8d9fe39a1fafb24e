"""I/O layouts benchmark: `unetkit predict` of one small model on a huge image in every layout, in one run.

A uint8 image (20000 x 20000; 2000 x 2000 with ``--quick``) is written as: contiguous TIFF (one strip, the
default of tifffile/ImageJ), striped with 16 rows, striped LZW, tiled 512, tiled deflate, zarr and OME-Zarr.
Each is predicted in its own subprocess (labels streamed to a TIFF); the table gives Mpx/s and peak RSS,
and the same prediction from an in-memory array as the reference. Goal: every layout within 15% of the
in-memory Mpx/s, peak RSS <= 1 GB.

Usage: python benchmarks/io_layouts.py [--quick]   (results: benchmarks/results/io_layouts.json)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LAYOUTS = {
    "contiguous": {},
    "striped 16 rows": {"rowsperstrip": 16},
    "striped LZW": {"rowsperstrip": 16, "compression": "lzw"},
    "tiled 512": {"tile": (512, 512)},
    "tiled deflate": {"tile": (512, 512), "compression": "zlib"},
}


def make_image(n: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) if n <= 4000 else (None, None)
    if y is None:  # 20000^2: build it in row bands (a full float grid would take 3 GB)
        img = np.empty((n, n), np.uint8)
        for a in range(0, n, 2000):
            yy, xx = np.mgrid[a : a + 2000, 0:n].astype(np.float32)
            img[a : a + 2000] = (127 + 120 * np.sin(yy / 37) * np.cos(xx / 53)).astype(np.uint8)
        return img
    return (127 + 120 * np.sin(y / 37) * np.cos(x / 53)).astype(np.uint8)


def write_layouts(img: np.ndarray, folder: Path) -> dict[str, Path]:
    import tifffile
    import zarr

    paths: dict[str, Path] = {}
    for name, kw in LAYOUTS.items():
        p = folder / (name.replace(" ", "_") + ".tif")
        tifffile.imwrite(p, img, bigtiff=img.nbytes > 2**31 - 2**25, **kw)
        paths[name] = p
    z = zarr.create_array(str(folder / "plain.zarr"), shape=img.shape, chunks=(512, 512), dtype="uint8")
    z[...] = img
    paths["zarr"] = folder / "plain.zarr"
    g = zarr.open_group(str(folder / "img.ome.zarr"), mode="w", zarr_format=2)
    a = g.create_array("0", shape=img.shape, chunks=(1024, 1024), dtype="uint8")
    a[...] = img
    g.attrs["multiscales"] = [{
        "version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}],
    }]  # fmt: skip
    paths["OME-Zarr"] = folder / "img.ome.zarr"
    np.save(folder / "mem.npy", img)
    paths["in memory"] = folder / "mem.npy"
    return paths


def run_one(model: str, image: str, out: str) -> None:
    """Child process: predict ``image`` (or the in-memory array) and print Mpx/s and peak RSS."""
    sys.path.insert(0, str(HERE))
    from _common import peak_rss_mib

    from unetkit.infer import files

    predictor = files.load_predictor(model, tile=256, batch_size=4, device="cpu")
    t0 = time.perf_counter()
    if image.endswith("mem.npy"):
        arr = np.load(image)[None]  # in memory, outside the timing of a file read
        labels = np.empty(arr.shape[1:], np.uint8)
        t0 = time.perf_counter()
        for slab in predictor.iter_slabs(arr):  # the same work as a file's prediction, labels kept in memory
            labels[slab.start : slab.start + slab.proba.shape[1]] = slab.labels()
        n = arr.shape[1] * arr.shape[2]
    else:
        res = files.predict_file(predictor, image, out)
        n = int(np.prod(res.shape[1:]))
    secs = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: Linux carries the parent's high-water mark (here: the generated image) across
    # fork + exec into ru_maxrss, so it would report the parent's peak, not this process's
    rss = peak_rss_mib() / 1024
    print(json.dumps({"mpx_s": n / 1e6 / secs, "seconds": secs, "peak_rss_gb": rss}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2000 x 2000 instead of 20000 x 20000")
    ap.add_argument("--size", type=int, default=None, help="image side in pixels (overrides --quick)")
    ap.add_argument("--layouts", default=None, help="comma-separated subset of the layouts (default: all)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_one(*args.child)
        return
    import torch

    from unetkit import create_model, save_model

    n = args.size or (2000 if args.quick else 20000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        model = folder / "m.safetensors"
        save_model(model, create_model("unet2d_small", depth=3, width=8).eval(), tile_size=[256, 256])
        paths = write_layouts(make_image(n), folder)
        rows = {}
        wanted = set(args.layouts.split(",")) if args.layouts else None
        for name, p in paths.items():
            if wanted is not None and name not in wanted:
                continue
            out = folder / ("out_" + name.replace(" ", "_"))
            cmd = [sys.executable, __file__, "--child", str(model), str(p), str(out)]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rows[name] = json.loads(line)
            print(
                f"{name:18s} {rows[name]['mpx_s']:7.2f} Mpx/s  peak RSS {rows[name]['peak_rss_gb']:.2f} GB", flush=True
            )
    ref = rows["in memory"]["mpx_s"] if "in memory" in rows else None
    for r in rows.values():
        if ref:
            r["ratio_vs_memory"] = r["mpx_s"] / ref
    sys.path.insert(0, str(HERE))
    from _common import write_result

    name = "io_layouts_quick" if n < 20000 else "io_layouts" if wanted is None else "io_layouts_subset"
    write_result(name, {"size": n, "quick": n < 20000, "rows": rows})


if __name__ == "__main__":
    main()
