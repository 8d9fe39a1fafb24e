"""The state of a training run: everything ``--resume`` needs, in one object with one list of checkpoint keys.

:class:`RunState` holds the counters (epoch, step, the metric history, the best score so far, patience) and
references to the objects whose state also goes into ``checkpoints/last.safetensors`` (model, optimizer,
scheduler, the random generators). :meth:`RunState.state_dict` and :meth:`RunState.load_state_dict` are the
only writer and reader of that checkpoint's keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from unetkit.errors import UnetkitError
from unetkit.metrics.best import epoch_score, score_key


@dataclass
class RunState:
    """Where a training run stands, and what a checkpoint restores.

    ``epoch`` counts finished epochs (so it is also the 0-based index of the running one) and ``step`` the
    optimizer steps done in the running epoch: a checkpoint taken mid-epoch resumes at that step.

    Attributes:
        model: the bare network (not the Fabric/DDP wrapper), for its weights.
        optimizer: the optimizer (Fabric's wrapper is fine: it saves and loads the wrapped one's state).
        scheduler: the learning-rate scheduler.
        generator: draws the patches (seeded per process).
        aug_generator: draws the augmentations; the same object as ``generator`` on CPU.
        adversary: the GAN's discriminator and its optimizer (:class:`unetkit.train.gan.Adversary`,
            ``restore.gan``), else ``None``; its entries are :attr:`ADVERSARY` keys.
        epoch: finished epochs.
        step: optimizer steps done in the running epoch.
        history: one metrics row per finished epoch (``metrics.csv``).
        best: the best epoch score so far (``val_dice``, else ``-train_loss``).
        best_epoch: the 1-based epoch that scored ``best``; -1 before any.
        bad_epochs: validations since the last improvement (early stopping).
        loss_sum: the running epoch's summed training loss, over ``loss_n`` steps.
        loss_n: the running epoch's steps so far.
        epochs: the run's epochs: ``train.epochs``, or more once a planned budget added some
            (``train.fill_budget``); 0 until the loop sets it.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    aug_generator: torch.Generator
    adversary: Any = None
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    epochs: int = 0

    # The checkpoint keys, in one place. OBJECTS have state_dict()/load_state_dict(); GENERATORS are
    # torch.Generator attributes (plus the process-wide torch RNG, which dropout draws from); COUNTERS are
    # plain values, restored with their field's type.
    OBJECTS: ClassVar[tuple[str, ...]] = ("model", "optimizer", "scheduler")
    GENERATORS: ClassVar[tuple[str, ...]] = ("generator", "aug_generator", "torch_rng")
    COUNTERS: ClassVar[tuple[str, ...]] = (
        "epoch",
        "step",
        "history",
        "best",
        "best_epoch",
        "bad_epochs",
        "loss_sum",
        "loss_n",
    )
    KEYS: ClassVar[tuple[str, ...]] = OBJECTS + GENERATORS + COUNTERS
    #: counters a checkpoint of an older unetkit may lack (their field's default then stands)
    OPTIONAL: ClassVar[tuple[str, ...]] = ("epochs",)
    #: the keys an adversarial run (``restore.gan``) adds: the discriminator, its optimizer, its running sums
    ADVERSARY: ClassVar[tuple[str, ...]] = ("discriminator", "d_optimizer", "adversary")

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds, keyed by :attr:`KEYS` (tensors, numbers, lists, dicts)."""
        state: dict[str, Any] = {k: getattr(self, k).state_dict() for k in self.OBJECTS}
        state["generator"] = self.generator.get_state()
        state["aug_generator"] = self.aug_generator.get_state()
        state["torch_rng"] = torch.get_rng_state()
        for k in self.COUNTERS + self.OPTIONAL:
            value = getattr(self, k)
            state[k] = list(value) if isinstance(value, list) else value
        if self.adversary is not None:
            state.update(self.adversary.state_dict())
        return state

    def load_state_dict(self, state: Mapping[str, Any], source: str = "the checkpoint") -> None:
        """Restore what :meth:`state_dict` returned (also from checkpoints older unetkit versions wrote).

        Call it after ``fabric.setup``, so the optimizer state lands on the parameters' device, and after any
        re-seeding of the torch RNG, which it restores.

        Raises:
            UnetkitError: ``state`` lacks some of :attr:`KEYS` (``source`` names it in the message).
        """
        missing = [k for k in self.KEYS if k not in state]
        if missing:
            raise UnetkitError(f"{source} lacks {', '.join(missing)}; it cannot be resumed, start a new run")
        gan_keys = [k for k in self.ADVERSARY if k in state]
        if self.adversary is not None and len(gan_keys) < len(self.ADVERSARY):
            raise UnetkitError(
                f"{source} holds no discriminator (trained without restore.gan); resume it with "
                "restore.gan: false, or start a new run"
            )
        if self.adversary is None and gan_keys:
            raise UnetkitError(f"{source} is an adversarial run; resume it with restore.gan: true")
        for k in self.OBJECTS:
            getattr(self, k).load_state_dict(state[k])
        self.generator.set_state(state["generator"])
        if self.aug_generator is not self.generator:
            self.aug_generator.set_state(state["aug_generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.adversary is not None:
            self.adversary.load_state_dict(state)
        for k in self.COUNTERS + tuple(k for k in self.OPTIONAL if k in state):
            setattr(self, k, type(getattr(self, k))(state[k]))

    def add_step(self, loss: float) -> None:
        """Count one optimizer step of the running epoch with training loss ``loss``."""
        self.step += 1
        self.loss_sum += loss
        self.loss_n += 1

    def train_loss(self) -> float:
        """The running epoch's mean training loss so far."""
        return self.loss_sum / max(self.loss_n, 1)

    def end_epoch(self, row: dict[str, Any]) -> bool:
        """Close the running epoch with its metrics ``row``; return whether its :func:`epoch_score` is the best
        so far. Only validations that do not improve count towards early stopping."""
        validated = score_key(row) != "train_loss"
        score = epoch_score(row)
        improved = math.isfinite(score) and score > self.best
        if improved:
            self.best, self.best_epoch, self.bad_epochs = score, self.epoch + 1, 0
        elif validated:
            self.bad_epochs += 1
        self.history.append(row)
        self.epoch, self.step = self.epoch + 1, 0
        self.loss_sum, self.loss_n = 0.0, 0
        return improved
