from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from _cells import write_cells
from unetkit import load_model
from unetkit.cli import app
from unetkit.config import load_config
from unetkit.errors import ConfigError, UnetkitError
from unetkit.train import train
from unetkit.train.checkpoint import load_checkpoint, save_checkpoint
from unetkit.train.state import RunState

runner = CliRunner()


def _dataset(root: Path, n: int = 4, shape: tuple[int, ...] = (64, 64)) -> Path:
    return write_cells(root, n, shape, instances=True)


def _config(data: Path, *extra: str):
    return load_config(
        overrides=[
            f"data.path={data}",
            "data.mask_kind=instances",
            "data.patch_size=32",
            "data.val_fraction=0.25",
            "model.name=unet2d_small",
            "model.args.width=4",
            "train.epochs=2",
            "train.iterations_per_epoch=3",
            "train.batch_size=2",
            "train.device=cpu",
            "train.loss=weighted_ce",
            *extra,
        ]
    )


def _cli_args(data: Path, out: Path, *extra: str) -> list[str]:
    """`unetkit train` arguments for a tiny CPU run on the synthetic dataset."""
    return [
        "train",
        str(data),
        "--out",
        str(out),
        "--model",
        "unet2d_small",
        "--patch",
        "32",
        "--batch",
        "2",
        "--device",
        "cpu",
        "--quiet",
        "--set",
        "model.args.width=4",
        "--set",
        "data.mask_kind=instances",
        *extra,
    ]


def test_train_writes_the_run_folder(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    result = train(_config(data), tmp_path / "run")
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "metrics.csv",
        "model.safetensors",
        "curves.png",
        "checkpoints/last.safetensors",
        "checkpoints/best.safetensors",
    ):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "val_loss", "val_dice", "val_iou", "dice_background", "iou_foreground"} <= set(rows[0])
    model = load_model(result.model_path)
    desc = model.description
    assert desc.normalization.kind == "zscore" and desc.tile_size == [512, 512]
    assert desc.provenance["weight_map"] is True and desc.provenance["config_digest"]
    assert 1 <= result.best_epoch <= 2
    with pytest.raises(UnetkitError, match="--resume"):
        train(_config(data), run)


def test_valid_padding_and_sgd(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", n=2)
    cfg = _config(
        data,
        "model.args.padding=valid",
        "model.args.depth=2",
        "train.optimizer=sgd",
        "train.lr=0.01",
        "data.patch_size=44",
        "train.epochs=1",
        "train.iterations_per_epoch=2",
        "train.schedule=cosine",
        "train.warmup_epochs=0.5",
    )
    result = train(cfg, tmp_path / "run")
    assert np.isfinite(result.history[0]["train_loss"])
    tile = load_model(result.model_path).description.tile_size
    assert tile is not None and tile[0] >= 512 + 2 * 20


def test_seeded_runs_are_identical(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", n=3)
    cfg = _config(data, "train.epochs=1")
    a = train(cfg, tmp_path / "a")
    b = train(cfg, tmp_path / "b")
    wa, wb = load_file(str(a.model_path)), load_file(str(b.model_path))
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]


def test_killed_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", n=3)
    extra = ("train.epochs=2", "train.iterations_per_epoch=4", "train.checkpoint_every=2")
    script = textwrap.dedent(f"""
        import os, signal, sys
        import torch
        torch.set_num_threads(1)  # as the in-process runs it is compared with (conftest)
        from unetkit.config import load_config
        from unetkit.train import BaseCallback, train

        class Kill(BaseCallback):
            def on_step(self, *, epoch, step, loss, images_per_s):
                if epoch == 1 and step == 2:  # mid-epoch 2, after the step-2 checkpoint
                    os.kill(os.getpid(), signal.SIGKILL)

        cfg = load_config({str(tmp_path / "c.yaml")!r})
        train(cfg, sys.argv[1], callbacks=[Kill()])
    """)
    cfg = _config(data, *extra)
    from unetkit.config import save_config

    save_config(cfg, tmp_path / "c.yaml")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "killed")], env=env, check=False)
    assert proc.returncode == -9
    assert len(list(csv.DictReader((tmp_path / "killed" / "metrics.csv").open()))) == 1
    resumed = train(cfg, tmp_path / "killed", resume=True)
    straight = train(cfg, tmp_path / "straight")
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    wa = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.safetensors")["model"]
    wb = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.safetensors")["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed.history[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"], rel=1e-6)


def test_cli_train_and_resume_extends(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", n=2)
    args = _cli_args(data, tmp_path / "run", "--epochs", "1", "--set", "train.iterations_per_epoch=2")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))) == 2


def test_bad_inputs_fail_before_work(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", n=2)
    with pytest.raises(ConfigError, match="3D"):
        train(_config(data, "model.name=unet3d_small"), tmp_path / "r1")
    with pytest.raises(ConfigError, match="num_classes"):
        train(_config(data, "model.args.num_classes=5"), tmp_path / "r2")
    result = runner.invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "r3"), "--quiet"])
    assert result.exit_code != 0
    assert not (tmp_path / "r3" / "checkpoints").exists()


def test_time_budget_and_early_stopping(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", n=2)
    result = train(_config(data, "train.epochs=50", "train.max_minutes=0.0001"), tmp_path / "budget")
    assert result.stopped_early and len(result.history) == 1
    assert (tmp_path / "budget" / "model.safetensors").is_file() and "val_dice" in result.history[0]
    # the epoch the budget ends is validated even when val_every would skip it
    result = train(_config(data, "train.epochs=50", "train.max_minutes=0.0001", "train.val_every=5"), tmp_path / "b5")
    assert result.stopped_early and len(result.history) == 1 and "val_dice" in result.history[0]
    # a frozen model (lr ~ 0, no batch-norm statistics) never improves on epoch 1: stops after 2 more
    result = train(
        _config(
            data,
            "train.epochs=10",
            "train.iterations_per_epoch=1",
            "train.lr=1e-12",
            "train.early_stopping=2",
            "model.args.norm=none",
        ),
        tmp_path / "patience",
    )
    assert result.stopped_early and len(result.history) == 3


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    """DDP through Fabric with 2 CPU processes (gloo): the launcher re-runs the command for rank 1."""
    data = _dataset(tmp_path / "data", n=3)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "unetkit",
        *_cli_args(
            data,
            tmp_path / "run",
            "--epochs",
            "2",
            "--devices",
            "2",
            "--set",
            "train.iterations_per_epoch=3",
            "--set",
            "data.val_fraction=0.34",
        ),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[-1]["val_dice"]) >= 0
    # instance masks: the plan trains background / interior / boundary
    assert load_model(tmp_path / "run" / "model.safetensors").num_classes == 3


def test_weight_map_cache_stays_in_the_run_folder(tmp_path: Path) -> None:
    """A list file with absolute paths must not lead the cache out of RUN/cache."""
    data = _dataset(tmp_path / "data", n=2)
    listing = tmp_path / "pairs.csv"
    listing.write_text(
        "image,mask\n"
        + "".join(f"{data / 'images' / f'im{i}.tif'},{data / 'masks' / f'im{i}.tif'}\n" for i in range(2))
    )
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    train(_config(listing, "train.epochs=1", "train.iterations_per_epoch=1"), tmp_path / "run")
    new = sorted(set(p for p in tmp_path.rglob("*") if p.is_file()) - set(before))
    assert new and all(tmp_path / "run" in p.parents for p in new)
    assert len(list((tmp_path / "run" / "cache").glob("*.npy"))) == 1  # one training image, one map


def test_weight_maps_only_for_losses_that_use_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _dataset(tmp_path / "data", n=2)
    quick = ("train.epochs=1", "train.iterations_per_epoch=1")
    import unetkit.train.data as train_data

    real = train_data.weight_map
    calls: list[int] = []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_data, "weight_map", counting)
    result = train(_config(data, *quick, "train.loss=dice"), tmp_path / "dice")
    assert calls == [] and not (tmp_path / "dice" / "cache").exists()
    assert load_model(result.model_path).description.provenance["weight_map"] is False
    # asked for explicitly with a loss that would drop them: refused before any work
    with pytest.raises(ConfigError, match=r"data\.weight_map\.enabled"):
        train(_config(data, *quick, "train.loss=dice", "data.weight_map.enabled=true"), tmp_path / "dice_on")
    assert calls == [] and not (tmp_path / "dice_on").exists()
    # ce with the weight map on is the paper's weighted cross-entropy: the maps are computed and used
    on = train(_config(data, *quick, "train.loss=ce", "data.weight_map.enabled=true"), tmp_path / "ce_on")
    assert calls == [1] and len(list((tmp_path / "ce_on" / "cache").glob("*.npy"))) == 1
    off = train(_config(data, *quick, "train.loss=ce"), tmp_path / "ce_off")
    paper = train(_config(data, *quick, "train.loss=weighted_ce"), tmp_path / "weighted_ce")
    assert on.history[0]["train_loss"] != off.history[0]["train_loss"]
    assert on.history[0]["train_loss"] == paper.history[0]["train_loss"]


def _run_state(seed: int) -> RunState:
    torch.manual_seed(seed)
    model = torch.nn.Conv2d(1, 2, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    gen = torch.Generator().manual_seed(seed)
    return RunState(model, optimizer, scheduler, gen, gen)


def test_run_state_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    # These are the keys every last.safetensors written so far holds; renaming one breaks resuming old runs.
    assert set(RunState.KEYS) == {
        "model",
        "optimizer",
        "scheduler",
        "generator",
        "aug_generator",
        "torch_rng",
        "epoch",
        "step",
        "history",
        "best",
        "best_epoch",
        "bad_epochs",
        "loss_sum",
        "loss_n",
    }
    a = _run_state(0)
    a.model(torch.rand(1, 1, 8, 8)).sum().backward()
    a.optimizer.step()
    a.scheduler.step()
    torch.rand(3, generator=a.generator)
    a.add_step(0.75)
    assert a.end_epoch({"epoch": 1, "train_loss": 0.75, "val_dice": 0.5}) is True
    a.add_step(0.25)
    assert a.state_dict().keys() == set(RunState.KEYS) | set(RunState.OPTIONAL)
    a.epochs = 7  # a planned budget added epochs: a resumed run keeps them
    save_checkpoint(tmp_path / "last.safetensors", a.state_dict())
    expected_rng = torch.get_rng_state()
    torch.manual_seed(123)

    b = _run_state(1)
    b.load_state_dict(load_checkpoint(tmp_path / "last.safetensors"))
    assert torch.equal(torch.get_rng_state(), expected_rng)
    assert (b.epoch, b.step, b.best, b.best_epoch, b.bad_epochs, b.loss_sum, b.loss_n) == (1, 1, 0.5, 1, 0, 0.25, 1)
    assert b.history == a.history and b.history is not a.history and b.epochs == 7
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters(), strict=True))
    assert b.scheduler.last_epoch == a.scheduler.last_epoch
    assert b.optimizer.param_groups[0]["lr"] == a.optimizer.param_groups[0]["lr"]
    assert torch.equal(torch.rand(4, generator=a.generator), torch.rand(4, generator=b.generator))
    # a validation without improvement counts towards early stopping; an epoch without validation does not
    assert b.end_epoch({"epoch": 2, "train_loss": 0.2, "val_dice": 0.4}) is False and b.bad_epochs == 1
    assert b.end_epoch({"epoch": 3, "train_loss": 0.1}) is False and b.bad_epochs == 1

    state = a.state_dict()
    del state["epochs"]  # written before the key existed: the default (the config's epochs) stands
    c = _run_state(3)
    c.load_state_dict(state)
    assert c.epochs == 0 and c.epoch == 1
    del state["loss_n"]
    with pytest.raises(UnetkitError, match=r"old\.safetensors lacks loss_n"):
        _run_state(2).load_state_dict(state, source="old.safetensors")


@pytest.mark.gpu
def test_resume_on_cuda(tmp_path: Path) -> None:
    """The optimizer state of a resumed run lives on the GPU with the parameters it belongs to."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    data = _dataset(tmp_path / "data", n=3)
    cfg = _config(data, "train.device=cuda", "train.epochs=1", "train.iterations_per_epoch=2")
    train(cfg, tmp_path / "run")
    cfg = _config(data, "train.device=cuda", "train.epochs=2", "train.iterations_per_epoch=2")
    resumed = train(cfg, tmp_path / "run", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2] and np.isfinite(resumed.history[1]["train_loss"])


def test_a_run_with_no_held_out_image_keeps_the_lowest_training_loss_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _dataset(tmp_path / "data", n=3)
    with caplog.at_level("INFO", logger="unetkit"):
        result = train(_config(data, "data.val_fraction=0", "train.epochs=2"), tmp_path / "run")
    assert not any("val_dice" in row for row in result.history)
    losses = [row["train_loss"] for row in result.history]
    assert result.best_epoch == 1 + int(np.argmin(losses))
    assert f"best epoch {result.best_epoch} (train_loss {min(losses):.4f})" in caplog.text


def test_channels_last_trains_3d_and_resumes_exactly(tmp_path: Path) -> None:
    """``train.channels_last`` (the plan sets it where a step measures faster) lays the 3D network out NDHWC:
    the run says so, the model file holds plain tensors, and a resumed run continues bit for bit."""
    data = write_cells(tmp_path / "data", 3, (16, 32, 32), instances=True)
    extra = ("model.name=unet3d_small", "data.patch_size=16", "train.schedule=constant", "train.channels_last=true")
    straight = train(_config(data, *extra), tmp_path / "straight")
    assert "channels-last)" in (tmp_path / "straight" / "train.log").read_text()
    first = train(_config(data, *extra, "train.epochs=1"), tmp_path / "resumed")
    assert len(first.history) == 1
    resumed = train(_config(data, *extra), tmp_path / "resumed", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    wa, wb = load_file(str(straight.model_path)), load_file(str(resumed.model_path))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(w.is_contiguous() for w in wa.values())
    # the same run channels-first differs only by rounding (the layout changes the summation order; Adam moves a
    # weight by up to lr = 1e-3 per step however small its gradient, so rounding can show at that size)
    plain = train(_config(data, *extra[:-1]), tmp_path / "plain")
    wp = load_file(str(plain.model_path))
    assert plain.history[-1]["train_loss"] == pytest.approx(straight.history[-1]["train_loss"], rel=1e-4)
    assert all(torch.allclose(wa[k], wp[k], atol=6 * 1e-3) for k in wa)
    assert "channels-last" not in (tmp_path / "plain" / "train.log").read_text()
