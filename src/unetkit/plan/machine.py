"""The machine a plan is sized for, and what a training step costs on it (measured, not guessed)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from unetkit.utils import check_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Machine:
    """Where training runs.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        name: the processor or GPU name.
        cores: CPU cores torch may use.
        memory_gb: GPU memory (CUDA) or RAM (CPU), in GiB.
    """

    device: str
    name: str
    cores: int
    memory_gb: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return asdict(self)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def _ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 8.0


def detect_machine(device: str = "auto") -> Machine:
    """The machine for ``device`` (``auto``: CUDA when available); refuses CUDA where there is none."""
    import torch

    device = check_device(device)
    cores = torch.get_num_threads()
    if device == "cpu":
        return Machine("cpu", _cpu_name(), cores, round(_ram_gb(), 1))
    index = int(device[5:]) if device.startswith("cuda:") else 0
    props = torch.cuda.get_device_properties(index)
    return Machine("cuda", props.name, cores, round(props.total_memory / 2**30, 1))


@dataclass(frozen=True)
class StepCost:
    """What one training step (forward, backward, optimizer) of a batch costs."""

    seconds: float
    peak_bytes: int = 0


#: ``(model_args, patch, batch) -> StepCost``: measures a step (tests inject a formula).
StepTimer = Callable[[dict[str, Any], Sequence[int], int], StepCost]


def measure_step(machine: Machine, repeats: int = 2) -> StepTimer:
    """A :data:`StepTimer` that builds the network and times ``repeats`` steps after one warm-up."""

    def timer(model_args: dict[str, Any], patch: Sequence[int], batch: int) -> StepCost:
        import torch

        from unetkit.losses import SegmentationLoss
        from unetkit.models import UNet

        dev = torch.device("cuda" if machine.device == "cuda" else "cpu")
        net = UNet(**model_args).to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        loss_fn = SegmentationLoss("dice_ce")
        x = torch.randn(batch, model_args["in_channels"], *patch, device=dev)
        y = torch.randint(0, model_args["num_classes"], (batch, *patch), device=dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = loss_fn(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i:
                times.append(time.perf_counter() - t0)
        peak = int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else 0
        cost = StepCost(min(times), peak)
        log.debug("measured step: patch %s batch %d -> %.3f s", list(patch), batch, cost.seconds)
        return cost

    return timer
