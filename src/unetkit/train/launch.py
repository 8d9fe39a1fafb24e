"""How many processes a run has, when an outside launcher (``torchrun``, SLURM's ``srun``) started them.

Lightning Fabric reads ranks and the rendezvous from the launcher's environment, but it must be told the same
layout (``devices`` per node, ``num_nodes``) or it refuses the run (or, with ``devices=1``, trains every
process alone). :func:`process_layout` is the one rule: the configured layout, or the launcher's when the
config leaves both at their default of 1; a configured layout that contradicts the launcher is an error.
See docs/scale.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from unetkit.errors import ConfigError


def launcher_layout(env: Mapping[str, str] | None = None) -> tuple[str, int, int] | None:
    """The launcher's ``(name, processes per node, nodes)``, or ``None`` when no launcher started this process.

    ``torchrun`` sets ``LOCAL_WORLD_SIZE`` and ``WORLD_SIZE`` (with ``TORCHELASTIC_RUN_ID``); ``srun`` sets
    ``SLURM_NTASKS`` and ``SLURM_NNODES`` (an interactive allocation, job name ``bash`` or ``interactive``,
    does not count, as in Lightning). torchrun wins inside SLURM, as in Lightning.

    >>> launcher_layout({"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"})
    ('torchrun', 2, 2)
    >>> launcher_layout({"SLURM_NTASKS": "8", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "train"})
    ('srun', 4, 2)
    >>> launcher_layout({}) is None
    True
    """
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_WORLD_SIZE", world))
        return "torchrun", local, max(1, world // max(local, 1))
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        nodes = int(env.get("SLURM_NNODES", "1"))
        per_node = env.get("SLURM_NTASKS_PER_NODE", "")
        tasks = int(per_node) if per_node.isdigit() else int(env["SLURM_NTASKS"]) // max(nodes, 1)
        return "srun", tasks, nodes
    return None


def process_layout(devices: int, num_nodes: int, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(devices per node, nodes)`` for Fabric: the configured ones, or the launcher's when both are 1.

    Raises:
        ConfigError: ``train.devices`` / ``train.num_nodes`` were set and differ from the launcher's.

    >>> process_layout(1, 1, {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"})
    (1, 2)
    >>> process_layout(2, 1, {})
    (2, 1)
    """
    found = launcher_layout(env)
    if found is None or (devices, num_nodes) == (found[1], found[2]):
        return devices, num_nodes
    name, per_node, nodes = found
    if (devices, num_nodes) == (1, 1):
        return per_node, nodes
    raise ConfigError(
        f"train.devices={devices} and train.num_nodes={num_nodes} (--devices, --set train.num_nodes) but {name} "
        f"started {per_node} process(es) per node on {nodes} node(s); leave both out under {name}, or match them"
    )
