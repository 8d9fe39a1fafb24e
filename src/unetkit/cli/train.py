"""``unetkit train`` and ``unetkit config init``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from unetkit.cli._common import console, setup_logging
from unetkit.errors import ConfigError, UnetkitError

config_app = typer.Typer(help="Write or show training configurations.", no_args_is_help=True)


if TYPE_CHECKING:  # the callback base only for the type checker: --help must not import torch
    from unetkit.train.callbacks import BaseCallback as _CallbackBase
else:
    _CallbackBase = object


class RichProgress(_CallbackBase):
    """A progress bar: epoch, steps, loss, the last validation score, steps/s and patches/s, time elapsed and
    time left.

    The time left is the run's (``on_time_left``: the rule of :mod:`unetkit.train.eta`, which the epoch lines
    in ``train.log`` show too); the epoch lines themselves are the run's log lines (console and ``train.log``).
    The final frame keeps the final validation score and says how the run ended.
    A :class:`unetkit.train.callbacks.Callback` (by its methods, so ``--help`` need not import the library).

    Args:
        quiet: no bar.
        display: the rich console to draw on (default: the CLI's).
    """

    def __init__(self, quiet: bool = False, display: Any = None) -> None:
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps  loss {task.fields[loss]:.4f}  {task.fields[score]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=display or console,
            disable=quiet,
        )
        self.task: Any = None
        self.score = "val -"
        self.left = "left -"
        self.steps_per_s: float | None = None
        self.epochs = self.steps_per_epoch = 0

    def on_train_start(
        self, *, epochs: int, steps_per_epoch: int, start_epoch: int, start_step: int, budget_s: float | None = None
    ) -> None:
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        done = start_epoch * steps_per_epoch + start_step
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=epochs * steps_per_epoch, completed=done, epoch=f"{start_epoch + 1}/{epochs}",
            loss=0.0, score=self.score, rate="", eta=self.left,
        )  # fmt: skip

    def on_epochs(self, *, epochs: int) -> None:
        self.epochs = epochs
        if self.task is not None:
            self.progress.update(self.task, total=epochs * self.steps_per_epoch)

    def on_time_left(self, *, seconds: float | None, budget_bound: bool, steps_per_s: float | None) -> None:
        from unetkit.train.callbacks import time_left

        self.left, self.steps_per_s = time_left(seconds, budget_bound), steps_per_s

    def on_step(self, *, epoch: int, step: int, loss: float, images_per_s: float) -> None:
        steps = f"{self.steps_per_s:.2f} steps/s, " if self.steps_per_s else ""
        self.progress.update(
            self.task, advance=1, epoch=f"{epoch + 1}/{self.epochs}", loss=loss, score=self.score,
            rate=f"{steps}{images_per_s:.1f} patches/s", eta=self.left,
        )  # fmt: skip

    def on_epoch_end(self, *, epoch: int, row: dict[str, Any]) -> None:
        from unetkit.metrics.best import score_key

        key = score_key(row)
        if key != "train_loss" and isinstance(row.get(key), int | float):
            self.score = f"{key} {row[key]:.4f}"
        self.progress.update(self.task, score=self.score, eta=self.left)

    def on_train_end(self, *, result: Any) -> None:
        ended = "stopped early" if getattr(result, "stopped_early", False) else "done"
        self.progress.update(self.task, score=self.score, eta=ended)
        self.progress.stop()


def _check_out(out: Path, *datasets: str | None) -> None:
    """The run folder may not be a file, a dataset folder or inside one (training never writes among its inputs)."""
    if out.exists() and not out.is_dir():
        raise UnetkitError(f"--out {out} is a file; give a folder for the run (it is created if missing)")
    target = out.resolve()
    for data in datasets:
        if data is None or not Path(data).is_dir():
            continue
        root = Path(data).resolve()
        if target == root or root in target.parents:
            raise UnetkitError(f"--out {out} is inside the dataset {data}; put the run folder elsewhere, e.g. runs/")


def _parse_fold(text: str | None) -> list[str]:
    if text is None:
        return []
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and int(n) >= 2 and 1 <= int(k) <= int(n)):
        raise UnetkitError(f"--fold {text!r}: expected K/N with 1 <= K <= N and N >= 2, e.g. --fold 1/5")
    return [f"data.fold={int(k) - 1}", f"data.num_folds={n}"]


def train_cmd(
    data: str = typer.Argument(None, help="Dataset folder (images/ + masks/) or a CSV/YAML list of pairs."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder to create (default runs/<dataset>)."),
    budget: str = typer.Option(None, "--budget", "-b", help="Training time budget the plan fits, e.g. 30m, 2h."),
    plan_file: Path = typer.Option(None, "--plan", help="Train a saved plan (unetkit plan ... --out plan.yaml)."),
    no_plan: bool = typer.Option(False, "--no-plan", help="Skip planning: the config's fixed defaults."),
    dims: int = typer.Option(None, "--dims", help="2: train a 3D dataset slice by slice."),
    fold: str = typer.Option(None, "--fold", help="K/N: train fold K of an N-fold cross-validation."),
    folds: int = typer.Option(None, "--folds", help="Train all N folds (RUN/fold_K), an ensemble for predict."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config (see `unetkit config init`)."),
    epochs: int = typer.Option(None, "--epochs", help="Number of epochs (train.epochs)."),
    model: str = typer.Option(None, "--model", help="Model preset (see `unetkit models`); default: planned."),
    patch: int = typer.Option(None, "--patch", help="Patch (network input) size per axis."),
    batch: int = typer.Option(None, "--batch", help="Patches per step (train.batch_size)."),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N."),
    devices: int = typer.Option(None, "--devices", help="Processes/GPUs per node; > 1 trains with DDP."),
    loss: str = typer.Option(
        None, "--loss", help="Loss (train.loss; restore.loss with --task restore); `unetkit config init` lists them."
    ),
    classes: str = typer.Option(
        None,
        "--classes",
        help="Class names, class 0 first, optionally with colours: membrane,cell or membrane:#ff0000,cell:0,255,0 "
        "(data.classes; pins the number of classes).",
    ),
    task: str = typer.Option(None, "--task", help="segment (images/ + masks/) | restore (inputs/ + targets/)."),
    self_supervised: bool = typer.Option(
        False, "--self-supervised", help="With --task restore: Noise2Void, from the noisy inputs alone."
    ),
    gan: bool = typer.Option(
        False, "--gan", help="With --task restore: pix2pix, a PatchGAN discriminator adds an adversarial loss to L1."
    ),
    set_: list[str] = typer.Option([], "--set", help="Any field: --set section.key=value (repeatable)."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this folder where it stopped."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (for CI and logs)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Train a U-Net on a folder of images and masks (--task restore: inputs and targets); writes
    model.safetensors, metrics and curves to --out.

    With no other flags it first plans network, patch, batch, spacing, normalisation and schedule from the
    data and this machine (as `unetkit plan` does), prints why, and saves plan.yaml in the run folder; every
    flag, --set or config key overrides the plan's choice.

    Example: unetkit train ../shared/data/isbi2012 --out runs/isbi --budget 30m

    Example: unetkit train pairs/ --task restore --out runs/care --budget 10m   (pairs/inputs, pairs/targets)
    """
    from unetkit.config import load_config
    from unetkit.train import train
    from unetkit.train.callbacks import is_rank_zero, quiet_other_ranks

    quiet = quiet or not is_rank_zero()  # DDP: rank 0 reports for every process (the launcher's RANK)
    setup_logging(verbose=verbose, quiet=quiet)
    quiet_other_ranks()
    flags = {
        "data.path": data,
        "train.epochs": epochs,
        "model.name": model,
        "data.patch_size": patch,
        "train.batch_size": batch,
        "train.device": device,
        "train.devices": devices,
        "train.loss": loss if task != "restore" else None,
        "restore.loss": loss if task == "restore" else None,
        "task": task,
    }
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None]
    if classes is not None:
        import json

        from unetkit.classes import parse_classes

        overrides.append("data.classes=" + json.dumps([c.to_dict() for c in parse_classes(classes, "--classes")]))
    if self_supervised:
        if task != "restore":
            raise UnetkitError("--self-supervised is Noise2Void restoration: add --task restore")
        overrides.append("restore.self_supervised=true")
    if gan:
        if task != "restore":
            raise UnetkitError("--gan trains a restoration network adversarially: add --task restore")
        overrides.append("restore.gan=true")
    overrides += _parse_fold(fold) + list(set_)
    plan = None
    if resume is not None:
        if out is not None and Path(out) != resume:
            raise UnetkitError("--resume RUN continues RUN in place; leave out --out")
        if not (resume / "config.yaml").is_file():
            raise UnetkitError(f"{resume}: no config.yaml here; is this a unetkit run folder?")
        cfg = load_config(resume / "config.yaml", overrides)
        out = resume
    elif no_plan:
        if budget is not None or plan_file is not None or dims is not None:
            raise UnetkitError("--no-plan trains the fixed defaults; leave out --budget, --plan and --dims")
        cfg = load_config(config, overrides)
        out = out or Path("runs") / cfg.model.name
    else:
        from unetkit.cli.plan import plan_table
        from unetkit.plan import flatten, load_plan, plan_dataset
        from unetkit.plan.apply import planned_config, user_settings

        user = user_settings(config, overrides)
        path = user.get("data", {}).get("path")
        if path is None:
            raise UnetkitError("no dataset given: unetkit train DATA (or data.path in --config)")
        if plan_file is not None:
            if budget is not None or dims is not None:
                raise UnetkitError("--plan trains a saved plan; plan again with unetkit plan --budget/--dims instead")
            plan = load_plan(plan_file)
        else:
            launched = "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1
            if launched and int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1"))) > 1:
                # torchrun/srun start every process at once, each would plan for itself by timing a busy machine
                # and could pick another network (--devices N plans once: rank 0 plans before it launches the
                # others, which then read its measured steps from the cache)
                raise ConfigError(
                    "unetkit train under torchrun/SLURM with several processes: plan once first "
                    "(unetkit plan DATA --out plan.yaml), then launch unetkit train DATA --plan plan.yaml "
                    "(docs/scale.md)"
                )
            fixed = flatten(user)
            plan = plan_dataset(path, budget=budget, device=str(device or "auto"), fixed=fixed, dims=dims)
        cfg = planned_config(plan, user, str(plan_file or "the plan"))
        out = out or Path("runs") / Path(str(path)).name
        if not quiet:
            console.print(plan_table(plan, f"plan for {path}"))
    _check_out(Path(out), cfg.data.path, cfg.data.val_path)
    if folds is not None:
        if fold is not None or resume is not None:
            raise UnetkitError("--folds N trains every fold; leave out --fold and --resume (resume one fold folder)")
        if folds < 2:
            raise UnetkitError(f"--folds {folds}: a cross-validation needs at least 2 folds")
        for k in range(folds):
            cfg_k = cfg.model_copy(deep=True)
            cfg_k.data.fold, cfg_k.data.num_folds = k, folds
            if not quiet:
                console.print(f"[bold]fold {k + 1}/{folds}[/]")
            train(cfg_k, Path(out) / f"fold_{k + 1}", callbacks=[RichProgress(quiet)], plan=plan)
        ensemble = f"{Path(out)}/fold_*/model.safetensors"
        if is_rank_zero():
            console.print(
                f"{folds} folds trained; predict with all of them: unetkit predict {ensemble} IMAGES --out PRED"
            )
            if cfg.task == "restore":  # measured: the folds err alike (benchmarks/restore_folds.py)
                console.print(
                    "for a restoration, their ensemble scores about their mean: one model trained with the folds' "
                    "whole budget scored higher (docs/restoration.md)"
                )
        return
    result = train(cfg, out, resume=resume is not None, callbacks=[RichProgress(quiet)], plan=plan)
    if quiet and is_rank_zero():  # the log lines (the summary and the next command) are not shown: the model is
        console.print(str(result.model_path))


@config_app.command("init")
def config_init(
    out: Path = typer.Option(None, "--out", "-o", help="Write here instead of printing."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented default configuration with every key.

    Example: unetkit config init --out train.yaml
    """
    from unetkit.config import default_config_text
    from unetkit.utils import atomic_path

    text = default_config_text()
    if out is None:
        console.print(text, markup=False, highlight=False, end="")
        return
    if out.exists() and not force:
        raise UnetkitError(f"{out} exists; pass --force to overwrite it")
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    console.print(f"wrote {out}")


@config_app.command("show")
def config_show(
    config: Path = typer.Argument(None, help="A YAML config; the defaults when omitted."),
    set_: list[str] = typer.Option([], "--set", help="Overrides: section.key=value."),
) -> None:
    """Validate a configuration and print it resolved (defaults filled in).

    Example: unetkit config show train.yaml --set train.lr=0.01
    """
    import yaml

    from unetkit.config import load_config

    cfg = load_config(config, list(set_))
    console.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.add_typer(config_app, name="config")
