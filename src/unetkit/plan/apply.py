"""A plan plus the user's own settings -> the training configuration (the user's settings win)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from unetkit.config import Config, _format_error, apply_overrides
from unetkit.errors import ConfigError
from unetkit.plan.decisions import Plan, flatten
from unetkit.utils import read_yaml


def user_settings(config_path: str | os.PathLike[str] | None, overrides: list[str]) -> dict[str, Any]:
    """The nested settings a user gave: a config file's keys, then ``section.key=value`` overrides."""
    data: dict[str, Any] = {}
    if config_path is not None:
        loaded = read_yaml(config_path, "config file")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{config_path}: expected a mapping with sections data/model/augment/train")
        data = loaded or {}
    return apply_overrides(data, list(overrides))


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def planned_config(plan: Plan, user: dict[str, Any], source: str = "plan") -> Config:
    """The plan's values with the user's settings on top, validated.

    When the user names a network preset (``model.name``) the plan's network shape is not applied to it:
    the preset keeps its own arguments (and the user's ``model.args``).
    """
    values = dict(plan.overrides())
    if "model.name" in flatten(user):
        values = {k: v for k, v in values.items() if not k.startswith("model.")}
    nested: dict[str, Any] = {}
    for key, value in values.items():
        node = nested
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    try:
        return Config.model_validate(_merge(nested, user))
    except ValidationError as exc:
        raise _format_error(exc, source) from None
