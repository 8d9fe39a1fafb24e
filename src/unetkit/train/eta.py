"""The time a training run has left: one rule for the progress bar (``on_time_left``), ``train.log`` and where a
budget ends the learning-rate schedule.

:func:`forecast` replays the rest of the loop (:func:`unetkit.train.loop.train`) with measured costs:

    time left = the steps left x the seconds per step
              + the validations left x the seconds per validation (whole images through the tiler)
              + the epochs left x the seconds to save one (metrics, checkpoints, model file, curves)
              + the validation pictures and mid-epoch checkpoints left x their seconds

and with a time budget it stops where the loop stops: after the step that passes the deadline, then that
epoch's validation and save (so the time left can exceed the budget left by that much, as the run does).

:class:`Eta` measures the costs robustly (:func:`step_cost`, :func:`_robust`): the mean of the latest step times
without the warm-up (the run's first step, start-up, is never a sample; the slow steps right after it are left
out, and once later epochs have enough steps the first epoch's are); for validations, saves, pictures and
checkpoints the first measurement carries one-off costs (the first forward pass at the tile size, the first
model file, the first plot), so once there are more it is left out. Before the first validation its
cost is the planner's estimate (:data:`unetkit.plan.recipe.VALIDATION_COST`) from the step time.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from unetkit.plan.recipe import VALIDATION_COST
from unetkit.train.pictures import picture_due

STEP_WINDOW = 100
"""The step times the estimate looks at: the latest this many."""

COST_WINDOW = 5
"""Validations, saves, pictures and checkpoints: the estimate is the mean of the latest this many."""

REFRESH_S = 0.25
"""Between epoch ends, :meth:`Eta.tell` replays the run at most this often (a long run's replay costs about a
millisecond); in between it counts the last forecast down."""

Phase = Literal["validation", "picture", "checkpoint"]
"""What :meth:`Eta.measure` times besides the steps and the epoch's save."""


def now() -> float:
    """The clock of :class:`Eta` (monotonic seconds); a module-level name so tests can replace it."""
    return time.monotonic()


@dataclass(frozen=True)
class RunPlan:
    """What the loop will do, as far as it is known before it runs.

    Attributes:
        epochs: epochs of the run (``train.epochs``).
        steps_per_epoch: optimizer steps per epoch (``train.iterations_per_epoch``).
        val_every: validate every this many epochs (``train.val_every``); also the last epoch and the one the
            budget ends.
        validates: whether there are validation images at all.
        budget_s: the time budget in seconds from the start (``train.max_minutes``), or ``None``.
        checkpoint_every: also save ``last.safetensors`` every this many steps (``train.checkpoint_every``; 0: no).
        val_voxels: voxels one process validates (for the cost estimate before the first validation).
        step_voxels: voxels one training step sees (batch x patch).
    """

    epochs: int
    steps_per_epoch: int
    val_every: int = 1
    validates: bool = True
    budget_s: float | None = None
    checkpoint_every: int = 0
    val_voxels: float = 0.0
    step_voxels: float = 0.0

    def validation_due(self, epoch: int, out_of_time: bool = False) -> bool:
        """Whether the 0-based ``epoch`` ends with a validation: every ``val_every`` epochs, the last epoch, and
        the epoch the time budget ran out in.

        >>> plan = RunPlan(epochs=5, steps_per_epoch=10, val_every=2)
        >>> [plan.validation_due(e) for e in range(5)], plan.validation_due(0, out_of_time=True)
        ([False, True, False, True, True], True)
        """
        return self.validates and ((epoch + 1) % self.val_every == 0 or epoch + 1 == self.epochs or out_of_time)

    def shows_pictures(self, epoch: int, out_of_time: bool = False) -> bool:
        """Whether the 0-based ``epoch``'s end may write a picture (then :func:`picture_due` times it): after
        each validation; in a run with no validation images, at the run's end only (of training images).

        >>> plan = RunPlan(epochs=3, steps_per_epoch=10, validates=False)
        >>> [plan.shows_pictures(e) for e in range(3)], plan.shows_pictures(0, out_of_time=True)
        ([False, False, True], True)
        """
        if self.validates:
            return self.validation_due(epoch, out_of_time)
        return epoch + 1 == self.epochs or out_of_time

    def checkpoint_due(self, steps_done: int) -> bool:
        """Whether a mid-epoch checkpoint follows the epoch's ``steps_done``-th step (the epoch's end saves anyway).

        >>> plan = RunPlan(epochs=1, steps_per_epoch=10, checkpoint_every=4)
        >>> [s for s in range(1, 11) if plan.checkpoint_due(s)]
        [4, 8]
        """
        every = self.checkpoint_every
        return bool(every) and steps_done % every == 0 and steps_done < self.steps_per_epoch

    def checkpoints_between(self, step: int, end: int) -> int:
        """Mid-epoch checkpoints after the steps ``step + 1`` to ``end`` of an epoch.

        >>> RunPlan(epochs=1, steps_per_epoch=10, checkpoint_every=4).checkpoints_between(3, 10)
        2
        """
        every = self.checkpoint_every
        if not every:
            return 0
        last = min(end, self.steps_per_epoch - 1)
        return max(0, last // every - step // every)


@dataclass(frozen=True)
class Forecast:
    """What the rest of a run will take: ``seconds``, the training ``steps`` it will still do, and whether the
    time budget ends it (``budget_bound``), not the epoch count."""

    seconds: float
    steps: int
    budget_bound: bool = False


@dataclass(frozen=True)
class Costs:
    """Seconds each part of a run costs (what :class:`Eta` measured, for :func:`forecast`)."""

    step: float
    validation: float = 0.0
    save: float = 0.0
    picture: float = 0.0
    checkpoint: float = 0.0


def forecast(
    plan: RunPlan,
    epoch: int,
    step: int,
    costs: Costs,
    elapsed: float = 0.0,
    since_picture: float = 0.0,
    validated: bool = False,
) -> Forecast:
    """The rest of the run, by replaying the loop from ``(epoch, step)`` with ``costs``.

    Args:
        plan: the run's epochs, validations, checkpoints and budget.
        epoch: the running epoch (0-based); ``step``: the steps it has done.
        costs: seconds per step, validation, save, picture and checkpoint.
        elapsed: seconds since the run (and its budget) started.
        since_picture: seconds since the last validation picture (or the start).
        validated: the running epoch's validation is done already (its steps are).

    Early stopping is not foreseen: it can only end a run sooner.

    >>> plan = RunPlan(epochs=3, steps_per_epoch=10, val_every=1)
    >>> forecast(plan, 1, 0, Costs(step=1.0, validation=5.0, save=1.0))  # 2 x (10 + 5 + 1)
    Forecast(seconds=32.0, steps=20, budget_bound=False)
    >>> budget = RunPlan(epochs=3, steps_per_epoch=10, budget_s=20.0)   # 8 s left: 9 steps, validate, save
    >>> forecast(budget, 1, 0, Costs(step=1.0, validation=5.0, save=1.0), elapsed=12.0)
    Forecast(seconds=15.0, steps=9, budget_bound=True)
    """
    budget_left = math.inf if plan.budget_s is None else plan.budget_s - elapsed
    t, steps_left, last_picture = 0.0, 0, -since_picture
    step_s = max(costs.step, 0.0)
    while epoch < plan.epochs:
        steps = plan.steps_per_epoch - step
        out_of_time = False
        if steps > 0 and t + steps * step_s > budget_left:
            # the loop checks the deadline after every step: the step that passes it is the epoch's last
            steps = 1 if step_s <= 0 else min(steps, max(1, math.floor((budget_left - t) / step_s) + 1))
            out_of_time = True
        t += steps * step_s + plan.checkpoints_between(step, step + steps) * costs.checkpoint
        steps_left += steps
        due = plan.validation_due(epoch, out_of_time)
        if due and not validated:
            t += costs.validation
        validated = False
        t += costs.save
        shows = plan.shows_pictures(epoch, out_of_time)
        if shows and picture_due(t, last_picture, out_of_time or epoch + 1 == plan.epochs):
            t += costs.picture
            last_picture = t
        if out_of_time:
            return Forecast(t, steps_left, True)
        epoch, step = epoch + 1, 0
    return Forecast(t, steps_left, False)


def _robust(samples: Sequence[float]) -> float | None:
    """A cost from its measurements (oldest first): the first carries one-off costs, so once there are more it
    is left out and the mean of the latest :data:`COST_WINDOW` others counts (``None`` before any).

    >>> _robust([]), _robust([9.0]), _robust([9.0, 2.0]), _robust([9.0, 2.0, 3.0, 4.0])
    (None, 9.0, 2.0, 3.0)
    """
    if not samples:
        return None
    later = samples[1:]
    return statistics.fmean(later[-COST_WINDOW:]) if later else samples[0]


def step_cost(samples: Sequence[float], later: int = 0, enough: int = 20) -> float | None:
    """Seconds per training step from the latest step times (oldest first; the run's first step is never one).

    The mean, not the median: on a shared machine the slow steps are part of what the rest costs. Once
    ``enough`` of them (``later``) come after the first epoch, those alone count; before, the first epoch's,
    without its warm-up (the leading steps slower than twice the median). ``None`` without any.

    >>> step_cost([3.0, 3.0, 1.0, 1.2, 0.8, 3.0, 1.0])   # the warm-up left out, a later slow step kept
    1.4
    >>> step_cost([3.0, 3.0, 1.0, 1.2, 0.8, 3.0, 1.0, 0.5, 0.5], later=2, enough=2)
    0.5
    """
    if not samples:
        return None
    if later >= enough:
        return statistics.fmean(samples[-later:])
    twice = 2 * statistics.median(samples)
    start = next((i for i, s in enumerate(samples) if s <= twice), 0)
    return statistics.fmean(samples[start:])


class Eta:
    """Times a run (its steps, validations, pictures, checkpoints and epoch ends) and says the time it has left
    by :func:`forecast`.

    The loop calls :meth:`step` after each training step, times validations, pictures and mid-epoch
    checkpoints with :meth:`measure`, and calls :meth:`epoch_end` once an epoch is saved; the rest of the
    time between the last step and the epoch's end is its save.

    Args:
        plan: what the loop will do.
        epoch: the epoch it (re)starts in; ``step``: the steps that epoch has done.
        clock: monotonic seconds (default :func:`now`).

    >>> t = [0.0]
    >>> eta = Eta(RunPlan(epochs=2, steps_per_epoch=4), clock=lambda: t[0])
    >>> for t[0] in (5.0, 6.0, 7.0, 8.0):  # the first step (5 s: start-up) is not a sample
    ...     eta.step()
    >>> with eta.measure("validation"):
    ...     t[0] += 3.0
    >>> t[0] += 1.0; eta.epoch_end()    # the save took 1 s
    >>> eta.remaining()                 # 4 steps of 1 s, a 3 s validation, a 1 s save
    8.0
    """

    def __init__(
        self, plan: RunPlan, *, epoch: int = 0, step: int = 0, clock: Callable[[], float] | None = None
    ) -> None:
        self.plan = plan
        self._clock = clock
        self.epoch, self.step_in_epoch = epoch, step
        self.start = self.now()
        self.last_step: float | None = None
        self.last_picture = self.start
        self.steps: list[float] = []  # the latest STEP_WINDOW step times
        self.later = 0  # how many of them come after this run's first epoch
        self.first_epoch = epoch
        self.phases: dict[str, list[float]] = {"validation": [], "picture": [], "checkpoint": []}
        self.saves: list[float] = []
        self._phase_s = 0.0  # seconds of measured phases since the last step
        self._validated = False  # the running epoch's validation is done
        self._told: tuple[float, Forecast | None] | None = None  # (when, what) tell() last replayed
        self.done = False
        self.history: list[tuple[int, float, float]] = []  # (epochs done, time, estimate) at each epoch end

    def now(self) -> float:
        """The time on this run's clock (the budget's deadline is on it too)."""
        return self._clock() if self._clock is not None else now()

    # --- what the loop reports ---------------------------------------------------------------------------

    def step(self) -> None:
        """A training step ended."""
        t = self.now()
        if self.last_step is not None:
            self.steps.append(max(t - self.last_step - self._phase_s, 0.0))
            del self.steps[:-STEP_WINDOW]
            if self.epoch > self.first_epoch:
                self.later = min(self.later + 1, len(self.steps))
        self.last_step, self._phase_s = t, 0.0
        self.step_in_epoch += 1

    @contextlib.contextmanager
    def measure(self, what: Phase) -> Iterator[None]:
        """Time a validation, a validation picture or a mid-epoch checkpoint (the ``with`` block)."""
        t0 = self.now()
        try:
            yield
        finally:
            t = self.now()
            self._phase_s += t - t0
            self.phases[what].append(t - t0)
            if what == "picture":
                self.last_picture = t
            self._validated = self._validated or what == "validation"

    def picture_due(self, final: bool) -> bool:
        """Whether this validation writes a picture (:func:`unetkit.train.pictures.picture_due`, timed from the
        last picture :meth:`measure` saw, or the start): the loop asks here, so the forecast follows the same
        clock."""
        return picture_due(self.now(), self.last_picture, final)

    def epoch_end(self, final: bool = False) -> None:
        """The epoch ended: trained, validated when due, saved; ``final``: the run ends with it (the last
        epoch, the budget or early stopping)."""
        t = self.now()
        if self.last_step is not None:
            self.saves.append(max(t - self.last_step - self._phase_s, 0.0))
        self.last_step, self._phase_s, self._validated = t, 0.0, False  # the next step is timed from here
        self._told = None  # the costs changed: replay again
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.done = final or self.epoch >= self.plan.epochs
        estimate = self.remaining()
        if estimate is not None and not self.done:
            self.history.append((self.epoch, t, estimate))

    # --- what it says ------------------------------------------------------------------------------------

    def step_seconds(self) -> float | None:
        """Seconds per training step by :func:`step_cost` (``None`` before two steps): the steps after the first
        epoch alone count once they fill an epoch (or 20 steps)."""
        return step_cost(self.steps, self.later, min(self.plan.steps_per_epoch, 20))

    def costs(self) -> Costs | None:
        """The cost estimates (``None`` before two steps are timed)."""
        step_s = self.step_seconds()
        if step_s is None:
            return None
        validation = _robust(self.phases["validation"])
        if validation is None:  # the planner's estimate until one is measured
            per_voxel = step_s / self.plan.step_voxels if self.plan.step_voxels else 0.0
            validation = self.plan.val_voxels * per_voxel * VALIDATION_COST
        return Costs(
            step=step_s,
            validation=validation,
            save=_robust(self.saves) or 0.0,
            picture=_robust(self.phases["picture"]) or 0.0,
            checkpoint=_robust(self.phases["checkpoint"]) or 0.0,
        )

    def forecast(self) -> Forecast | None:
        """The rest of the run by :func:`forecast` from the costs so far (``None`` until two steps are timed)."""
        if self.done:
            return Forecast(0.0, 0, False)
        costs = self.costs()
        if costs is None:
            return None
        t = self.now()
        return forecast(
            self.plan, self.epoch, self.step_in_epoch, costs, t - self.start, t - self.last_picture, self._validated
        )

    def epochs_that_fit(self) -> int | None:
        """The epochs the run could have in all before its time budget runs out, at the costs measured so far:
        the epochs done, the running one, and as many more of the same length as the budget buys, the last one
        cut short by it. ``None`` without a budget or before two steps are timed."""
        costs = self.costs()
        if self.plan.budget_s is None or costs is None or self.done:
            return None
        t = self.now()
        open_ended = replace(self.plan, epochs=self.epoch + 100_000)  # the replay stops at the deadline
        ahead = forecast(
            open_ended, self.epoch, self.step_in_epoch, costs, t - self.start, t - self.last_picture, self._validated
        )
        return self.epoch + math.ceil((self.step_in_epoch + ahead.steps) / self.plan.steps_per_epoch)

    def extend(self, epochs: int) -> None:
        """The run now has ``epochs`` epochs (a planned budget added some)."""
        self.plan = replace(self.plan, epochs=int(epochs))

    def remaining(self) -> float | None:
        """Seconds left (``None`` until two steps are timed)."""
        f = self.forecast()
        return None if f is None else f.seconds

    def steps_per_s(self) -> float | None:
        """Training steps per second now (the inverse of :meth:`step_seconds`)."""
        step_s = self.step_seconds()
        return 1.0 / step_s if step_s else None

    def tell(self, listeners: Sequence[Any]) -> None:
        """Give the listeners the time left (their ``on_time_left``, where they have one): replayed at most
        every :data:`REFRESH_S` between epoch ends, counted down in between."""
        hooks = [h for h in (getattr(cb, "on_time_left", None) for cb in listeners) if h is not None]
        if not hooks:
            return
        t = self.now()
        told = self._told
        if told is None or told[1] is None or t - told[0] >= REFRESH_S:
            self._told = told = (t, self.forecast())
        f = told[1] if told[1] is None else replace(told[1], seconds=max(told[1].seconds - (t - told[0]), 0.0))
        rate = self.steps_per_s()
        for hook in hooks:
            hook(seconds=None if f is None else f.seconds, budget_bound=f is not None and f.budget_bound,
                 steps_per_s=rate)  # fmt: skip

    def truth(self) -> list[str]:
        """How the estimate after each epoch compares with the time the run then really had left (call it at
        the end of the run; ``train.log`` keeps these lines).

        >>> t = [0.0]
        >>> eta = Eta(RunPlan(epochs=2, steps_per_epoch=2), clock=lambda: t[0])
        >>> for t[0] in (1.0, 2.0):
        ...     eta.step()
        >>> eta.epoch_end()
        >>> for t[0] in (3.0, 4.5):
        ...     eta.step()
        >>> eta.epoch_end(final=True)
        >>> eta.truth()
        ['time left after epoch 1: estimated 2.0 s, took 2.5 s (-20%)']
        """
        end = self.now()
        lines = []
        for epochs_done, t, estimate in self.history:
            actual = end - t
            if actual > 0:
                lines.append(
                    f"time left after epoch {epochs_done}: estimated {estimate:.1f} s, took {actual:.1f} s "
                    f"({(estimate - actual) / actual:+.0%})"
                )
        return lines
