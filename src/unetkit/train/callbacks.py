"""What a training run reports as it goes: a protocol the CLI's progress bar implements, run-folder loggers
(``metrics.csv``, ``train.log``, TensorBoard), the start summary and the closing command, how the time left
reads (its rule: :mod:`unetkit.train.eta`), and the one rule for who reports in a DDP run (:func:`is_rank_zero`)."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from unetkit.utils import atomic_path

log = logging.getLogger(__name__)


class Callback(Protocol):
    """Hooks called on the main process (rank 0). All are optional to implement via :class:`BaseCallback`."""

    def on_train_start(
        self, *, epochs: int, steps_per_epoch: int, start_epoch: int, start_step: int, budget_s: float | None = None
    ) -> None: ...
    def on_step(self, *, epoch: int, step: int, loss: float, images_per_s: float) -> None: ...
    def on_time_left(self, *, seconds: float | None, budget_bound: bool, steps_per_s: float | None) -> None: ...
    def on_epoch_end(self, *, epoch: int, row: dict[str, Any]) -> None: ...
    def on_train_end(self, *, result: Any) -> None: ...


class BaseCallback:
    """A callback that does nothing; subclass and override what you need."""

    def on_train_start(
        self, *, epochs: int, steps_per_epoch: int, start_epoch: int, start_step: int, budget_s: float | None = None
    ) -> None:
        pass

    def on_step(self, *, epoch: int, step: int, loss: float, images_per_s: float) -> None:
        pass

    def on_time_left(self, *, seconds: float | None, budget_bound: bool, steps_per_s: float | None) -> None:
        """Before each ``on_step`` and ``on_epoch_end``: the seconds the run has left (``None`` before two steps
        are timed; :mod:`unetkit.train.eta`), whether the time budget ends it, and the training steps per second.
        Optional: a callback without this method is not asked."""

    def on_epochs(self, *, epochs: int) -> None:
        """The run's epoch count changed to ``epochs`` (``train.fill_budget``: a planned budget bought more).
        Optional, like ``on_time_left``."""

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


# --- one rule: who speaks and writes in a multi-process (DDP) run ------------------------------------------


def is_rank_zero(fabric: Any | None = None) -> bool:
    """Whether this process is rank 0 of the run: the only one that prints, logs to the console or writes files.

    With a Lightning ``fabric`` its ``is_global_zero``; without one, the ``RANK`` environment variable that
    torchrun, SLURM and Lightning set (unset: a single process, rank 0).

    >>> is_rank_zero()
    True
    """
    if fabric is not None:
        return bool(fabric.is_global_zero)
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(var)
        if value is not None and value.strip().isdigit():
            return int(value) == 0
    return True


def quiet_other_ranks(fabric: Any | None = None) -> None:
    """On ranks other than 0, keep unetkit's and Lightning's loggers to errors only (rank 0 reports for all)."""
    if is_rank_zero(fabric):
        return
    for name in ("unetkit", "lightning", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --- train.log -----------------------------------------------------------------------------------------------

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


@contextlib.contextmanager
def run_log(path: Path, enabled: bool = True) -> Iterator[Path | None]:
    """Copy every unetkit log record, debug included, into ``path`` (appended, flushed line by line) while
    the block runs; the console keeps the level it had. Does nothing when ``enabled`` is false (ranks > 0).
    """
    if not enabled:
        yield None
        return
    logger = logging.getLogger("unetkit")
    before = logger.level
    shown = logger.getEffectiveLevel()
    pinned = [h for h in logger.handlers if h.level == logging.NOTSET]
    for h in pinned:  # the console shows what it showed before; the file gets the debug lines too
        h.setLevel(shown)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield path
    except BaseException as exc:  # the console shows the error (the CLI prints it); the log keeps it too
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "stopped: %s", (exc,), None)
        handler.handle(record)
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(before)
        for h in pinned:
            h.setLevel(logging.NOTSET)


def epoch_line(row: dict[str, Any], left: str | None = None) -> str:
    """The one line an epoch leaves on the console and in ``train.log``; ``left``: the time left
    (:func:`time_left`), when the run goes on.

    >>> epoch_line({"epoch": 2, "train_loss": 0.5, "val_dice": 0.75, "images_per_s": 40.0, "seconds": 3.0})
    'epoch 2: train_loss 0.5000, val_dice 0.7500, 40.0 patches/s, 3.0 s'
    >>> epoch_line({"epoch": 1, "train_loss": 0.5, "seconds": 3.0}, left="left 1:05")
    'epoch 1: train_loss 0.5000, 3.0 s, left 1:05'
    """
    parts = [f"train_loss {row['train_loss']:.4f}"]
    for key in ("val_loss", "val_dice", "val_iou", "val_psnr", "val_ssim", "d_loss", "g_adv"):
        if isinstance(row.get(key), int | float):
            parts.append(f"{key} {row[key]:.4f}")
    if "images_per_s" in row:
        parts.append(f"{row['images_per_s']:.1f} patches/s")
    if "seconds" in row:
        parts.append(f"{row['seconds']:.1f} s")
    if left:
        parts.append(left)
    return f"epoch {row['epoch']}: " + ", ".join(parts)


def _size(values: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in values)


def start_summary(
    *,
    out: Path,
    data_path: Any,
    n_train: int,
    n_val: int,
    spatial_dims: int,
    in_channels: int,
    class_names: Sequence[str],
    model_name: str,
    parameters: int,
    patch: Sequence[int],
    out_patch: Sequence[int],
    batch_size: int,
    epochs: int,
    steps_per_epoch: int,
    val_every: int,
    device: str,
    processes: int,
    precision: str,
    budget_minutes: float | None,
    start_epoch: int = 0,
    channels_last: bool = False,
) -> list[str]:
    """The lines a run starts with: data, network, plan, device, budget and where the outputs go.

    >>> lines = start_summary(out=Path("runs/a"), data_path="d", n_train=3, n_val=1, spatial_dims=2,
    ...     in_channels=1, class_names=["background", "cell"], model_name="unet2d", parameters=1_500_000,
    ...     patch=[64, 64], out_patch=[64, 64], batch_size=4, epochs=2, steps_per_epoch=5, val_every=1,
    ...     device="cpu", processes=1, precision="32-true", budget_minutes=None)
    >>> lines[1]
    'data     d: 3 training / 1 validation images, 2D, 1 channel, 2 classes (background, cell)'
    """
    classes = f"{len(class_names)} classes ({', '.join(class_names)})" if class_names else "restoration"
    channels = f"{in_channels} channel" + ("s" if in_channels != 1 else "")
    steps = epochs * steps_per_epoch
    budget = (
        f"{budget_minutes:g} minutes (the run stops, validated and saved, when it is used up)"
        if budget_minutes
        else "none (the run ends after the last epoch)"
    )
    lines = [
        f"run      {out}: train.log, metrics.csv, curves.png, val_pictures/, model.safetensors, checkpoints/",
        f"data     {data_path}: {n_train} training / {n_val} validation images, {spatial_dims}D, {channels}, {classes}",
        f"model    {model_name}, {parameters / 1e6:.2f} M parameters; "
        f"patch {_size(patch)} -> output {_size(out_patch)}",
        f"plan     {epochs} epochs x {steps_per_epoch} steps = {steps} steps of {batch_size} patches"
        f" per process; validation every {val_every} epoch" + ("s" if val_every != 1 else ""),
        f"device   {device} ({processes} process{'es' if processes != 1 else ''}, precision {precision}"
        + (", channels-last)" if channels_last else ")"),
        f"budget   {budget}",
    ]
    if start_epoch:
        lines.append(f"resume   from epoch {start_epoch + 1}")
    return lines


def next_command(model_path: Path, data_path: Any, out: Path) -> str:
    """The command to run after training: predict with the new model (on the dataset's images when known).

    >>> next_command(Path("runs/a/model.safetensors"), None, Path("runs/a"))
    'unetkit predict runs/a/model.safetensors IMAGES --out runs/a/predictions --overlay'
    """
    images = "IMAGES"
    if data_path is not None:
        folder = Path(str(data_path))
        images = str(folder / "images") if (folder / "images").is_dir() else images
    return f"unetkit predict {model_path} {images} --out {out / 'predictions'} --overlay"


# --- time left -----------------------------------------------------------------------------------------------


def format_seconds(seconds: float | None) -> str:
    """``h:mm:ss`` or ``m:ss``; ``-`` when unknown.

    >>> format_seconds(3725), format_seconds(65.4), format_seconds(None)
    ('1:02:05', '1:05', '-')
    """
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def time_left(seconds: float | None, budget_bound: bool = False) -> str:
    """How the time left reads on the progress bar and in the epoch lines (:mod:`unetkit.train.eta`'s value).

    >>> time_left(65.4), time_left(30.0, budget_bound=True), time_left(None)
    ('left 1:05', 'left 0:30 (budget)', 'left -')
    """
    return f"left {format_seconds(seconds)}" + (" (budget)" if budget_bound and seconds is not None else "")
