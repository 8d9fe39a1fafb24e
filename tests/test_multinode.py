"""Multi-node training: ``unetkit train`` under ``torchrun`` on two node groups equals one group of two.

Both runs are world size 2 on CPU (gloo) with the same seed; only the launch differs: two torchrun agents
(``--nnodes 2 --nproc-per-node 1``) meeting at a c10d rendezvous on localhost, each in its own working
directory (as two machines without a shared disk), against one agent with two processes. The weights must
agree, and only rank 0 may write the run folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _cells import write_cells

SRC = Path(__file__).resolve().parents[1] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dataset(root: Path) -> Path:
    return write_cells(root, 3, (64, 64), instances=True)


def _torchrun(data: Path, nnodes: int, nproc: int, port: int) -> list[str]:
    train = [
        "-m", "unetkit", "train", str(data), "--out", "run", "--no-plan", "--quiet", "--device", "cpu",
        "--epochs", "1", "--batch", "2", "--patch", "32", "--model", "unet2d_small", "--loss", "weighted_ce",
        "--set", "model.args.width=4", "--set", "train.iterations_per_epoch=3", "--set", "data.val_fraction=0.34",
        "--set", "data.mask_kind=instances", "--set", "train.seed=3",
    ]  # fmt: skip
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc-per-node", str(nproc),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"unetkit-{port}",
        "--local-addr", "127.0.0.1", "--max-restarts", "0", *train,
    ]  # fmt: skip


def _launch(cmds: list[tuple[list[str], Path]]) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    procs = []
    for cmd, cwd in cmds:
        cwd.mkdir(parents=True)
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        outputs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-4000:]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_two_node_groups_train_as_one_group_of_two(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    port = _free_port()
    node_a, node_b = tmp_path / "node_a", tmp_path / "node_b"
    _launch([(_torchrun(data, 2, 1, port), node_a), (_torchrun(data, 2, 1, port), node_b)])
    # rank 0 landed on one of the two "machines"; the other wrote nothing at all
    written = [n for n in (node_a, node_b) if _files(n)]
    assert len(written) == 1, [_files(n) for n in (node_a, node_b)]
    assert {p.name for p in _files(written[0] / "run")} >= {"model.safetensors", "config.yaml", "metrics.csv"}

    single = tmp_path / "single"
    _launch([(_torchrun(data, 1, 2, _free_port()), single)])
    two_nodes = load_file(written[0] / "run" / "model.safetensors")
    one_node = load_file(single / "run" / "model.safetensors")
    assert two_nodes.keys() == one_node.keys()
    for k in one_node:
        assert torch.allclose(two_nodes[k], one_node[k], atol=1e-6), k


def test_layout_comes_from_the_launcher_unless_set() -> None:
    from unetkit.errors import ConfigError
    from unetkit.train.launch import process_layout

    torchrun = {"TORCHELASTIC_RUN_ID": "r", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}
    assert process_layout(1, 1, torchrun) == (2, 2)
    assert process_layout(2, 2, torchrun) == (2, 2)
    assert process_layout(3, 1, {}) == (3, 1)
    interactive = {"SLURM_NTASKS": "4", "SLURM_NNODES": "1", "SLURM_JOB_NAME": "interactive"}
    assert process_layout(2, 1, interactive) == (2, 1)
    with pytest.raises(ConfigError, match=r"train\.devices=4 .* torchrun started 2 process\(es\) per node on 2"):
        process_layout(4, 1, torchrun)


def test_torchrun_without_a_plan_is_refused(tmp_path, monkeypatch, capsys) -> None:
    """Each torchrun process would plan for itself: the message says to plan once and pass --plan."""
    from unetkit.cli import main

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("WORLD_SIZE", "2")
    (tmp_path / "images").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tmp_path), "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "plan once first" in capsys.readouterr().err.replace("\n", " ")
