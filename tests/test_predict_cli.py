"""``unetkit predict`` and ``unetkit export`` end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from unetkit.cli import app, main
from unetkit.data.io import read_image, read_mask, write_image
from unetkit.infer import Predictor
from unetkit.modelfile import load_model, save_model
from unetkit.models import UNet

runner = CliRunner()


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    net = UNet(2, 1, 2, depth=2, width=4).eval()
    return save_model(tmp_path / "m.safetensors", net, class_names=["background", "cell"])


def test_predict_many_inputs_with_all_outputs(tmp_path: Path, model_file: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "imgs" / name, (rng.random((1, 50, 60)) * 255).astype(np.uint8))
    tifffile.imwrite(tmp_path / "c.tif", (rng.random((70, 40)) * 255).astype(np.uint8))
    args = ["predict", str(model_file), str(tmp_path / "imgs"), str(tmp_path / "*.tif"), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*args, "--tile", "32", "--probabilities", "--overlay", "--blend", "hann"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == sorted(
        ["a.png", "a_prob.tif", "a_overlay.png", "b.png", "b_prob.tif", "b_overlay.png", "c.tif", "c_prob.tif",
         "c_overlay.png"]
    )  # fmt: skip
    pred = Predictor(load_model(model_file), tile=32, blend="hann", device="cpu")
    a = read_image(tmp_path / "imgs" / "a.png").array
    assert np.array_equal(read_mask(tmp_path / "o" / "a.png"), pred.predict(a))  # a palette PNG of class indices


def test_export_onnx_and_predict_with_onnxruntime(tmp_path: Path, model_file: Path) -> None:
    pytest.importorskip("onnxruntime")
    write_image(tmp_path / "x.tif", (np.random.default_rng(1).random((1, 64, 48)) * 255).astype(np.uint8))
    result = runner.invoke(app, ["export", str(model_file), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    from unetkit.infer.export import read_onnx_description

    assert read_onnx_description(tmp_path / "m.onnx")["class_names"] == ["background", "cell"]
    outs = {}
    for name, model, backend in (("t", model_file, "torch"), ("o", tmp_path / "m.onnx", "onnxruntime")):
        args = ["predict", str(model), str(tmp_path / "x.tif"), "--out", str(tmp_path / name), "--backend", backend]
        result = runner.invoke(app, [*args, "--probabilities", "--tile", "32", "--quiet"])
        assert result.exit_code == 0, result.output
        outs[name] = tifffile.imread(tmp_path / name / "x_prob.tif").astype(np.float32)
    assert np.abs(outs["t"] - outs["o"]).max() <= 1e-3  # float16 storage; raw parity is tested in test_infer


def test_refuses_to_overwrite_input(tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_image(tmp_path / "x.png", np.zeros((1, 32, 32), np.uint8))
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(model_file), str(tmp_path / "x.png"), "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "overwrite the input" in capsys.readouterr().err


def test_help_has_an_example() -> None:
    for cmd in ("predict", "export"):
        result = runner.invoke(app, [cmd, "--help"])
        assert result.exit_code == 0 and "Example" in result.output


def test_training_image_warning_needs_the_training_file_not_its_name(tmp_path: Path) -> None:
    """The warning that inputs trained the model counts an input that is a training file (same bytes), not a new
    image that only shares its name; without the run's dataset it goes by the names in split.json."""
    import json

    from unetkit.cli.predict import training_image_warnings

    data, run, new = tmp_path / "data", tmp_path / "run", tmp_path / "new"
    for folder, value in ((data / "images", 1), (new, 2)):
        folder.mkdir(parents=True)
        for name in ("00", "01"):
            (folder / f"{name}.tif").write_bytes(bytes([value]) * 64)
    run.mkdir()
    (run / "split.json").write_text(json.dumps({"train": ["00"], "val": ["01"]}))
    (run / "config.yaml").write_text(f"data:\n  path: {data}\n")
    model = str(run / "model.safetensors")
    lines = training_image_warnings([model], sorted((data / "images").iterdir()))
    assert len(lines) == 1 and lines[0].startswith("1 of these images trained") and "00.tif" in lines[0]
    assert training_image_warnings([model], sorted(new.iterdir())) == []  # the same names, other images
    (run / "config.yaml").write_text(f"data:\n  path: {tmp_path / 'moved'}\n")  # the dataset is gone: by name
    assert len(training_image_warnings([model], sorted(new.iterdir()))) == 1
