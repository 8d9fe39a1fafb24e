"""Shared benchmark helpers: the machine's description, results files, peak-memory readings."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    """The CPU's model name, as lscpu shows it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, core count, memory, Python/torch versions: printed and stored with every number."""
    import os

    import torch

    cpu = cpu_name()
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gb, 1),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine and the command line."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]), **payload}
    path.write_text(json.dumps(payload, indent=2))
    return path


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def monai_items(pairs: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
    """MONAI dictionary items ``{"image": (1, *S) float32, "label": (1, *S) float32}`` from (image, mask) arrays."""
    import numpy as np
    import torch

    return [
        {
            "image": torch.from_numpy(np.asarray(i, np.float32)[None]),
            "label": torch.from_numpy(np.asarray(m, np.float32)[None]),
        }
        for i, m in pairs
    ]
