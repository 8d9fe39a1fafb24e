"""The training run on Lightning Fabric, CPU or CUDA, one process or DDP: set it up, then epoch after epoch.

data (check, load, normalise, weight maps) -> patches -> augmentation -> network -> loss -> step
                                              validation: whole images through the tiler -> Dice / IoU

:func:`train` builds the run (:class:`~unetkit.train.epoch.RunSetup`) and its checkpointed state
(:class:`~unetkit.train.state.RunState`); :mod:`unetkit.train.epoch` trains, validates and saves each epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unetkit._version import __version__
from unetkit.augment import Augmenter
from unetkit.config import Config, save_config
from unetkit.errors import ConfigError, UnetkitError
from unetkit.infer.tiling import default_tile
from unetkit.metrics.best import LOWER_IS_BETTER, score_key
from unetkit.models import create_model
from unetkit.models.base import SegmentationModel, memory_format
from unetkit.train.callbacks import (
    BaseCallback,
    TensorBoardLogger,
    epoch_line,
    next_command,
    quiet_other_ranks,
    run_log,
    start_summary,
    time_left,
)
from unetkit.train.checkpoint import load_checkpoint
from unetkit.train.data import TrainingData
from unetkit.train.epoch import RunSetup, save_epoch, train_epoch, validate_epoch
from unetkit.train.eta import Eta, RunPlan
from unetkit.train.launch import process_layout
from unetkit.train.pictures import validation_picture
from unetkit.train.schedule import LRFactor, make_scheduler
from unetkit.train.state import RunState
from unetkit.train.task import make_task
from unetkit.utils import check_device, write_json

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


def _fit_schedule_to_budget(setup: RunSetup, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """With a time budget, end the LR schedule where the run will end, by its latest forecast.

    Where the run ends is what its time left says (:meth:`unetkit.train.eta.Eta.forecast`: the steps until
    the deadline, validations and saves included, or the planned steps if they come first). The end moves
    earlier when the steps slow down and back out when they speed up; the rate only ever falls
    (:meth:`~unetkit.train.schedule.LRFactor.end_at`). Rank 0 decides, so every process follows one schedule.
    """
    factor = scheduler.lr_lambdas[0]
    if setup.deadline == math.inf or not isinstance(factor, LRFactor):
        return
    before = factor.total
    step = int(scheduler.last_epoch)
    if setup.fabric.is_global_zero:
        ahead = setup.eta.forecast()
        if ahead is not None:
            factor.end_at(step, step + ahead.steps)
    state = setup.fabric.broadcast([factor.total, factor.anchor, factor.t_anchor])
    factor.total, factor.anchor, factor.t_anchor = int(state[0]), int(state[1]), float(state[2])
    if abs(factor.total - before) > 0.05 * before:
        log.info("the time budget buys about %d steps, not %d: the learning-rate schedule now ends there",
                 factor.total, before)  # fmt: skip


def _fill_budget(setup: RunSetup, run: RunState, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Under a planned budget (``train.fill_budget``), add epochs of the same length while the measured costs
    say the budget buys them (:meth:`unetkit.train.eta.Eta.epochs_that_fit`): the plan's step time is measured
    before training, and a run faster than that would otherwise end with budget left. Never removes epochs
    (the deadline already stops a slower run). Rank 0 decides."""
    t = setup.config.train
    if not t.fill_budget or setup.deadline == math.inf:
        return
    extra = 0
    if setup.fabric.is_global_zero:
        fits = setup.eta.epochs_that_fit()
        extra = 0 if fits is None else max(0, fits - run.epochs)
    extra = int(setup.fabric.broadcast(extra))
    if not extra:
        return
    run.epochs += extra
    setup.eta.extend(run.epochs)
    factor = scheduler.lr_lambdas[0]
    if isinstance(factor, LRFactor):
        factor.planned = run.epochs * t.iterations_per_epoch
    log.info("the steps are faster than planned: %d more epoch%s fit the budget (%d in all)",
             extra, "s" * (extra > 1), run.epochs)  # fmt: skip
    for cb in setup.listeners:
        hook = getattr(cb, "on_epochs", None)
        if hook is not None:
            hook(epochs=run.epochs)


def _fabric(cfg: Config) -> Any:
    from lightning_fabric import Fabric

    t = cfg.train
    dev = check_device(t.device, "train.device (--device)")
    accelerator = "cuda" if dev.startswith("cuda") else "cpu"
    per_node, num_nodes = process_layout(t.devices, t.num_nodes)  # torchrun / srun set them when they launch
    devices: Any = [int(dev[5:])] if dev.startswith("cuda:") and per_node == 1 else per_node
    precision = t.precision
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "cuda" and torch.cuda.is_bf16_supported() else "32"
    if precision != "32" and accelerator == "cpu":
        log.warning(
            "precision %s on CPU is slow here (no native bf16/fp16); consider --set train.precision=32", precision
        )
    strategy = t.strategy if (per_node > 1 or num_nodes > 1) else "auto"
    if strategy == "auto" and (per_node > 1 or num_nodes > 1):
        strategy = "ddp"
    return Fabric(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision="32-true" if precision == "32" else precision,
    )


def legal_patch(model: SegmentationModel, patch: int | Sequence[int]) -> list[int]:
    """Round a requested patch (network input) size to a legal one by the one rounding rule
    (:meth:`unetkit.shapes.ShapeContract.round`, docs/design.md): valid nets to the nearest legal size, same nets up."""
    legal = list(model.contract.round(patch, "patch"))
    sizes = [int(patch)] * len(legal) if isinstance(patch, int) else [int(p) for p in patch]
    if legal != sizes:
        log.info("patch size %s is not legal for this network: using %s", sizes, legal)
    return legal


def prediction_tile(model: SegmentationModel, patch: Sequence[int]) -> list[int]:
    """The tile recorded for prediction: at least the training patch, at least the default tile's output
    pixels per axis (:func:`unetkit.infer.tiling.default_tile`: 512 in 2D, 96 in 3D), since larger tiles waste
    less on borders and halos; rounded by the contract's rule."""
    floor = default_tile(model.spatial_dims)
    wanted = [max(int(p), floor + 2 * m) for p, m in zip(patch, model.contract.margin(), strict=True)]
    return list(model.contract.round(wanted, "tile"))


def _optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def _build_model(cfg: Config, data: TrainingData | Any) -> SegmentationModel:
    args = dict(cfg.model.args)
    if cfg.task == "restore":
        # instance norm removes each patch's intensity level, which a restoration must keep (CARE: none)
        args.setdefault("norm", "none")
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
    config: Config,
    out: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[BaseCallback] = (),
    plan: Any = None,
) -> TrainResult:
    """Train a network as ``config`` says and write the run folder ``out``.

    Set up once (devices, data, network, patches, optimizer; the checkpoint when resuming), then per epoch:
    train it, validate it (every ``train.val_every`` epochs, and the last one), save it, and stop at the last
    epoch, when the time budget is used up, or after ``train.early_stopping`` validations without improvement.

    Args:
        config: the validated configuration (``unetkit.config.load_config``).
        out: the run folder: ``config.yaml``, ``metrics.csv``, ``checkpoints/``, ``model.safetensors``
            (the best model), ``curves.png``, ``tensorboard/``.
        resume: continue from ``out/checkpoints/last.safetensors`` (epoch, step, optimizer, RNG states).
        callbacks: progress hooks, called on the main process.
        plan: the :class:`~unetkit.plan.Plan` the config came from, saved as ``out/plan.yaml`` and (its
            decisions) in the model file.

    Returns:
        A :class:`TrainResult`.
    """
    out = Path(out)
    t = config.train
    if t.threads:
        torch.set_num_threads(t.threads)
    task = make_task(config)  # before any work: may refuse the config
    last_path = out / "checkpoints" / "last.safetensors"
    checkpoint: dict[str, Any] | None = None
    if resume:
        checkpoint = load_checkpoint(last_path)
    elif last_path.exists():
        raise UnetkitError(f"{out} already holds a run; continue it with --resume {out} or choose another --out")

    fabric = _fabric(config)
    fabric.launch()
    main = fabric.is_global_zero
    quiet_other_ranks(fabric)  # rank 0 reports for every process
    if main:
        out.mkdir(parents=True, exist_ok=True)
    with run_log(out / "train.log", enabled=main):
        return _train(config, out, fabric, task, checkpoint, last_path, callbacks, plan)


def _train(
    config: Config,
    out: Path,
    fabric: Any,
    task: Any,
    checkpoint: dict[str, Any] | None,
    last_path: Path,
    callbacks: Sequence[BaseCallback],
    plan: Any,
) -> TrainResult:
    """The body of :func:`train` once the processes are launched (and rank 0 logs to ``train.log``)."""
    t = config.train
    main = fabric.is_global_zero
    log.debug("unetkit %s, torch %s; config digest %s", __version__, torch.__version__, config.digest())
    if main:  # rank 0 fills the weight-map cache, the others then read it
        data = task.prepare(out / "cache")
    fabric.barrier()
    if not main:
        data = task.prepare(out / "cache")
    torch.manual_seed(t.seed)  # the initial weights (DDP then broadcasts rank 0's anyway)
    model = _build_model(config, data)
    if t.channels_last:  # before the optimizer and Fabric see the parameters
        model = model.to(memory_format=memory_format(model.spatial_dims, True))  # type: ignore[call-overload]
    patch = legal_patch(model, config.data.patch_size)
    out_patch = list(model.output_shape(patch))
    tile = prediction_tile(model, patch)
    sampler = task.sampler(data, patch, out_patch)
    augmenter = Augmenter(config.augment, model.spatial_dims)
    optimizer = _optimizer(config, model)
    total_steps = t.epochs * t.iterations_per_epoch
    scheduler = make_scheduler(optimizer, total_steps, t.schedule, round(t.warmup_epochs * t.iterations_per_epoch))
    gen = torch.Generator().manual_seed(t.seed * 1_000_003 + fabric.global_rank)
    aug_gen = gen if fabric.device.type == "cpu" else torch.Generator(fabric.device).manual_seed(t.seed + 17)
    fabric_model, optimizer = fabric.setup(model, optimizer)
    torch.manual_seed(t.seed * 7919 + fabric.global_rank)  # dropout draws from the global generator
    adversary = task.adversary(data, out_patch, fabric, total_steps)  # restore.gan: the discriminator
    run = RunState(model, optimizer, scheduler, gen, aug_gen, adversary)
    if checkpoint is not None:
        # after fabric.setup, so the optimizer state lands on the parameters' device
        run.load_state_dict(checkpoint, source=str(last_path))
        log.info("resuming %s at epoch %d, step %d", out, run.epoch + 1, run.step)
    run.epochs = max(run.epochs, t.epochs)  # a resumed run keeps the epochs its budget added
    if run.epoch >= run.epochs:
        raise UnetkitError(f"{out}: already trained {run.epoch} epochs; raise --epochs to continue it")

    if main:
        save_config(config, out / "config.yaml")
        write_json(out / "split.json", data.split)
        if plan is not None:
            plan.save(out / "plan.yaml")
    summary = start_summary(
        out=out, data_path=config.data.path, n_train=len(data.train), n_val=len(data.val),
        spatial_dims=data.spatial_dims, in_channels=data.in_channels,
        class_names=list(getattr(data, "class_names", []) or []) if config.task == "segment" else [],
        model_name=config.model.name, parameters=sum(p.numel() for p in model.parameters()), patch=patch,
        out_patch=out_patch, batch_size=t.batch_size, epochs=run.epochs, steps_per_epoch=t.iterations_per_epoch,
        val_every=t.val_every, device=str(fabric.device), processes=fabric.world_size,
        precision=str(getattr(fabric.strategy.precision, "precision", t.precision)),
        budget_minutes=t.max_minutes, start_epoch=run.epoch, channels_last=t.channels_last,
    )  # fmt: skip
    for line in summary:
        log.info(line)
    budget_s = t.max_minutes * 60 if t.max_minutes else None
    listeners: list[BaseCallback] = [*callbacks, TensorBoardLogger(out / "tensorboard")] if main else []
    for cb in listeners:
        cb.on_train_start(
            epochs=run.epochs, steps_per_epoch=t.iterations_per_epoch, start_epoch=run.epoch, start_step=run.step,
            budget_s=budget_s,
        )  # fmt: skip

    description: dict[str, Any] = dict(
        **task.describe(data),
        tile_size=tile,
        spacing=list(data.spacing) if data.spacing else None,
        provenance={
            "dataset_digest": data.fingerprint.get("digest"),
            "config_digest": config.digest(),
            "trained_with": f"unetkit {__version__}",
            **task.provenance(),
        },
    )
    description["extra"] = {"target": data.target}
    if plan is not None:
        description["extra"]["plan"] = plan.to_dict()["decisions"]
    eta = Eta(
        RunPlan(
            epochs=run.epochs, steps_per_epoch=t.iterations_per_epoch, val_every=t.val_every, validates=bool(data.val),
            budget_s=budget_s, checkpoint_every=t.checkpoint_every,
            val_voxels=sum(math.prod(s.image.shape[1:]) for s in data.val[:: fabric.world_size]),
            step_voxels=t.batch_size * math.prod(patch),
        ),
        epoch=run.epoch, step=run.step,
    )  # fmt: skip
    setup = RunSetup(
        config=config,
        fabric=fabric,
        model=fabric_model,
        data=data,
        task=task,
        loss_fn=task.loss_fn,
        sampler=sampler,
        augmenter=augmenter,
        patch=patch,
        out_patch=out_patch,
        tile=tile,
        use_weight_map=task.use_weight_map,
        out=out,
        description=description,
        listeners=listeners,
        eta=eta,
        deadline=eta.start + budget_s if budget_s else math.inf,
    )
    stopped_early = False
    while run.epoch < run.epochs:
        epoch = run.epoch
        row, out_of_time = train_epoch(setup, run)
        if run.adversary is not None:
            row.update(run.adversary.end_epoch())
        if eta.plan.validation_due(epoch, out_of_time):
            with eta.measure("validation"):
                row.update(validate_epoch(setup))
        if not out_of_time:
            _fill_budget(setup, run, scheduler)
            _fit_schedule_to_budget(setup, scheduler)
        improved = run.end_epoch(row)
        save_epoch(setup, run, improved)
        final = out_of_time or run.epoch >= run.epochs or bool(t.early_stopping and run.bad_epochs >= t.early_stopping)
        if main and eta.plan.shows_pictures(epoch, out_of_time) and eta.picture_due(final):
            with eta.measure("picture"):
                validation_picture(setup, epoch + 1)
        eta.epoch_end(final)
        eta.tell(listeners)
        ahead = None if final else eta.forecast()
        log.info(epoch_line(row, None if ahead is None else time_left(ahead.seconds, ahead.budget_bound)))
        for cb in listeners:
            cb.on_epoch_end(epoch=epoch, row=row)
        if out_of_time:
            log.info("time budget of %.1f minutes used up after %d epochs", t.max_minutes, run.epoch)
            stopped_early = True
            break
        if t.early_stopping and run.bad_epochs >= t.early_stopping:
            log.info("early stopping: no improvement of %s for %d validations", task.score_key, run.bad_epochs)
            stopped_early = True
            break
    for line in eta.truth():
        log.debug(line)
    result = TrainResult(out, setup.model_path, run.best_epoch, run.best, run.history, stopped_early)
    for cb in listeners:
        cb.on_train_end(result=result)
    best_row = next((r for r in run.history if r.get("epoch") == run.best_epoch), {})
    key = score_key(best_row) if best_row else task.score_key
    score = -run.best if key in LOWER_IS_BETTER else run.best  # epoch_score negates the losses
    log.info("done: best epoch %d (%s %.4f); model %s", run.best_epoch, key, score, setup.model_path)
    log.info("next: %s", next_command(setup.model_path, config.data.path, out))
    return result
