"""The run folder and the progress a user watches: train.log, the start summary, the time left, the closing
command, validation pictures, and the one rule for who reports in a DDP run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.cli import main
from unetkit.data.io import write_image
from unetkit.synthetic import synthetic_cells
from unetkit.train.callbacks import Eta, epoch_line, is_rank_zero, quiet_other_ranks, run_log


def _dataset(root: Path, n: int = 4) -> Path:
    for i in range(n):
        s = synthetic_cells((48, 48), seed=i, cell_radius=6)
        write_image(root / "images" / f"im{i}.tif", s.image)
        write_image(root / "masks" / f"im{i}.tif", (s.instances > 0).astype(np.uint8))
    return root


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eta_counts_validation_once_an_epoch_ended_and_never_exceeds_the_budget() -> None:
    clock = _Clock()
    eta = Eta(total_steps=20, done_steps=0, clock=clock)
    assert eta.remaining() is None  # nothing measured yet
    clock.t = 4.0  # start-up and warm-up
    eta.step()
    assert eta.remaining() is None  # the first step is not a measure
    for _ in range(4):
        clock.t += 1.0
        eta.step()
    assert eta.remaining() == pytest.approx(15.0)  # 1 s per step, 15 steps left
    clock.t += 4.0  # validation and saving took 4 s
    eta.epoch_end()
    assert eta.remaining() == pytest.approx(30.0)  # 2 s per step, validation included
    for _ in range(5):  # a faster second epoch: the latest epoch counts
        clock.t += 0.5
        eta.step()
    clock.t += 2.5
    eta.epoch_end()
    assert eta.remaining() == pytest.approx(10.0 * 1.0)
    bounded = Eta(total_steps=20, done_steps=0, budget_s=12.0, clock=clock)
    start = clock.t
    for _ in range(2):
        clock.t += 5.0
        bounded.step()
    assert bounded.remaining() == pytest.approx(12.0 - (clock.t - start)) and bounded.budget_bound()


def test_eta_resumed_run_counts_only_the_steps_left() -> None:
    clock = _Clock()
    eta = Eta(total_steps=10, done_steps=7, clock=clock)
    clock.t = 3.0
    eta.step()
    clock.t = 4.0
    eta.step()
    assert eta.remaining() == pytest.approx(1.0)


def test_epoch_line_names_units() -> None:
    line = epoch_line({"epoch": 3, "train_loss": 0.25, "val_psnr": 31.5, "images_per_s": 12.0, "seconds": 2.0})
    assert line == "epoch 3: train_loss 0.2500, val_psnr 31.5000, 12.0 patches/s, 2.0 s"


def test_rank_rule_reads_the_launcher_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert is_rank_zero()
    monkeypatch.setenv("RANK", "1")
    assert not is_rank_zero()
    logger = logging.getLogger("unetkit")
    before = logger.level
    try:
        quiet_other_ranks()
        assert logger.level == logging.ERROR
    finally:
        logger.setLevel(before)

    class _Fabric:
        is_global_zero = True

    assert is_rank_zero(_Fabric())  # the fabric, when there is one, decides


def test_run_log_keeps_debug_lines_and_the_error(tmp_path: Path) -> None:
    logger = logging.getLogger("unetkit.test")
    with pytest.raises(RuntimeError), run_log(tmp_path / "train.log"):
        logger.debug("a debug detail")
        raise RuntimeError("broken")
    text = (tmp_path / "train.log").read_text()
    assert "a debug detail" in text and "stopped: broken" in text
    assert logging.getLogger("unetkit").handlers == [] or all(
        not isinstance(h, logging.FileHandler) for h in logging.getLogger("unetkit").handlers
    )
    with run_log(tmp_path / "off.log", enabled=False):
        logger.info("nothing")
    assert not (tmp_path / "off.log").exists()


def test_train_run_folder_has_log_summary_pictures_and_next_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _dataset(tmp_path / "ds")
    run = tmp_path / "run"
    argv = ["train", str(data), "--out", str(run), "--no-plan", "--epochs", "2", "--patch", "32", "--batch", "2"]
    argv += ["--set", "train.iterations_per_epoch=2", "--set", "model.args.width=4", "--set", "model.args.depth=2"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code in (0, None)
    log = (run / "train.log").read_text()
    for words in ("data ", "3 training / 1 validation images", "parameters", "patch 32x32", "device   cpu",
                  "budget", "epoch 2: train_loss", "patches/s", "DEBUG"):  # fmt: skip
        assert words in log, words
    assert f"next: unetkit predict {run / 'model.safetensors'} {data / 'images'}" in log
    console = capsys.readouterr()
    assert "next: unetkit predict" in console.err and "DEBUG" not in console.err  # the console: INFO and up
    pictures = sorted(p.name for p in (run / "val_pictures").iterdir())
    assert "latest.png" in pictures and "epoch_0002.png" in pictures  # the last validation always has one
    with Image.open(run / "val_pictures" / "latest.png") as im:
        assert im.width > 400  # four panels side by side
    with Image.open(run / "curves.png") as im:
        assert im.width > 800
    # the next command, as printed: one bar, a summary table, and a warning for the training images
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(run / "model.safetensors"), str(data / "images"), "--out", str(tmp_path / "pred")])
    assert exc.value.code in (0, None)
    console = capsys.readouterr()
    assert "predictions in" in console.out and "4 images" in console.out and "Mpx/s" in console.out
    assert "im0.tif" in console.out and "background" in console.out  # per image: classes' pixel shares
    assert "3 of these images trained" in console.err
