"""``--backend auto`` on a CPU: the fastest backend installed here, measured once per machine and cached.

The measurement runs a small probe network (``unet2d_small`` at depth 3, width 16: the same layers as the
real networks, smaller) on a few batches of 128x128 tiles with every installed backend, and keeps the
best seconds per tile of each. The result goes to ``backend-choice.json`` in the cache folder
(:func:`unetkit.infer.cache.cache_dir`), keyed by the machine: CPU model, thread count, and the versions
of torch, onnxruntime and openvino. A later run with the same key reads the choice back (no measurement);
a new CPU, another ``--threads``/``torch.set_num_threads`` or an upgraded backend measures again. A cache
file that cannot be read (corrupt, hand-edited) is ignored and rewritten.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.errors import ConfigError
from unetkit.infer.cache import cache_dir

log = logging.getLogger(__name__)

#: What ``auto`` chooses between on a CPU (the installed ones).
CPU_BACKENDS = ("torch", "onnxruntime", "openvino")
CACHE_FILE = "backend-choice.json"
PROBE_TILE, PROBE_BATCH, PROBE_REPEATS = 128, 2, 3
_DISTRIBUTIONS = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}


def installed_backends() -> list[str]:
    """The CPU backends importable here, in :data:`CPU_BACKENDS` order (torch always)."""
    return [b for b in CPU_BACKENDS if b == "torch" or importlib.util.find_spec(b) is not None]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what :mod:`platform` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine_key(threads: int | None = None) -> str:
    """The cache key: CPU model, thread count and the installed backends' versions.

    >>> "threads=3" in machine_key(3)
    True
    """
    n = int(threads or torch.get_num_threads())
    versions = ", ".join(f"{b} {_version(_DISTRIBUTIONS[b])}" for b in installed_backends())
    return f"{cpu_model()}; threads={n}; {versions}"


def fastest(timings: Mapping[str, float], candidates: Sequence[str] | None = None) -> str:
    """The backend with the fewest seconds per tile among ``candidates`` (default: all timed ones).

    >>> fastest({"torch": 0.2, "onnxruntime": 0.1, "openvino": 0.05}, ["torch", "onnxruntime"])
    'onnxruntime'
    """
    pool = {k: v for k, v in timings.items() if candidates is None or k in candidates}
    if not pool:
        raise ConfigError(f"no backend to choose from among {', '.join(candidates or ())}; install onnxruntime")
    return min(pool, key=lambda k: (pool[k], CPU_BACKENDS.index(k) if k in CPU_BACKENDS else 99))


def _probe_backend(name: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    from unetkit.infer.backends import OnnxBackend, OpenVinoBackend, TorchBackend
    from unetkit.infer.export import onnx_bytes
    from unetkit.models import create_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = create_model("unet2d_small", depth=3, width=16).eval()
    if name == "torch":
        return TorchBackend(net, device="cpu")
    graph = onnx_bytes(net)
    if name == "onnxruntime":
        return OnnxBackend(graph, spatial_dims=2, device="cpu", threads=threads)
    return OpenVinoBackend(graph, spatial_dims=2, device="cpu", threads=threads)


def measure_backends(
    backends: Sequence[str] | None = None,
    threads: int | None = None,
    *,
    timer: Callable[[], float] = time.perf_counter,
    repeats: int = PROBE_REPEATS,
) -> dict[str, float]:
    """Seconds per tile of each backend on the probe network (best of ``repeats`` batches after a warm-up).

    A backend that fails to run the probe is left out (logged). ``timer`` is the clock (tests inject one).
    """
    n = int(threads or torch.get_num_threads())
    x = np.random.default_rng(0).random((PROBE_BATCH, 1, PROBE_TILE, PROBE_TILE), dtype=np.float32)
    timings: dict[str, float] = {}
    for name in backends or installed_backends():
        try:
            run = _probe_backend(name, n)
            run(x)  # warm-up: first-call allocations, OpenVINO's compile
            best = float("inf")
            for _ in range(repeats):
                t0 = timer()
                run(x)
                best = min(best, timer() - t0)
        except Exception as exc:  # a broken install must not stop prediction; it is just not chosen
            log.warning("backend %s could not run the probe (%s); not considered for --backend auto", name, exc)
            continue
        timings[name] = best / PROBE_BATCH
    return timings


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache file's entries; ``{}`` when it is absent or unreadable (then it is rewritten)."""
    try:
        data = json.loads(path.read_text())
        entries = data["machines"]
        if not isinstance(entries, dict):
            raise TypeError("machines is not a mapping")
        return entries
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable backend cache (%s); measuring again", path, exc)
        return {}


def _valid_timings(entry: Any) -> dict[str, float] | None:
    timings = entry.get("seconds_per_tile") if isinstance(entry, dict) else None
    if not isinstance(timings, dict) or not timings:
        return None
    if not all(k in CPU_BACKENDS and isinstance(v, int | float) for k, v in timings.items()):
        return None
    return {k: float(v) for k, v in timings.items()}


def backend_timings(
    threads: int | None = None,
    *,
    measure: Callable[[Sequence[str], int], Mapping[str, float]] | None = None,
) -> dict[str, float]:
    """Seconds per tile of every installed backend on this machine: from the cache, measured on a miss.

    Args:
        threads: the thread count the backends will use (default: torch's).
        measure: ``measure(backends, threads) -> {backend: seconds per tile}``; default
            :func:`measure_backends` (tests inject fake timings).
    """
    n = int(threads or torch.get_num_threads())
    key = machine_key(n)
    path = cache_dir() / CACHE_FILE
    entries = _read_cache(path)
    timings = _valid_timings(entries.get(key))
    if timings is not None:
        return timings
    log.info("measuring the CPU backends once for this machine (%s)", key)
    timings = dict((measure or measure_backends)(installed_backends(), n))
    if not timings:
        raise ConfigError("no CPU backend could run the probe network; use --backend torch and report the problem")
    entries[key] = {"seconds_per_tile": timings, "choice": fastest(timings), "measured": time.time()}
    try:
        from unetkit.utils import write_json

        write_json(path, {"format": "unetkit-backend-choice", "machines": entries})
    except OSError as exc:
        log.warning("cannot write %s (%s); the choice is measured again next time", path, exc)
    return timings


def fastest_backend(
    candidates: Sequence[str] | None = None,
    threads: int | None = None,
    *,
    measure: Callable[[Sequence[str], int], Mapping[str, float]] | None = None,
) -> str:
    """``--backend auto`` on a CPU: the fastest installed backend among ``candidates`` (default: all).

    >>> import os, tempfile
    >>> os.environ["UNETKIT_CACHE_DIR"] = tempfile.mkdtemp()
    >>> fastest_backend(measure=lambda names, n: {"torch": 0.3, "onnxruntime": 0.2})
    'onnxruntime'
    >>> fastest_backend(measure=lambda names, n: {})  # cached: not measured again
    'onnxruntime'
    >>> del os.environ["UNETKIT_CACHE_DIR"]
    """
    timings = backend_timings(threads, measure=measure)
    pool = [c for c in (candidates or CPU_BACKENDS) if c in timings]
    if not pool and candidates is not None:
        raise ConfigError(
            f"none of {', '.join(candidates)} is installed (or runs) here; install one: pip install 'unetkit[openvino]'"
        )
    choice = fastest(timings, pool)
    log.info("backend auto: %s (%s)", choice, ", ".join(f"{k} {v * 1e3:.1f} ms/tile" for k, v in timings.items()))
    return choice
