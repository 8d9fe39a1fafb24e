from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unetkit import create_model, save_model
from unetkit.cli import app
from unetkit.data.io import read_image, write_image
from unetkit.errors import DataError
from unetkit.postprocess.files import instances_path, postprocess_file

runner = CliRunner()


def test_postprocess_file_in_place_and_instances(tmp_path: Path) -> None:
    labels = np.zeros((40, 60), np.uint8)
    labels[5:20, 5:25] = 1
    labels[5:20, 26:50] = 1  # touches the first square through a 1-pixel gap... then joined below
    labels[12, 25] = 1
    labels[35, 55] = 1  # a one-pixel island
    path = tmp_path / "cells.png"
    write_image(path, labels)
    written = postprocess_file(path, "remove-islands:5", num_classes=2, instances="distance")
    assert written == [path, instances_path(path)]
    cleaned = read_image(path).array[0]
    assert cleaned[35, 55] == 0 and cleaned[10, 10] == 1
    ids = read_image(instances_path(path)).array[0]
    assert ids.max() == 2  # the watershed splits the two squares at the neck
    with pytest.raises(DataError, match="probabilities"):
        postprocess_file(path, num_classes=2, instances="probability")
    with pytest.raises(DataError, match="in memory") as exc:
        postprocess_file(path, "fill-holes", num_classes=2, max_voxels=100)
    assert exc.value.file == str(path) and exc.value.fix and str(path) not in exc.value.problem


def test_predict_cli_postprocess_and_instances(tmp_path: Path) -> None:
    model = save_model(tmp_path / "m.safetensors", create_model("unet2d_small", width=2))
    write_image(tmp_path / "in" / "a.png", (np.random.default_rng(0).random((48, 40)) * 255).astype(np.uint8))
    args = [
        "predict",
        str(model),
        str(tmp_path / "in" / "a.png"),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        "--backend",
        "torch",
        "--postprocess",
        "remove-islands:3,crf:2",
        "--instances",
        "components",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "a_instances.tif").is_file()
    bad = runner.invoke(app, [*args[:-4], "--postprocess", "dilate:3"])
    assert bad.exit_code != 0 and "dilate" in str(bad.exception or bad.output)
