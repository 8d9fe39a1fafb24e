"""The training loop on Lightning Fabric: one readable function, CPU or CUDA, one process or DDP.

data (check, load, normalise, weight maps) -> patches -> augmentation -> network -> loss -> step
                                              validation: whole images through the tiler -> Dice / IoU
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from unetkit._version import __version__
from unetkit.augment import Augmenter
from unetkit.config import Config, save_config
from unetkit.data.sampling import PatchSampler, crop_to_output
from unetkit.errors import ConfigError, UnetkitError
from unetkit.losses import SegmentationLoss
from unetkit.modelfile import save_model
from unetkit.models import create_model
from unetkit.models.base import SegmentationModel
from unetkit.train.callbacks import BaseCallback, TensorBoardLogger, write_metrics_csv
from unetkit.train.checkpoint import load_checkpoint, save_checkpoint
from unetkit.train.data import TrainingData, prepare_data
from unetkit.train.schedule import make_scheduler
from unetkit.train.validate import scores, validate

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    run_dir: Path
    model_path: Path
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


def _fabric(cfg: Config) -> Any:
    from lightning_fabric import Fabric

    t = cfg.train
    dev = t.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={t.device!r}: CUDA is not available on this machine; use --device cpu")
    accelerator = "cuda" if dev.startswith("cuda") else "cpu"
    devices: Any = [int(dev[5:])] if dev.startswith("cuda:") else t.devices
    precision = t.precision
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "cuda" and torch.cuda.is_bf16_supported() else "32"
    if precision != "32" and accelerator == "cpu":
        log.warning(
            "precision %s on CPU is slow here (no native bf16/fp16); consider --set train.precision=32", precision
        )
    strategy = t.strategy if (t.devices > 1 or t.num_nodes > 1) else "auto"
    if strategy == "auto" and (t.devices > 1 or t.num_nodes > 1):
        strategy = "ddp"
    return Fabric(
        accelerator=accelerator,
        devices=devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision="32-true" if precision == "32" else precision,
    )


def legal_patch(model: SegmentationModel, patch: int | Sequence[int]) -> list[int]:
    """Round a requested patch (network input) size to a legal one, as docs/design.md says: valid nets to the
    nearest legal size, same nets up to a multiple of ``2**depth``."""
    sizes = [int(patch)] * model.spatial_dims if isinstance(patch, int) else [int(p) for p in patch]
    if len(sizes) != model.spatial_dims:
        raise ConfigError(
            f"data.patch_size {sizes}: needs {model.spatial_dims} values for a {model.spatial_dims}D model"
        )
    mode = "nearest" if model.padding == "valid" else "ceil"
    legal = [model.legal_size(s, mode) for s in sizes]
    if legal != sizes:
        log.info("patch size %s is not legal for this network: using %s", sizes, legal)
    return legal


def prediction_tile(model: SegmentationModel, patch: Sequence[int]) -> list[int]:
    """The tile recorded for prediction: at least the training patch, at least 256 (2D) or 96 (3D) output
    pixels per axis, since larger tiles waste less on borders and halos."""
    floor = (256 if model.spatial_dims == 2 else 96) + 2 * model.margin()
    mode = "nearest" if model.padding == "valid" else "ceil"
    return [model.legal_size(max(int(p), floor), mode) for p in patch]


def _optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def _build_model(cfg: Config, data: TrainingData) -> SegmentationModel:
    args = dict(cfg.model.args)
    for key, value in (("in_channels", data.in_channels), ("num_classes", data.num_classes)):
        if key in args and args[key] != value:
            raise ConfigError(f"model.args.{key}={args[key]} but the data has {value}; remove the override")
        args[key] = value
    model = create_model(cfg.model.name, **args)
    if model.spatial_dims != data.spatial_dims:
        raise ConfigError(
            f"model.name={cfg.model.name!r} is {model.spatial_dims}D but the data is {data.spatial_dims}D; "
            f"pick a {data.spatial_dims}D model (see `unetkit models`)"
        )
    return model


def train(
    config: Config, out: str | Path, *, resume: bool = False, callbacks: Sequence[BaseCallback] = ()
) -> TrainResult:
    """Train a network as ``config`` says and write the run folder ``out``.

    Args:
        config: the validated configuration (``unetkit.config.load_config``).
        out: the run folder: ``config.yaml``, ``metrics.csv``, ``checkpoints/``, ``model.safetensors``
            (the best model), ``curves.png``, ``tensorboard/``.
        resume: continue from ``out/checkpoints/last.safetensors`` (epoch, step, optimizer, RNG states).
        callbacks: progress hooks, called on the main process.

    Returns:
        A :class:`TrainResult`.
    """
    out = Path(out)
    t = config.train
    if t.threads:
        torch.set_num_threads(t.threads)
    ckpt_dir = out / "checkpoints"
    last_path, best_path = ckpt_dir / "last.safetensors", ckpt_dir / "best.safetensors"
    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(last_path)
    elif last_path.exists():
        raise UnetkitError(f"{out} already holds a run; continue it with --resume {out} or choose another --out")

    fabric = _fabric(config)
    fabric.launch()
    main = fabric.is_global_zero
    loss_fn = SegmentationLoss(t.loss, ignore_index=config.data.ignore_index)
    wm = config.data.weight_map
    use_wm = loss_fn.uses_weight_map if wm.enabled == "auto" else bool(wm.enabled)
    if use_wm and t.loss in ("dice", "bce"):
        log.warning("the weight map is not used by the %s loss", t.loss)
    data = prepare_data(config.data, seed=t.seed, use_weight_map=use_wm, cache_dir=out / "cache")
    torch.manual_seed(t.seed)  # the initial weights (DDP then broadcasts rank 0's anyway)
    model = _build_model(config, data)
    patch = legal_patch(model, config.data.patch_size)
    out_patch = list(model.output_shape(patch))
    tile = prediction_tile(model, patch)
    sampler = PatchSampler(
        data.train,
        patch,
        output_size=out_patch,
        foreground_fraction=config.data.foreground_fraction,
        ignore_index=config.data.ignore_index,
    )
    augmenter = Augmenter(config.augment, model.spatial_dims)
    optimizer = _optimizer(config, model)
    total_steps = t.epochs * t.iterations_per_epoch
    scheduler = make_scheduler(optimizer, total_steps, t.schedule, round(t.warmup_epochs * t.iterations_per_epoch))
    gen = torch.Generator().manual_seed(t.seed * 1_000_003 + fabric.global_rank)
    aug_gen = gen if fabric.device.type == "cpu" else torch.Generator(fabric.device).manual_seed(t.seed + 17)

    history: list[dict[str, Any]] = []
    start_epoch, start_step, best, best_epoch, bad_epochs = 0, 0, -math.inf, -1, 0
    loss_sum, loss_n = 0.0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        if aug_gen is not gen:
            aug_gen.set_state(state["aug_generator"])
        start_epoch, start_step = int(state["epoch"]), int(state["step"])
        history, best, best_epoch = list(state["history"]), float(state["best"]), int(state["best_epoch"])
        bad_epochs, loss_sum, loss_n = int(state["bad_epochs"]), float(state["loss_sum"]), int(state["loss_n"])
        log.info("resuming %s at epoch %d, step %d", out, start_epoch + 1, start_step)
    if start_epoch >= t.epochs:
        raise UnetkitError(f"{out}: already trained {start_epoch} epochs; raise --epochs to continue it")
    model, optimizer = fabric.setup(model, optimizer)
    torch.manual_seed(t.seed * 7919 + fabric.global_rank)  # dropout draws from the global generator
    if state is not None:
        torch.set_rng_state(state["torch_rng"])
    raw_model: SegmentationModel = model.module

    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    listeners: list[BaseCallback] = [*callbacks, TensorBoardLogger(out / "tensorboard")] if main else []
    for cb in listeners:
        cb.on_train_start(
            epochs=t.epochs, steps_per_epoch=t.iterations_per_epoch, start_epoch=start_epoch, start_step=start_step
        )

    def snapshot(epoch: int, step: int) -> dict[str, Any]:
        return {
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": gen.get_state(),
            "aug_generator": aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch,
            "step": step,
            "history": history,
            "best": best,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "loss_sum": loss_sum,
            "loss_n": loss_n,
        }

    description: dict[str, Any] = dict(
        class_names=data.class_names,
        normalization=data.normalizer.to_dict(),
        tile_size=tile,
        spacing=list(data.spacing) if data.spacing else None,
        provenance={
            "dataset_digest": data.fingerprint.get("digest"),
            "config_digest": config.digest(),
            "trained_with": f"unetkit {__version__}",
            "loss": t.loss,
            "weight_map": use_wm,
        },
    )
    if data.class_colours:
        description["class_colours"] = data.class_colours
    stopped_early = out_of_time = False
    deadline = time.monotonic() + t.max_minutes * 60 if t.max_minutes else math.inf
    model_path = out / "model.safetensors"
    for epoch in range(start_epoch, t.epochs):
        model.train()
        t0, seen = time.perf_counter(), 0
        for step in range(start_step if epoch == start_epoch else 0, t.iterations_per_epoch):
            batch = sampler.sample(t.batch_size, gen)
            image, mask = batch.image.to(fabric.device), batch.mask.to(fabric.device)
            weight = batch.weight.to(fabric.device) if (use_wm and batch.weight is not None) else None
            aug = augmenter(image, mask, weight, generator=aug_gen)
            target, weight = aug.mask, aug.weight
            if out_patch != patch:
                target = crop_to_output(target, out_patch)
                weight = crop_to_output(weight, out_patch) if weight is not None else None
            logits = model(aug.image)
            loss = loss_fn(logits, target, weight)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            if t.grad_clip:
                fabric.clip_gradients(model, optimizer, max_norm=t.grad_clip, error_if_nonfinite=False)
            optimizer.step()
            scheduler.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise UnetkitError(
                    f"the loss became {value} at epoch {epoch + 1}, step {step + 1}; lower --set train.lr "
                    f"(now {t.lr}) or check the data (unetkit check)"
                )
            loss_sum, loss_n = loss_sum + value, loss_n + 1
            seen += t.batch_size * fabric.world_size
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            for cb in listeners:
                cb.on_step(epoch=epoch, step=step, loss=value, images_per_s=rate)
            if t.checkpoint_every and (step + 1) % t.checkpoint_every == 0 and step + 1 < t.iterations_per_epoch:
                if main:
                    save_checkpoint(last_path, snapshot(epoch, step + 1))
                fabric.barrier()
            if deadline < math.inf:
                # every process must stop at the same step, or DDP would wait forever: rank 0 decides
                out_of_time = bool(fabric.broadcast(time.monotonic() > deadline))
                if out_of_time:
                    break
        elapsed = time.perf_counter() - t0
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(loss_n, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": elapsed,
            "images_per_s": seen / max(elapsed, 1e-9),
        }
        loss_sum, loss_n = 0.0, 0
        validated = bool(data.val) and ((epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs)
        if validated:
            shard = data.val[fabric.global_rank :: fabric.world_size]
            cm, nll, count = validate(
                raw_model,
                shard,
                num_classes=data.num_classes,
                tile=tile,
                device=fabric.device,
                ignore_index=config.data.ignore_index,
                tta=t.tta,
            )
            if fabric.world_size > 1:
                packed = fabric.all_reduce(
                    torch.tensor([*cm.matrix.ravel().tolist(), nll, count], dtype=torch.float64, device=fabric.device),
                    reduce_op="sum",
                )
                packed = packed.cpu().numpy()
                k = data.num_classes
                cm.matrix[...] = packed[: k * k].reshape(k, k).astype(cm.matrix.dtype)
                nll, count = float(packed[-2]), int(packed[-1])
            row.update(scores(cm, nll, count, data.class_names))
        score = row.get("val_dice", math.nan) if validated else -row["train_loss"]
        improved = math.isfinite(score) and score > best
        if improved:
            best, best_epoch, bad_epochs = score, epoch + 1, 0
        elif validated:
            bad_epochs += 1
        history.append(row)
        if main:
            write_metrics_csv(out / "metrics.csv", history)
            if improved or not model_path.exists():
                provenance = {
                    **description["provenance"],
                    "epoch": epoch + 1,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
                save_model(model_path, raw_model, **{**description, "provenance": provenance})
                save_checkpoint(best_path, {"model": raw_model.state_dict(), "epoch": epoch + 1, "score": score})
            save_checkpoint(last_path, snapshot(epoch + 1, 0))
            _plot(out)
            for cb in listeners:
                cb.on_epoch_end(epoch=epoch, row=row)
        fabric.barrier()
        if out_of_time:
            log.info("time budget of %.1f minutes used up after %d epochs", t.max_minutes, epoch + 1)
            stopped_early = True
            break
        if t.early_stopping and bad_epochs >= t.early_stopping:
            log.info("early stopping: no improvement of val_dice for %d validations", bad_epochs)
            stopped_early = True
            break
    result = TrainResult(out, model_path, best_epoch, best, history, stopped_early)
    for cb in listeners:
        cb.on_train_end(result=result)
    return result


def _plot(out: Path) -> None:
    try:
        from unetkit.viz.curves import plot_curves
    except ImportError:  # pragma: no cover - the viz module ships with unetkit
        return
    plot_curves(out / "metrics.csv", out / "curves.png")
