"""What a training run reports as it goes: a protocol the CLI's progress bar implements, and run-folder loggers."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Protocol

from unetkit.utils import atomic_path

log = logging.getLogger(__name__)


class Callback(Protocol):
    """Hooks called on the main process (rank 0). All are optional to implement via :class:`BaseCallback`."""

    def on_train_start(self, *, epochs: int, steps_per_epoch: int, start_epoch: int, start_step: int) -> None: ...
    def on_step(self, *, epoch: int, step: int, loss: float, images_per_s: float) -> None: ...
    def on_epoch_end(self, *, epoch: int, row: dict[str, Any]) -> None: ...
    def on_train_end(self, *, result: Any) -> None: ...


class BaseCallback:
    """A callback that does nothing; subclass and override what you need."""

    def on_train_start(self, *, epochs: int, steps_per_epoch: int, start_epoch: int, start_step: int) -> None:
        pass

    def on_step(self, *, epoch: int, step: int, loss: float, images_per_s: float) -> None:
        pass

    def on_epoch_end(self, *, epoch: int, row: dict[str, Any]) -> None:
        pass

    def on_train_end(self, *, result: Any) -> None:
        pass


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` (one row per epoch) atomically; columns are the union of all rows' keys."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


class TensorBoardLogger(BaseCallback):
    """Scalars per epoch into ``RUN/tensorboard`` when the ``tensorboard`` package is installed."""

    def __init__(self, log_dir: Path) -> None:
        self.writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed (pip install 'unetkit[tensorboard]'): no TensorBoard logs")
            return
        self.writer = SummaryWriter(str(log_dir))

    def on_epoch_end(self, *, epoch: int, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if k != "epoch" and isinstance(v, int | float):
                self.writer.add_scalar(k, v, epoch)
        self.writer.flush()

    def on_train_end(self, *, result: Any) -> None:
        if self.writer is not None:
            self.writer.close()
