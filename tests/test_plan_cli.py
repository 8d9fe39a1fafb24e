"""`unetkit plan` and `unetkit train DATA --budget` with no other flags: plans, trains, predicts (2D and 3D)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from unetkit.cli import app, main
from unetkit.data.io import read_image, write_image
from unetkit.modelfile import read_description
from unetkit.synthetic import synthetic_cells, write_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def cells2d(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cells2d")
    write_dataset(str(root), n=5, shape=(96, 96), seed=1)
    return root


@pytest.fixture(scope="module")
def stack3d(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stack3d")
    for i in range(4):
        s = synthetic_cells((8, 48, 48), seed=i)
        write_image(root / "images" / f"v{i}.nii.gz", s.image, spacing=(4.0, 1.0, 1.0))
        write_image(root / "masks" / f"v{i}.nii.gz", s.mask.astype(np.uint8), spacing=(4.0, 1.0, 1.0))
    return root


def test_plan_command_writes_and_explains(cells2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.yaml"
    result = runner.invoke(app, ["plan", str(cells2d), "--budget", "5m", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "why" in result.output and "patch" in result.output
    plan = yaml.safe_load(out.read_text())
    keys = {d["key"] for d in plan["decisions"]}
    assert {"data.patch_size", "train.batch_size", "model.args.pool_sizes", "train.epochs"} <= keys
    with pytest.raises(SystemExit) as exc:
        main(["plan", str(cells2d), "--budget", "soon", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--budget" in err and "Traceback" not in err


def test_train_with_no_flags_plans_trains_predicts_2d(cells2d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(cells2d), "--out", str(run), "--budget", "1m", "--quiet"])
    assert result.exit_code == 0, result.output
    for name in ("plan.yaml", "split.json", "config.yaml", "model.safetensors"):
        assert (run / name).is_file(), name
    split = json.loads((run / "split.json").read_text())
    assert split["val"] and not set(split["val"]) & set(split["train"])
    desc = read_description(run / "model.safetensors")
    assert desc.architecture.preset == "unet2d" and desc.extra["plan"]
    result = runner.invoke(
        app, ["predict", str(run / "model.safetensors"), str(cells2d / "images"), "--out", str(tmp_path / "p")]
    )
    assert result.exit_code == 0, result.output
    pred = read_image(tmp_path / "p" / "cell_00.tif").array[0]
    truth = read_image(cells2d / "masks" / "cell_00.tif").array[0] > 0
    dice = 2 * ((pred > 0) & truth).sum() / ((pred > 0).sum() + truth.sum())
    assert dice > 0.6


def test_train_anisotropic_3d_nifti(stack3d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run3d"
    result = runner.invoke(app, ["train", str(stack3d), "--out", str(run), "--budget", "0.5m", "--quiet"])
    assert result.exit_code == 0, result.output
    desc = read_description(run / "model.safetensors")
    assert desc.spatial_dims == 3 and desc.spacing == [4.0, 1.0, 1.0]
    assert desc.architecture.args["kernel_sizes"][0] == [1, 3, 3]  # no mixing across distant slices first
    result = runner.invoke(
        app,
        [
            "predict",
            str(run / "model.safetensors"),
            str(stack3d / "images" / "v0.nii.gz"),
            "--out",
            str(tmp_path / "p"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert read_image(next((tmp_path / "p").iterdir())).array.shape[-3:] == (8, 48, 48)


def test_override_wins_and_table_says_so(cells2d: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    args = ["plan", str(cells2d), "--budget", "2m", "--device", "cpu", "--out", str(out), "--set", "train.batch_size=3"]
    result = runner.invoke(app, [*args, "--set", "data.patch_size=48"])
    assert result.exit_code == 0, result.output
    decisions = {d["key"]: d for d in yaml.safe_load(out.read_text())["decisions"]}
    assert decisions["train.batch_size"]["value"] == 3 and decisions["train.batch_size"]["source"] == "you"
    assert decisions["data.patch_size"]["value"] == 48 and decisions["data.patch_size"]["source"] == "you"
    assert "set by you" in result.output
    # a saved plan trains as it is, and a flag still wins over it
    args = ["train", str(cells2d), "--plan", str(out), "--out", str(tmp_path / "r"), "--epochs", "1"]
    result = runner.invoke(app, [*args, "--set", "train.iterations_per_epoch=2", "--quiet"])
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert cfg["train"]["batch_size"] == 3 and cfg["train"]["epochs"] == 1
