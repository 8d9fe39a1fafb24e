"""One epoch of a training run, in three parts: train it, validate it, save it.

:func:`unetkit.train.loop.train` builds a :class:`RunSetup` (what stays fixed for the run) and a
:class:`~unetkit.train.state.RunState` (what changes and is checkpointed) once, then calls these per epoch.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from unetkit.augment import Augmenter
from unetkit.config import Config
from unetkit.data.sampling import PatchSampler
from unetkit.errors import UnetkitError
from unetkit.metrics.best import epoch_score
from unetkit.modelfile import save_model
from unetkit.models.base import SegmentationModel
from unetkit.train.callbacks import BaseCallback, write_metrics_csv
from unetkit.train.checkpoint import save_checkpoint
from unetkit.train.data import TrainingData
from unetkit.train.eta import Eta
from unetkit.train.state import RunState

log = logging.getLogger(__name__)


@dataclass
class RunSetup:
    """What a run builds once and never checkpoints: devices, the wrapped network, data, patches, the loss.

    Attributes:
        config: the run's configuration.
        fabric: the Lightning Fabric (devices, DDP, precision).
        model: the network as Fabric set it up (forward and backward go through it).
        data: the normalised training and validation samples.
        task: the task object (:func:`unetkit.train.task.make_task`): batches, validation, model-file fields.
        loss_fn: the training loss.
        sampler: draws the training patches.
        augmenter: augments each batch on the training device.
        patch: the network input size; ``out_patch`` its output size (smaller for valid nets).
        out_patch: the output size the masks and weights are cropped to.
        tile: the prediction tile used for validation (and recorded in the model file).
        use_weight_map: pass the weight maps to the loss.
        out: the run folder.
        description: the model-file fields (:func:`unetkit.modelfile.save_model`) but the epoch.
        listeners: the callbacks (empty on all but the main process).
        eta: times the run for the time it has left (:class:`~unetkit.train.eta.Eta`).
        deadline: the time on the run's clock (``eta.now()``) at which the budget runs out (``inf``: none).
    """

    config: Config
    fabric: Any
    model: Any
    data: TrainingData | Any
    task: Any
    loss_fn: Any
    sampler: PatchSampler | Any
    augmenter: Augmenter
    patch: list[int]
    out_patch: list[int]
    tile: list[int]
    use_weight_map: bool
    out: Path
    description: dict[str, Any]
    listeners: list[BaseCallback]
    eta: Eta
    deadline: float = math.inf

    @property
    def raw_model(self) -> SegmentationModel:
        """The bare network, without Fabric's or DDP's wrapper."""
        module: SegmentationModel = self.model.module
        return module

    @property
    def last_path(self) -> Path:
        return self.out / "checkpoints" / "last.safetensors"

    @property
    def best_path(self) -> Path:
        return self.out / "checkpoints" / "best.safetensors"

    @property
    def model_path(self) -> Path:
        return self.out / "model.safetensors"


def train_epoch(setup: RunSetup, run: RunState) -> tuple[dict[str, Any], bool]:
    """Train the running epoch from ``run.step`` to its end, or until the time budget runs out.

    Every ``train.checkpoint_every`` steps the main process also saves ``last.safetensors``. All processes stop
    at the same step: the main process decides when the budget is used up.

    Returns:
        ``(row, out_of_time)``: the epoch's training entries of its metrics row (epoch, train_loss, lr,
        seconds, images_per_s) and whether the time budget ran out.
    """
    t = setup.config.train
    fabric, model, optimizer = setup.fabric, setup.model, run.optimizer
    model.train()
    t0, seen, out_of_time = time.perf_counter(), 0, False
    while run.step < t.iterations_per_epoch:
        step = run.step
        inputs, target, weight = setup.task.batch(setup, run)
        logits = model(inputs)
        loss = setup.loss_fn(logits, target, weight)
        adversary = run.adversary  # restore.gan: the generator's adversarial term, then a discriminator step
        if adversary is not None:
            loss = loss + adversary.generator_term(inputs, logits, run.epoch * t.iterations_per_epoch + step)
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        if t.grad_clip:
            fabric.clip_gradients(model, optimizer, max_norm=t.grad_clip, error_if_nonfinite=False)
        optimizer.step()
        if adversary is not None:
            adversary.step(fabric, inputs, logits.detach(), target)
        run.scheduler.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise UnetkitError(
                f"the loss became {value} at epoch {run.epoch + 1}, step {step + 1}; lower --set train.lr "
                f"(now {t.lr}) or check the data (unetkit check)"
            )
        run.add_step(value)
        seen += t.batch_size * fabric.world_size
        rate = seen / max(time.perf_counter() - t0, 1e-9)
        setup.eta.step()
        setup.eta.tell(setup.listeners)
        for cb in setup.listeners:
            cb.on_step(epoch=run.epoch, step=step, loss=value, images_per_s=rate)
        if setup.eta.plan.checkpoint_due(run.step):
            with setup.eta.measure("checkpoint"):
                if fabric.is_global_zero:
                    save_checkpoint(setup.last_path, run.state_dict())
                fabric.barrier()
        if setup.deadline < math.inf:
            # every process must stop at the same step, or DDP would wait forever: rank 0 decides
            out_of_time = bool(fabric.broadcast(setup.eta.now() > setup.deadline))
            if out_of_time:
                break
    elapsed = time.perf_counter() - t0
    row: dict[str, Any] = {
        "epoch": run.epoch + 1,
        "train_loss": run.train_loss(),
        "lr": optimizer.param_groups[0]["lr"],
        "seconds": elapsed,
        "images_per_s": seen / max(elapsed, 1e-9),
    }
    return row, out_of_time


def validate_epoch(setup: RunSetup) -> dict[str, Any]:
    """Validate on whole images: each process predicts its share, the task's scores are summed over all
    (segmentation: confusion counts, Dice/IoU; restoration: PSNR, SSIM, NRMSE).

    Returns:
        The validation entries of the metrics row, the same on every process.
    """
    return setup.task.validate(setup)


def save_epoch(setup: RunSetup, run: RunState, improved: bool) -> None:
    """Write what the finished epoch leaves in the run folder (main process; all processes wait for it).

    ``metrics.csv``; on improvement (or when there is none yet) ``model.safetensors`` and
    ``checkpoints/best.safetensors``; always ``checkpoints/last.safetensors``; ``curves.png``.
    """
    if setup.fabric.is_global_zero:
        out, raw_model, description = setup.out, setup.raw_model, setup.description
        write_metrics_csv(out / "metrics.csv", run.history)
        if improved or not setup.model_path.exists():
            provenance = {
                **description["provenance"],
                "epoch": run.epoch,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            save_model(setup.model_path, raw_model, **{**description, "provenance": provenance})
            save_checkpoint(
                setup.best_path,
                {"model": raw_model.state_dict(), "epoch": run.epoch, "score": epoch_score(run.history[-1])},
            )
        save_checkpoint(setup.last_path, run.state_dict())
        _plot(out)
    setup.fabric.barrier()


def _plot(out: Path) -> None:
    try:
        from unetkit.viz.curves import plot_curves
    except ImportError:  # pragma: no cover - the viz module ships with unetkit
        return
    plot_curves(out / "metrics.csv", out / "curves.png")
