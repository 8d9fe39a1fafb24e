"""One rule for mask values -> classes: training, `check` and `evaluate` read the same masks the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unetkit.data.check import check_dataset
from unetkit.data.datasets import load_dataset
from unetkit.data.io import write_image
from unetkit.errors import DataError
from unetkit.evaluate import EvaluateOptions, evaluate_folders

RNG = np.random.default_rng(5)
QUICK = EvaluateOptions(isbi=False, surface=False, instances="none", panels=0)


def _three_values(shape: tuple[int, int] = (12, 12), values: tuple[int, int, int] = (0, 50, 100)) -> np.ndarray:
    m = np.full(shape, values[0], np.uint8)
    m[:, 4:8] = values[1]
    m[:, 8:] = values[2]
    return m


def _dataset(root: Path, masks: list[np.ndarray], mask_ext: str = ".png") -> Path:
    for i, m in enumerate(masks):
        shape = m.shape[-2:]
        write_image(root / "images" / f"s{i}.png", RNG.integers(0, 255, shape).astype(np.uint8))
        write_image(root / "masks" / f"s{i}{mask_ext}", m)
    return root


def _evaluate(tmp_path: Path, truths: list[np.ndarray], preds: list[np.ndarray], ext: str = ".png", **opts):
    for i, (t, p) in enumerate(zip(truths, preds, strict=True)):
        write_image(tmp_path / "truth" / f"s{i}{ext}", t)
        write_image(tmp_path / "pred" / f"s{i}{ext}", p)
    options = EvaluateOptions(**{**QUICK.__dict__, **opts})
    return evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "out", options)


def test_values_0_50_100_are_three_classes_in_training_and_evaluation(tmp_path: Path) -> None:
    masks = [_three_values(), _three_values()]
    ds = load_dataset(_dataset(tmp_path / "data", masks))
    assert ds.num_classes == 3
    result = _evaluate(tmp_path, masks, masks)
    assert result.summary["num_classes"] == 3  # was 101 (max value + 1)
    assert len(result.summary["dice_per_class"]) == 3 and result.summary["dice"] == 1.0


def test_uint16_class_masks_are_classes_not_instances_in_evaluation(tmp_path: Path) -> None:
    masks = [_three_values(values=(0, 1, 2)).astype(np.uint16) for _ in range(2)]
    ds = load_dataset(_dataset(tmp_path / "data", masks, ".tif"))
    assert ds.num_classes == 3 and ds.label_mapping.kind == "classes"
    result = _evaluate(tmp_path / "same", masks, masks, ext=".tif")
    assert result.summary["num_classes"] == 3  # was 2: read as instance ids, classes 1 and 2 merged
    assert len(result.summary["dice_per_class"]) == 3 and result.summary["dice"] == 1.0
    pred = masks[0].copy()
    pred[:, 4:8] = 2  # class 1 predicted as class 2
    result = _evaluate(tmp_path / "swap", masks, [masks[0], pred], ext=".tif")
    assert result.rows[0]["dice_per_class"][1] == 0.0 and result.rows[0]["dice_per_class"][2] < 1.0


def test_rgb_masks_that_train_also_evaluate(tmp_path: Path) -> None:
    mask = np.zeros((3, 12, 12), np.uint8)
    mask[0, :, 4:8] = 255  # red
    mask[1, :, 8:] = 255  # green
    ds = load_dataset(_dataset(tmp_path / "data", [mask]))
    assert ds.label_mapping.kind == "colours" and ds.num_classes == 3
    pred = mask.copy()
    pred[:, :, 8:] = 0  # green missed
    result = _evaluate(tmp_path, [mask], [pred])  # was refused: "not a unetkit palette colour"
    assert result.summary["num_classes"] == 3
    # colours sort (0,0,0) < (0,255,0) < (255,0,0): green is class 1, red class 2, as in training
    assert result.rows[0]["dice_per_class"][1:] == [0.0, 1.0]


@pytest.mark.parametrize(
    "masks",
    [
        [_three_values(), _three_values(values=(0, 100, 100))],
        [np.stack([_three_values(values=(0, 255, 0)), _three_values(values=(0, 0, 255)), np.zeros((12, 12))])],
        [(_three_values(values=(0, 1, 9))).astype(np.uint8)],
    ],
    ids=["values", "colours", "ignore"],
)
def test_check_counts_the_classes_training_gets(tmp_path: Path, masks: list[np.ndarray]) -> None:
    masks = [m.astype(np.uint8) for m in masks]
    root = _dataset(tmp_path, masks)
    ignore = 9 if any((m == 9).any() for m in masks) else None
    fp = check_dataset(root, ignore_index=ignore).fingerprint
    ds = load_dataset(root, ignore_index=ignore)
    trained = sum(np.bincount(s.mask[s.mask != ignore].ravel(), minlength=ds.num_classes) for s in ds)
    assert fp.class_counts == trained.tolist()


def _stray_set(root: Path) -> Path:
    clean = (RNG.random((32, 32)) > 0.5).astype(np.uint8) * 255
    stray = clean.copy()
    stray[0, :3] = 128  # 3 pixels of 128: resampling debris, not a class
    return _dataset(root, [clean, clean, clean, stray])


def test_a_stray_value_is_a_problem_not_a_class(tmp_path: Path) -> None:
    root = _stray_set(tmp_path)
    report = check_dataset(root)
    assert report.mapping is not None and report.mapping.num_classes == 2  # 128 did not become a class
    [problem] = report.problems
    assert problem.file == "masks/s3.png" and "128: 3 px" in problem.problem and "stray" in problem.problem
    assert "--num-classes" in problem.fix
    with pytest.raises(DataError, match=r"masks/s3\.png"):
        load_dataset(root)
    # pinning decides: 3 classes make 128 a class, 2 classes make it a value beyond them
    assert check_dataset(root, num_classes=3).ok
    assert load_dataset(root, num_classes=3).num_classes == 3
    [beyond] = check_dataset(root, num_classes=2).problems
    assert beyond.file == "masks/s3.png" and "128: 3 px" in beyond.problem and "outside the 2 classes" in beyond.problem


def test_a_stray_value_in_the_truths_is_an_error_naming_the_file(tmp_path: Path) -> None:
    root = _stray_set(tmp_path / "data")
    (tmp_path / "pred").mkdir()
    for p in sorted((root / "masks").iterdir()):
        (tmp_path / "pred" / p.name).write_bytes(p.read_bytes())
    with pytest.raises(DataError, match=r"s3\.png.*128: 3 px"):
        evaluate_folders(tmp_path / "pred", root / "masks", tmp_path / "out", QUICK)
    options = EvaluateOptions(**{**QUICK.__dict__, "num_classes": 3})
    assert evaluate_folders(tmp_path / "pred", root / "masks", tmp_path / "out", options).summary["num_classes"] == 3


def test_rare_only_foreground_is_not_a_stray(tmp_path: Path) -> None:
    m = np.zeros((64, 64), np.uint8)
    m[5, 5] = 255  # tiny objects: 1 px of 4096, yet the set's only foreground value
    report = check_dataset(_dataset(tmp_path, [m]))
    assert report.ok and report.mapping is not None and report.mapping.mapping == {0: 0, 255: 1}


def test_predictions_are_class_indices_or_in_the_truths_encoding(tmp_path: Path) -> None:
    truth = _three_values(values=(0, 255, 255))
    indices = (truth // 255).astype(np.uint8)
    result = _evaluate(tmp_path / "a", [truth, truth], [indices, truth])
    assert result.summary["num_classes"] == 2 and all(r["dice"] == 1.0 for r in result.rows)
    bad = truth.copy()
    bad[0, 0] = 7
    with pytest.raises(DataError, match=r"s0\.png"):
        _evaluate(tmp_path / "b", [truth], [bad])


def test_check_json_problems_are_fields(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unetkit.cli import app

    root = _stray_set(tmp_path)
    res = CliRunner().invoke(app, ["check", str(root), "--json"])
    assert res.exit_code == 2
    [problem] = json.loads(res.output)["problems"]
    assert set(problem) == {"file", "problem", "fix"} and problem["file"] == "masks/s3.png"
    assert "; fix:" not in problem["problem"] and "(fix:" not in problem["problem"]
