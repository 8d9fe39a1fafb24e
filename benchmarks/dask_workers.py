"""Dask prediction scaling: megapixels/s with 1 and with 2 workers of a real ``dask scheduler``.

A ``dask scheduler`` and N ``dask worker`` processes (1 thread each, started here as subprocesses on this
machine, as on a cluster) run ``unetkit.infer.dask_predict.predict_dask`` on one generated image stored as
zarr, read by the workers by path; the model is ``unet2d_small`` (random weights, the training default of
per-image z-score normalisation, default backend). Each worker count is timed twice after a warm-up image
(the workers build their predictor once), and the best time is kept. The ratio 2 workers / 1 worker says how
well prediction spreads over workers (at most 2; on a 2-core machine less, as the scheduler and client share
the cores).

    python benchmarks/dask_workers.py                          # 1536 x 1536 in 9 chunks of 512
    python benchmarks/dask_workers.py --size 768 --chunk 256   # a smoke run (9 chunks)

Writes ``benchmarks/results/dask_workers.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result

SRC = Path(__file__).resolve().parents[1] / "src"


@contextlib.contextmanager
def dask_cluster(n_workers: int, workdir: Path, timeout: float = 120.0) -> Iterator[str]:
    """A ``dask scheduler`` and ``n_workers`` ``dask worker`` processes (1 thread each) on localhost.

    The processes see this checkout's ``src`` first on ``PYTHONPATH`` (the code the client pickles must be the
    code the workers import). Yields the scheduler address (``tcp://127.0.0.1:PORT``) once all workers have
    joined; stops them (by process id) on exit.
    """
    import distributed

    workdir.mkdir(parents=True, exist_ok=True)
    scheduler_file = workdir / "scheduler.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "OMP_NUM_THREADS": "1",
    }
    dask = [sys.executable, "-m", "dask"]
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        log = (workdir / "scheduler.log").open("wb")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--scheduler-file", str(scheduler_file)],
                env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not scheduler_file.exists():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start: {(workdir / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.2)
        for i in range(n_workers):
            log = (workdir / f"worker{i}.log").open("wb")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [*dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--no-dashboard",
                     "--name", f"w{i}", "--memory-limit", "0", "--local-directory", str(workdir / f"w{i}")],
                    env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        address = str(json.loads(scheduler_file.read_text())["address"])
        with distributed.Client(address, timeout=timeout) as client:
            client.wait_for_workers(n_workers, timeout=timeout)
        yield address
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()


def make_inputs(root: Path, size: int, warmup: int) -> tuple[str, Path]:
    """A ``unet2d_small`` model file (z-score per image) and a ``(1, size, size)`` uint8 zarr image ``image.zarr``
    (and its ``(1, warmup, warmup)`` corner, ``warmup.zarr``)."""
    import torch

    from unetkit.data.io import write_image
    from unetkit.data.normalize import Normalizer
    from unetkit.modelfile import save_model
    from unetkit.models import create_model
    from unetkit.synthetic import synthetic_cells

    torch.manual_seed(0)
    net = create_model("unet2d_small", in_channels=1, num_classes=2).eval()
    model = save_model(root / "model.safetensors", net, normalization=Normalizer("zscore").to_dict())
    cells = synthetic_cells((size, size), seed=0, cell_radius=12)
    write_image(root / "image.zarr", np.asarray(cells.image, np.uint8)[None])
    write_image(root / "warmup.zarr", np.asarray(cells.image[:warmup, :warmup], np.uint8)[None])
    return str(model), root / "image.zarr"


def time_workers(model: str, image: Path, work: Path, n_workers: int, repeats: int, **options: Any) -> float:
    """The best seconds of ``repeats`` :func:`predict_dask` runs on a fresh cluster of ``n_workers``, after a
    warm-up on a smaller image of 4 chunks that has the workers build their predictors (imports, network, ONNX
    export)."""
    import distributed

    from unetkit.infer.dask_predict import predict_dask

    with dask_cluster(n_workers, work / f"cluster{n_workers}") as address, distributed.Client(address) as client:
        predict_dask(model, image.with_name("warmup.zarr"), work / f"warm{n_workers}.zarr", client=client, **options)
        best = float("inf")
        for r in range(repeats):
            t0 = time.perf_counter()
            predict_dask(model, image, work / f"out{n_workers}_{r}.zarr", client=client, **options)
            best = min(best, time.perf_counter() - t0)
    return best


def time_one_process(model: str, image: Path, repeats: int, **options: Any) -> float:
    """The best seconds of ``repeats`` local predictions of ``image`` in one fresh process on one thread
    (the work of one 1-thread worker without Dask: the reference its overhead is measured against)."""
    script = (
        "import sys, time, torch; torch.set_num_threads(1)\n"
        "from unetkit.data.io import open_image\n"
        "from unetkit.infer.loading import load_predictor\n"
        f"p = load_predictor({model!r}, **{options!r})\n"
        f"img = open_image({str(image)!r}, 2)\n"
        "p.predict(img[:, :256, :256])\n"
        "best = float('inf')\n"
        f"for _ in range({repeats}):\n"
        "    t0 = time.perf_counter(); p.predict(img); best = min(best, time.perf_counter() - t0)\n"
        "print(best)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1536, help="image edge in pixels (default 1536)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per worker count (default 2)")
    parser.add_argument("--chunk", type=int, default=512, help="output chunk edge (default 512: 9 chunks)")
    parser.add_argument("--backend", default="auto", help="the workers' backend (default auto, as the CLI's)")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="unetkit-dask-") as tmp:
        work = Path(tmp)
        model, image = make_inputs(work, args.size, min(args.size, 2 * args.chunk))
        mpx = args.size**2 / 1e6
        seconds = time_one_process(model, image, args.repeats, backend=args.backend)
        rows["one_process_1_thread"] = {"seconds": seconds, "mpx_s": mpx / seconds}
        print(f"one process, 1 thread, no Dask: {seconds:.2f} s, {mpx / seconds:.3f} Mpx/s")
        for n in (1, 2):
            seconds = time_workers(model, image, work, n, args.repeats, chunk=args.chunk, backend=args.backend)
            rows[f"{n}_workers"] = {"seconds": seconds, "mpx_s": mpx / seconds}
            print(f"{n} worker(s): {seconds:.2f} s, {mpx / seconds:.3f} Mpx/s")
    ratio = rows["2_workers"]["mpx_s"] / rows["1_workers"]["mpx_s"]
    overhead = rows["1_workers"]["mpx_s"] / rows["one_process_1_thread"]["mpx_s"]
    print(f"2 workers / 1 worker: {ratio:.2f}x; 1 worker / one process: {overhead:.2f}x")
    path = write_result(
        "dask_workers",
        {"size": args.size, "repeats": args.repeats, "chunk": args.chunk, "backend": args.backend,
         "results": rows, "ratio_2_vs_1_workers": ratio, "ratio_1_worker_vs_one_process": overhead},
    )  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
