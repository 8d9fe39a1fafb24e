"""The LR schedule under a moving end (a time budget's forecast): it never rises and ends where the run ends."""

from __future__ import annotations

import itertools

import pytest
import torch

from unetkit.train.schedule import LRFactor, lr_factor, make_scheduler


def test_without_a_moving_end_the_factor_is_the_plain_schedule() -> None:
    f = LRFactor(120, "poly", warmup=10)
    assert [f(s) for s in range(0, 130, 7)] == pytest.approx([lr_factor(s, 120, "poly", 10) for s in range(0, 130, 7)])


@pytest.mark.parametrize("kind", ["poly", "cosine"])
def test_an_end_that_moves_in_then_out_never_raises_the_rate_and_reaches_zero_at_the_real_end(kind: str) -> None:
    """Slow steps first (the forecast says 300 of 1000 planned steps), then faster ones (650), then on time."""
    f = LRFactor(1000, kind)
    rates, forecasts = [], {100: 300, 200: 650, 400: 650, 500: 640}
    for step in range(0, 641):
        if step in forecasts:
            f.end_at(step, forecasts[step])
        rates.append(f(step))
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(rates))
    assert rates[-1] == pytest.approx(0.0, abs=1e-9) and min(rates[:-1]) > 0  # zero at the end, not before
    # the bug this replaces: an end moved in to 300 and kept there left the last 340 steps at lr 0
    assert rates[300] > 0.2


def test_the_end_never_passes_the_planned_steps_nor_moves_inside_the_warm_up() -> None:
    f = LRFactor(100, "poly", warmup=20)
    assert not f.end_at(10, 50) and f.total == 100
    assert f.end_at(30, 60) and f.total == 60
    assert f.end_at(40, 10_000) and f.total == 100


def test_the_moved_schedule_survives_a_checkpoint() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    a = make_scheduler(opt, 1000, "poly")
    for _ in range(150):
        opt.step()
        a.step()
    a.lr_lambdas[0].end_at(150, 400)
    state = a.state_dict()
    b = make_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 1000, "poly")
    b.load_state_dict(state)
    assert [b.lr_lambdas[0](s) for s in (150, 275, 399)] == [a.lr_lambdas[0](s) for s in (150, 275, 399)]
