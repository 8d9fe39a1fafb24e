"""Self-configuration: plan the network, patch, batch, spacing, normalisation and schedule from the data.

``unetkit plan DATA`` prints the plan as a table (choice | value | why) and writes ``plan.yaml``;
``unetkit train DATA`` plans first when no plan is given. The rules live in :mod:`unetkit.plan.planner`,
the spacing and topology arithmetic in :mod:`unetkit.plan.topology`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unetkit.errors import ConfigError
from unetkit.plan.decisions import Decision, Plan, flatten, load_plan
from unetkit.plan.facts import DataFacts, gather_facts, restore_facts
from unetkit.plan.machine import Machine, StepCost, StepTimer, detect_machine, measure_step
from unetkit.plan.planner import plan_training

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|)\s*$", re.IGNORECASE)


def parse_duration(text: str | float | int) -> float:
    """A budget in minutes from ``"30m"``, ``"2h"``, ``"90s"`` or a bare number of minutes.

    >>> parse_duration("2h"), parse_duration("90s"), parse_duration(15)
    (120.0, 1.5, 15.0)
    """
    if isinstance(text, int | float):
        value, unit = float(text), "m"
    else:
        m = _DURATION.match(str(text))
        if m is None:
            raise ConfigError(f"--budget {text!r}: expected a duration such as 30m, 2h or 90s")
        value, unit = float(m.group(1)), (m.group(2) or "m").lower()
    minutes = value / 60 if unit.startswith("s") else value * 60 if unit.startswith("h") else value
    if minutes <= 0:
        raise ConfigError(f"--budget {text!r}: must be more than zero")
    return minutes


def facts_of(
    path: str | Path, config: Any = None, *, task: str = "segment", self_supervised: bool = False
) -> DataFacts:
    """Load the dataset at ``path`` (checked) and summarise it for the planner.

    ``task="restore"`` reads a restoration dataset (``inputs/`` + ``targets/``; the inputs alone with
    ``self_supervised``).
    """
    from unetkit.data import load_dataset
    from unetkit.data.streamed import choose_reading, decoded_bytes

    if task == "restore":
        from unetkit.data.restore import load_restore_dataset

        rds = load_restore_dataset(path, self_supervised=self_supervised)
        return restore_facts(
            rds.samples, in_channels=rds.in_channels, out_channels=rds.out_channels, image_dtype="float32",
            target_dtype=rds.target_dtype,
        )  # fmt: skip

    data = getattr(config, "data", None)
    setting = getattr(data, "read", "auto")
    # the facts are gathered one image at a time: a set too large for memory is read from the files
    stream = setting != "memory" and choose_reading(setting, decoded_bytes(path), [])[0]
    ds = load_dataset(
        path,
        ignore_index=getattr(data, "ignore_index", None),
        mask_kind=getattr(data, "mask_kind", "auto"),
        stream=stream,
    )
    fp = ds.fingerprint
    return gather_facts(
        ds.samples,
        num_classes=ds.num_classes,
        in_channels=ds.in_channels,
        spatial_dims=ds.spatial_dims,
        image_dtype=str(fp.image_dtype or "float32"),
        class_frequencies=fp.class_frequencies,
        mask_kind=ds.label_mapping.kind,
        intensity=fp.intensity,
    )


def plan_dataset(
    path: str | Path,
    *,
    budget: str | float | None = None,
    device: str = "auto",
    fixed: Mapping[str, Any] | None = None,
    dims: int | None = None,
    timer: StepTimer | None = None,
    task: str | None = None,
    self_supervised: bool | None = None,
) -> Plan:
    """Plan training on the dataset at ``path`` for this machine.

    Args:
        path: a dataset folder or list file (as for ``unetkit train``).
        budget: wall-clock training budget (``"30m"``, ``"2h"``, minutes as a number); ``None``: the device's
            default (30 minutes on CPU, 60 on CUDA).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        fixed: config values the user set, by dotted key; they win over the plan.
        dims: 2 to train a 3D dataset slice by slice.
        timer: how a training step is measured (default: build the network and time it).
        task: ``segment`` or ``restore`` (a restoration dataset: inputs/ + targets/); default: ``fixed``'s
            ``task``, else ``segment``.
        self_supervised: restoration from the inputs alone (Noise2Void): no targets are read; default:
            ``fixed``'s ``restore.self_supervised``, else false.

    Returns:
        The :class:`Plan`; ``plan.overrides()`` are the config values, ``plan.rows()`` the table.
    """
    given = dict(fixed or {})
    task = task if task is not None else str(given.get("task", "segment"))
    if self_supervised is None:
        self_supervised = bool(given.get("restore.self_supervised", False))
    facts = facts_of(path, task=task, self_supervised=self_supervised)
    machine = detect_machine(device)
    minutes = parse_duration(budget) if budget is not None else None
    plan = plan_training(facts, machine, timer or measure_step(machine), budget_minutes=minutes, fixed=fixed, dims=dims)
    plan.facts["path"] = str(path)
    return plan


__all__ = [
    "DataFacts",
    "Decision",
    "Machine",
    "Plan",
    "StepCost",
    "StepTimer",
    "detect_machine",
    "facts_of",
    "flatten",
    "gather_facts",
    "load_plan",
    "measure_step",
    "parse_duration",
    "plan_dataset",
    "plan_training",
]
