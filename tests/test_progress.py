"""The run folder and the progress a user watches: train.log, the start summary, the time left, the closing
command, validation pictures, and the one rule for who reports in a DDP run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from _cells import write_cells
from unetkit.cli import main
from unetkit.train.callbacks import epoch_line, is_rank_zero, quiet_other_ranks, run_log


def _dataset(root: Path, n: int = 4) -> Path:
    return write_cells(root, n)


def test_the_final_frame_shows_the_final_validation_score_and_how_the_run_ended() -> None:
    import io

    from rich.console import Console

    from unetkit.cli.train import RichProgress

    out = io.StringIO()
    bar = RichProgress(display=Console(file=out, width=200, force_terminal=False))
    bar.on_train_start(epochs=2, steps_per_epoch=2, start_epoch=0, start_step=0)
    for epoch, dice in ((0, 0.5), (1, 0.75)):
        for step in range(2):
            bar.on_time_left(seconds=65.0, budget_bound=True, steps_per_s=2.0)
            bar.on_step(epoch=epoch, step=step, loss=0.25, images_per_s=16.0)
        bar.on_time_left(seconds=0.0 if epoch else 3.0, budget_bound=False, steps_per_s=2.0)
        bar.on_epoch_end(epoch=epoch, row={"epoch": epoch + 1, "train_loss": 0.25, "val_dice": dice})
    assert bar.left == "left 0:00"
    bar.on_train_end(result=None)
    frame = out.getvalue().strip().splitlines()[-1]  # a file gets the last frame only
    assert "epoch 2/2" in frame and "4/4" in frame and "val_dice 0.7500" in frame, frame
    assert "2.00 steps/s, 16.0 patches/s" in frame and frame.endswith("done"), frame


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


def test_a_run_with_no_validation_images_pictures_its_training_images_once_at_the_end(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds", 3)
    run = tmp_path / "run"
    argv = ["train", str(data), "--out", str(run), "--no-plan", "--epochs", "3", "--patch", "32", "--batch", "2"]
    argv += ["--set", "train.iterations_per_epoch=1", "--set", "model.args.width=4", "--set", "model.args.depth=2"]
    argv += ["--set", "data.val_fraction=0", "--quiet"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code in (0, None)
    assert "3 training / 0 validation images" in (run / "train.log").read_text()
    pictures = sorted(p.name for p in (run / "val_pictures").iterdir())
    assert pictures == ["epoch_0003.png", "latest.png"]  # once, at the end, though every epoch is under a minute


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
                  "budget", "epoch 2: train_loss", "patches/s", "DEBUG", "s, left ",
                  "time left after epoch 1: estimated"):  # fmt: skip
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
