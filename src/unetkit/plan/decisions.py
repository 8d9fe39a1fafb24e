"""A plan: the decisions the planner made, each with its value, why, and who set it; saved as ``plan.yaml``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from unetkit.errors import ConfigError
from unetkit.utils import atomic_path, read_yaml

PLAN_FORMAT = "unetkit-plan"
PLAN_VERSION = 1

Source = Literal["plan", "you"]


@dataclass(frozen=True)
class Decision:
    """One choice: a name for people, the config key it sets (``None`` for advice only), value and why.

    ``source="you"`` marks a value the user set (a flag, ``--set`` or a config key): the plan keeps it and
    says so.
    """

    choice: str
    value: Any
    why: str
    key: str | None = None
    source: Source = "plan"

    def shown_value(self) -> str:
        """The value as the table prints it."""
        v = self.value
        if isinstance(v, list | tuple) and v and all(isinstance(x, list | tuple) for x in v):
            return ", ".join("x".join(str(y) for y in x) for x in v)
        if isinstance(v, list | tuple):
            return " x ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)


@dataclass
class Plan:
    """The decisions, the facts they came from and the machine they were sized for.

    ``overrides()`` gives the config values to apply (``{"data.patch_size": [256, 256], ...}``).
    """

    decisions: list[Decision] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def add(self, choice: str, value: Any, why: str, key: str | None = None, source: Source = "plan") -> Any:
        """Record a decision; returns ``value`` so rules read as assignments."""
        self.decisions.append(Decision(choice, value, why, key, source))
        return value

    def get(self, key: str) -> Any:
        """The value decided for a config key (``KeyError`` when the plan does not set it)."""
        for d in self.decisions:
            if d.key == key:
                return d.value
        raise KeyError(key)

    def overrides(self) -> dict[str, Any]:
        """Config key -> value for every decision that sets one (the user's own values included)."""
        return {d.key: d.value for d in self.decisions if d.key is not None}

    def rows(self) -> list[tuple[str, str, str]]:
        """``(choice, value, why)`` rows for the table; values the user set say so."""
        return [
            (
                d.choice,
                d.shown_value(),
                ("set by you" + (f"; {d.why}" if d.why else "")) if d.source == "you" else d.why,
            )
            for d in self.decisions
        ]

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data (``plan.yaml``)."""
        return {
            "format": PLAN_FORMAT,
            "format_version": PLAN_VERSION,
            "decisions": [
                {"choice": d.choice, "key": d.key, "value": _plain(d.value), "why": d.why, "source": d.source}
                for d in self.decisions
            ],
            "machine": _plain(self.machine),
            "facts": _plain(self.facts),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "plan") -> Plan:
        """Rebuild a plan from :meth:`to_dict` output, with a clear error for anything else."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise ConfigError(f"{source}: not a unetkit plan (no 'format: {PLAN_FORMAT}'); write one with unetkit plan")
        if not isinstance(data.get("format_version"), int) or data["format_version"] > PLAN_VERSION:
            raise ConfigError(f"{source}: plan format {data.get('format_version')!r} is newer than this unetkit reads")
        decisions = []
        for i, d in enumerate(data.get("decisions") or []):
            if not isinstance(d, dict) or "choice" not in d or "value" not in d:
                raise ConfigError(f"{source}: decisions[{i}] needs 'choice' and 'value'")
            src = d.get("source", "plan")
            decisions.append(
                Decision(
                    str(d["choice"]), d["value"], str(d.get("why", "")), d.get("key"), "you" if src == "you" else "plan"
                )
            )
        return cls(decisions, dict(data.get("facts") or {}), dict(data.get("machine") or {}))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``plan.yaml`` atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, width=120))
        return path


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read a ``plan.yaml`` written by :meth:`Plan.save` (``unetkit plan``)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: plan file not found; write one with: unetkit plan DATA --out {path}")
    data = read_yaml(path, "plan file")
    return Plan.from_dict(data, str(path))


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and callable(v.item):  # numpy scalars
        return v.item()
    return v


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys (``{"a": {"b": 1}} -> {"a.b": 1}``); lists stay values.

    >>> flatten({"train": {"lr": 0.1, "epochs": 3}, "model": {"args": {"depth": 2}}})
    {'train.lr': 0.1, 'train.epochs': 3, 'model.args.depth': 2}
    """
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
