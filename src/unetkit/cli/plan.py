"""``unetkit plan``: plan training from the data and the machine, print why, write ``plan.yaml``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from unetkit.cli._common import console, setup_logging

if TYPE_CHECKING:
    from unetkit.plan import Plan


def plan_table(plan: Plan, title: str) -> Table:
    """The plan as a ``choice | value | why`` table."""
    table = Table(title=title, show_lines=False)
    table.add_column("choice", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold", max_width=28)
    table.add_column("why", overflow="fold")
    for choice, value, why in plan.rows():
        style = "cyan" if why.startswith("set by you") else None
        table.add_row(choice, value, why, style=style)
    return table


def plan_cmd(
    data: str = typer.Argument(..., help="Dataset folder (images/ + masks/) or a CSV/YAML list of pairs."),
    budget: str = typer.Option(None, "--budget", "-b", help="Training budget, e.g. 30m, 2h (default: 30m on CPU)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N: the device it is sized for."),
    dims: int = typer.Option(None, "--dims", help="2: train a 3D dataset slice by slice."),
    task: str = typer.Option("segment", "--task", help="segment (images/ + masks/) | restore (inputs/ + targets/)."),
    self_supervised: bool = typer.Option(
        False, "--self-supervised", help="With --task restore: Noise2Void, the inputs alone."
    ),
    set_: list[str] = typer.Option([], "--set", help="Fix a choice: --set section.key=value (repeatable)."),
    out: Path = typer.Option(Path("plan.yaml"), "--out", "-o", help="Where to write the plan."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON instead of a table."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Plan network, patch, batch, spacing, normalisation and schedule from the data; say why; write the plan.

    It reads the dataset, measures a training step on this machine and fits the plan to the budget.
    Train it with: unetkit train DATA --plan plan.yaml (or just unetkit train DATA, which plans first).

    Example: unetkit plan ../shared/data/isbi2012 --budget 30m --out plan.yaml
    """
    from unetkit.config import apply_overrides
    from unetkit.errors import ConfigError
    from unetkit.plan import flatten, plan_dataset

    setup_logging(verbose=verbose, quiet=as_json)
    if task not in ("segment", "restore"):
        raise ConfigError(f"--task {task!r}: use segment or restore")
    if self_supervised and task != "restore":
        raise ConfigError("--self-supervised is Noise2Void restoration: add --task restore")
    fixed = flatten(apply_overrides({}, list(set_)))
    if task == "restore":
        fixed["task"] = "restore"
        if self_supervised:
            fixed["restore.self_supervised"] = True
    plan = plan_dataset(data, budget=budget, device=device, fixed=fixed, dims=dims)  # task: from fixed
    plan.save(out)
    if as_json:
        typer.echo(json.dumps(plan.to_dict(), indent=2))
        return
    console.print(plan_table(plan, f"plan for {data} on {plan.machine.get('device')} ({plan.machine.get('name')})"))
    console.print(f"wrote {out}; train it with: unetkit train {data} --plan {out}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_cmd)
