"""``unetkit.train(data_dir, out, **overrides)``: plan and train a dataset folder in one call, as ``unetkit train``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unetkit.errors import ConfigError, UnetkitError

if TYPE_CHECKING:
    from unetkit.config import Config
    from unetkit.train.callbacks import BaseCallback

PathLike = str | os.PathLike[str]


def train(
    data: PathLike | Config,
    out: PathLike,
    *,
    plan: bool = True,
    budget: str | None = None,
    callbacks: Sequence[BaseCallback] = (),
    **overrides: Any,
) -> Path:
    """Train a model on a dataset folder (planned, as ``unetkit train DATA`` does) and return the model file.

    Args:
        data: the dataset folder (``images/`` + ``masks/``, see docs/data.md; with ``task="restore"``
            ``inputs/`` + ``targets/``, docs/restoration.md), or a ready :class:`~unetkit.config.Config`
            (trained as it is).
        out: the run folder (``model.safetensors``, ``metrics.csv``, ``curves.png``, ...).
        plan: plan network, patch, batch, spacing and schedule from the data and this machine (the CLI's
            default); ``False`` trains the configuration's fixed defaults.
        budget: the training time the plan fits, e.g. ``"5m"``.
        callbacks: progress hooks (:class:`~unetkit.train.callbacks.BaseCallback`).
        **overrides: configuration fields as ``section__key=value`` or ``{"section.key": value}``, e.g.
            ``train__epochs=5`` (``--set train.epochs=5``), ``task="restore"`` (``--task restore``),
            ``restore__self_supervised=True`` (Noise2Void); they override the plan's choices.

    Returns:
        The path of the trained model file (``out/model.safetensors``).
    """
    from unetkit.config import Config, load_config
    from unetkit.train.loop import train as train_config

    sets = [f"{k.replace('__', '.')}={_yaml(v)}" for k, v in overrides.items()]
    if isinstance(data, Config):
        if sets:
            raise ConfigError("train(config, ...): change the Config itself; overrides apply to a dataset folder")
        return Path(train_config(data, Path(out), callbacks=callbacks).model_path)
    sets.insert(0, f"data.path={Path(data)}")
    plan_obj = None
    if plan:
        from unetkit.plan import flatten, plan_dataset
        from unetkit.plan.apply import planned_config, user_settings

        user = user_settings(None, sets)
        fixed = flatten(user)
        plan_obj = plan_dataset(str(data), budget=budget, device=str(fixed.get("train.device", "auto")), fixed=fixed)
        cfg = planned_config(plan_obj, user, "the plan")
    else:
        if budget is not None:
            raise UnetkitError("train(plan=False) trains the fixed defaults; leave out budget")
        cfg = load_config(None, sets)
    return Path(train_config(cfg, Path(out), callbacks=callbacks, plan=plan_obj).model_path)


def _yaml(value: Any) -> str:
    """An override value as ``--set`` takes it (YAML)."""
    return value if isinstance(value, str) else json.dumps(value)
