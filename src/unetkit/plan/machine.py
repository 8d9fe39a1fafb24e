"""The machine a plan is sized for, and what a training step costs on it (measured, not guessed)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

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


def _ram_gb() -> float:
    from unetkit.data.streamed import machine_memory

    ram = machine_memory()
    return ram / 2**30 if ram else 8.0


def detect_machine(device: str = "auto") -> Machine:
    """The machine for ``device`` (``auto``: CUDA when available); refuses CUDA where there is none."""
    import torch

    from unetkit.infer.select import cpu_model

    device = check_device(device)
    cores = torch.get_num_threads()
    if device == "cpu":
        return Machine("cpu", cpu_model(), cores, round(_ram_gb(), 1))
    index = int(device[5:]) if device.startswith("cuda:") else 0
    props = torch.cuda.get_device_properties(index)
    return Machine("cuda", props.name, cores, round(props.total_memory / 2**30, 1))


@dataclass(frozen=True)
class StepCost:
    """What one training step (forward, backward, optimizer) of a batch costs."""

    seconds: float
    peak_bytes: int = 0


class StepTimer(Protocol):
    """Measures one training step of ``batch`` patches of ``patch`` voxels through ``UNet(**model_args)``, in the
    channels-last memory layout where ``channels_last`` (tests inject a formula)."""

    def __call__(
        self, model_args: dict[str, Any], patch: Sequence[int], batch: int, channels_last: bool = False
    ) -> StepCost: ...


#: Measured step costs are reused for this long (same machine, network, patch and batch).
STEP_CACHE_DAYS = 7
STEP_CACHE_FILE = "step-times.json"


def cached_timer(timer: StepTimer, machine: Machine, path: Path | None = None) -> StepTimer:
    """``timer`` with its measurements kept in the user cache (``step-times.json`` in
    :func:`unetkit.infer.cache.cache_dir`) for :data:`STEP_CACHE_DAYS`: planning the same network again on
    this machine (another fold, a re-run, ``unetkit plan`` then ``train``) skips the measurement and gives the
    same plan. The key is the machine, the network's arguments, the patch, the batch, the memory layout and the
    torch and unetkit versions; an unreadable cache file is ignored (and rewritten).
    """
    import hashlib
    import json

    import torch

    from unetkit._version import __version__
    from unetkit.infer.cache import cache_dir
    from unetkit.utils import write_json

    file = path if path is not None else cache_dir() / STEP_CACHE_FILE

    def read() -> dict[str, Any]:
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def wrapped(model_args: dict[str, Any], patch: Sequence[int], batch: int, channels_last: bool = False) -> StepCost:
        what = [machine.to_dict(), model_args, [int(p) for p in patch], int(batch), torch.__version__, __version__]
        if channels_last:  # (the default layout keeps the keys measured before the layout was a choice)
            what.append("channels_last")
        key = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]
        entries = read()
        hit = entries.get(key)
        try:
            if isinstance(hit, dict) and time.time() - float(hit["at"]) < STEP_CACHE_DAYS * 86400:
                log.debug("step cost from the cache: patch %s batch %d -> %.3f s", list(patch), batch, hit["seconds"])
                return StepCost(float(hit["seconds"]), int(hit.get("peak_bytes", 0)))
        except (KeyError, TypeError, ValueError):
            pass
        cost = timer(model_args, patch, batch, channels_last)
        entries[key] = {"seconds": cost.seconds, "peak_bytes": cost.peak_bytes, "at": time.time()}
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            write_json(file, entries)
        except OSError as exc:  # a read-only home is no reason to fail planning
            log.debug("step cost not cached: %s", exc)
        return cost

    return wrapped


def measure_step(machine: Machine, repeats: int = 2, cache: bool = True) -> StepTimer:
    """A :class:`StepTimer` that builds the network and times ``repeats`` steps after one warm-up (kept in the
    user cache for a week: :func:`cached_timer`; ``cache=False`` always measures)."""

    def timer(model_args: dict[str, Any], patch: Sequence[int], batch: int, channels_last: bool = False) -> StepCost:
        import torch

        from unetkit.losses import SegmentationLoss
        from unetkit.models import UNet, memory_format

        dev = torch.device("cuda" if machine.device == "cuda" else "cpu")
        net = UNet(**model_args).to(dev)
        if channels_last:  # as the training loop lays it out (train.channels_last)
            net = net.to(memory_format=memory_format(net.spatial_dims, True))  # type: ignore[call-overload]
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
        layout = " channels-last" if channels_last else ""
        log.debug("measured%s step: patch %s batch %d -> %.3f s", layout, list(patch), batch, cost.seconds)
        return cost

    return cached_timer(timer, machine) if cache else timer
