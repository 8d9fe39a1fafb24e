from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unetkit.cli import app, main
from unetkit.data.io import write_image
from unetkit.metrics import ConfusionMatrix, pixel_error

runner = CliRunner()


def _cells(n: int = 40, step: int = 10) -> np.ndarray:
    m = np.full((n, n), 255, np.uint8)
    m[::step] = 0
    m[:, ::step] = 0
    return m


def _binary_dataset(root: Path) -> tuple[Path, Path, Path]:
    truth_dir, pred_dir, image_dir = root / "truth", root / "pred", root / "images"
    rng = np.random.default_rng(0)
    for i in range(3):
        truth = _cells()
        pred = truth.copy()
        if i == 1:
            pred[10, 3:6] = 255  # a bridge: merge
        if i == 2:
            pred[rng.random(pred.shape) < 0.05] ^= 255  # noise: the worst case
        write_image(truth_dir / f"s{i}.png", truth)
        write_image(pred_dir / f"s{i}.png", pred)
        write_image(image_dir / f"s{i}.png", (truth // 2 + 20).astype(np.uint8))
    write_image(pred_dir / "unpaired.png", _cells())
    return truth_dir, pred_dir, image_dir


def test_evaluate_binary_writes_all_outputs(tmp_path: Path) -> None:
    truth_dir, pred_dir, image_dir = _binary_dataset(tmp_path)
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        ["evaluate", "--pred", str(pred_dir), "--truth", str(truth_dir), "--images", str(image_dir), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "warping_error" in result.output and "rand_error" in result.output
    summary = json.loads((out / "summary.json").read_text())
    for key in ("dice", "iou", "pixel_error", "rand_error", "warping_error", "dice_per_class", "ap", "hd95"):
        assert key in summary, key
    assert summary["num_images"] == 3 and summary["num_classes"] == 2
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["name"] == "s2"  # worst first
    s0 = next(r for r in rows if r["name"] == "s0")
    assert float(s0["dice"]) == 1.0 and float(s0["warping_error"]) == 0.0 and float(s0["ap"]) == 1.0
    s1 = next(r for r in rows if r["name"] == "s1")
    assert float(s1["warping_error"]) > 0 and float(s1["rand_error"]) > 0  # the merge is a topological error
    # the per-image numbers are the library's numbers
    truth = _cells() // 255
    pred = _cells() // 255
    pred[10, 3:6] = 1
    assert float(s1["pixel_error"]) == pytest.approx(pixel_error(pred, truth), abs=1e-6)
    assert float(s1["dice"]) == pytest.approx(ConfusionMatrix(2).update(pred, truth).dice()[1], abs=1e-6)
    html = (out / "report.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 3 and html.index("s2") < html.index("s0")


def test_evaluate_postprocess_and_opt_outs(tmp_path: Path) -> None:
    truth_dir, pred_dir, _ = _binary_dataset(tmp_path)
    out = tmp_path / "eval"
    args = ["evaluate", "--pred", str(pred_dir), "--truth", str(truth_dir), "--out", str(out)]
    result = runner.invoke(app, [*args, "--no-warping", "--no-surface", "--panels", "0", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert "warping_error" not in summary and "hd95" not in summary and "rand_error" in summary
    raw_dice = summary["dice"]
    result = runner.invoke(app, [*args, "--postprocess", "remove-islands:3,fill-holes:3", "-q", "--no-warping"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["dice"] > raw_dice  # salt-and-pepper cleaned
    result = runner.invoke(app, [*args, "--postprocess", "crf"])
    assert result.exit_code != 0 and "--images" in str(result.exception)


def test_evaluate_multiclass_skips_isbi_and_ignore_index(tmp_path: Path) -> None:
    truth = np.zeros((2, 8, 12, 12), np.uint8)
    truth[:, 2:6, 2:6, 2:6] = 1
    truth[:, 4:8, 7:11, 7:11] = 2
    truth[:, 0, 0, 0] = 9  # unlabelled
    pred = truth.copy()
    pred[1, 2:6, 2:6, 2:4] = 2
    pred[:, 0, 0, 0] = 0
    for i in range(2):
        write_image(tmp_path / "t" / f"v{i}.tif", truth[i][None])
        write_image(tmp_path / "p" / f"v{i}.tif", pred[i][None])
    out = tmp_path / "out"
    main_args = ["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--out", str(out)]
    result = runner.invoke(app, [*main_args, "--ignore-index", "9", "--spacing", "2,1,1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_classes"] == 3 and "pixel_error" not in summary and "ap" not in summary
    assert len(summary["dice_per_class"]) == 3 and summary["dice_per_class"][1] < 1.0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert rows[0]["name"] == "v1" and float(rows[1]["dice"]) == 1.0
    assert "dice_c2" in rows[0]
    # without --ignore-index the unlabelled value is rejected with a hint
    with pytest.raises(SystemExit) as exc:
        main([*main_args, "--num-classes", "3"])
    assert exc.value.code == 2


def test_evaluate_probabilities_and_crf(tmp_path: Path) -> None:
    yy, xx = np.mgrid[:32, :32]
    r = np.hypot(yy - 16, xx - 16)
    truth = (r <= 9).astype(np.uint8) * 255
    rng = np.random.default_rng(0)
    p = np.where(r <= 9, 0.85, 0.15)
    band = np.abs(r - 9) < 3
    p = np.where(band, rng.uniform(0.15, 0.85, p.shape), p)
    write_image(tmp_path / "t" / "d.png", truth)
    np.save(tmp_path / "d.npy", np.stack([1 - p, p]).astype(np.float32))
    (tmp_path / "p").mkdir()
    (tmp_path / "d.npy").rename(tmp_path / "p" / "d.npy")
    write_image(tmp_path / "i" / "d.png", (truth // 3 + 10).astype(np.uint8))
    base = ["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--images", str(tmp_path / "i")]
    assert runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "-q"]).exit_code == 0
    r2 = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "-q", "--postprocess", "crf"])
    assert r2.exit_code == 0, r2.output
    before = json.loads((tmp_path / "a" / "summary.json").read_text())["pixel_error"]
    after = json.loads((tmp_path / "b" / "summary.json").read_text())["pixel_error"]
    assert after < before / 2


def test_probability_maps_are_also_scored_as_the_isbi_challenge_did(tmp_path: Path) -> None:
    """A bridge of 0.6 merges two cells at the 0.5 labels; the challenge's protocol (each error at its best
    threshold for the test set) scores the map at 0.7, where the membrane is whole."""
    truth = _cells()
    p = np.where(truth > 0, 0.9, 0.1)
    p[10, 3:6] = 0.6
    write_image(tmp_path / "t" / "d.png", truth)
    (tmp_path / "p").mkdir()
    np.save(tmp_path / "p" / "d.npy", np.stack([1 - p, p]).astype(np.float32))
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"),
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "challenge protocol" in result.output
    summary = json.loads((out / "summary.json").read_text())
    challenge = summary["challenge"]
    assert summary["rand_error"] > 0 and summary["pixel_error"] == pytest.approx(3 / 1600)
    assert challenge["rand_error"] == 0 and challenge["pixel_error"] == 0
    assert 0.6 < challenge["rand_threshold"] <= 0.9 and len(challenge["thresholds"]) == 9
    row = next(csv.DictReader((out / "metrics.csv").open()))
    assert float(row["rand_error@0.5"]) == pytest.approx(summary["rand_error"]) and float(row["rand_error@0.7"]) == 0


def test_evaluate_with_model(tmp_path: Path) -> None:
    from unetkit import create_model, save_model

    model = save_model(tmp_path / "m.safetensors", create_model("unet2d_small", depth=2, width=2).eval())
    write_image(tmp_path / "i" / "a.png", (np.arange(32 * 32).reshape(32, 32) % 255).astype(np.uint8))
    write_image(tmp_path / "t" / "a.png", _cells(32, 8))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["evaluate", "--model", str(model), "--images", str(tmp_path / "i"), "--truth", str(tmp_path / "t"),
         "--out", str(out), "--device", "cpu", "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "predictions" / "a.npy").is_file() and (out / "summary.json").is_file()


def test_evaluate_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    write_image(tmp_path / "p" / "a.png", _cells())
    write_image(tmp_path / "t" / "b.png", _cells())
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--out", str(tmp_path)])
    assert exc.value.code == 2 and "share file names" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--truth", str(tmp_path / "t"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["evaluate", "--pred", "x", "--truth", "y", "--out", "z", "--postprocess", "blur"])
