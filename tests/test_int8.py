"""INT8 export with the accuracy guard: calibration images, the held-out Dice check, predict --precision int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from typer.testing import CliRunner

from unetkit.cli import app, main
from unetkit.data.io import read_image, write_image
from unetkit.infer import Predictor
from unetkit.infer.cache import graph_path
from unetkit.infer.quantize import CalibrationSet, Int8AccuracyError, calibration_set, dice_loss, export_int8
from unetkit.modelfile import load_model, save_model
from unetkit.models import UNet

pytest.importorskip("onnxruntime")
runner = CliRunner()


def blobs(seed: int, n: int = 64) -> np.ndarray:
    """Square blobs (0.8) on a dark ground (0.2), slightly blurred, with noise: foreground is above 0.5."""
    rng = np.random.default_rng(seed)
    squares = np.kron(rng.random((n // 16 + 1, n // 16 + 1)) > 0.5, np.ones((16, 16)))[:n, :n]
    img = ndi.gaussian_filter(0.2 + 0.6 * squares, 1)
    return (img + 0.05 * rng.standard_normal(img.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def trained() -> UNet:
    """A tiny network trained for a few steps to threshold the blobs (decisive logits, like a real model)."""
    torch.manual_seed(0)
    net = UNet(2, 1, 2, depth=2, width=4)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    x = torch.from_numpy(np.stack([blobs(s)[None] for s in range(4)]))
    y = (x[:, 0] > 0.5).long()
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "calib"
    for s in range(4, 8):
        write_image(folder / f"i{s}.tif", blobs(s)[None])
    return folder


def test_dice_loss_counts() -> None:
    a, b = dice_loss(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    np.testing.assert_allclose(1 - a / b, [1 / 3, 0.5, 1.0])  # 2*1/(2+1), 2*1/(1+3), 0/(1+0)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_normal_model_passes_and_runs(trained: UNet, images: Path, tmp_path: Path, backend: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    paths = sorted(images.iterdir())
    result = export_int8(
        trained, CalibrationSet(paths[:3], paths[3:], "test"), tmp_path / "q.onnx", backend=backend, tile=32
    )
    assert max(result.dice_loss) <= 0.005 and result.backend == backend
    assert (tmp_path / "q.onnx").is_file() and result.cached == graph_path(trained, "int8")
    image = blobs(9)[None]
    fp32 = Predictor(trained, tile=32, backend=backend).predict(image)
    int8 = Predictor(trained, tile=32, backend=backend, precision="int8").predict(image)
    assert (int8 == fp32).mean() > 0.99


def test_an_ill_conditioned_model_is_refused(images: Path) -> None:
    torch.manual_seed(1)
    untrained = UNet(2, 1, 2, depth=2, width=4).eval()  # near-ties everywhere: INT8 noise flips labels
    paths = sorted(images.iterdir())
    with pytest.raises(Int8AccuracyError, match="Dice") as exc:
        export_int8(untrained, CalibrationSet(paths[:3], paths[3:], "test"), backend="onnxruntime", tile=32)
    assert "class 0" in str(exc.value) and "--int8-tolerance" in str(exc.value)
    assert not graph_path(untrained, "int8").exists()


def test_cli_export_int8_guard_and_predict(
    trained: UNet, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_model(tmp_path / "m.safetensors", trained, class_names=["background", "blob"], tile_size=[32, 32])
    image = tmp_path / "x.tif"
    write_image(image, blobs(11)[None])
    out = ["--out", str(tmp_path / "o")]
    # no INT8 graph yet: predict says how to make one
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(model), str(image), *out, "--precision", "int8"])
    assert exc.value.code == 2 and "unetkit export MODEL --int8" in capsys.readouterr().err
    # tolerance 0: this model's labels do change by a few pixels, so the export is refused, with the losses
    with pytest.raises(SystemExit) as exc:
        main(["export", str(model), "--int8", "--calibration", str(images), "--int8-tolerance", "0"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "INT8 refused" in err and "background" in err and "blob" in err
    assert not (tmp_path / "m.int8.onnx").exists()
    # the default tolerance passes
    result = runner.invoke(app, ["export", str(model), "--int8", "--calibration", str(images)])
    assert result.exit_code == 0, result.output
    assert "Dice loss per class" in result.output and (tmp_path / "m.int8.onnx").is_file()
    result = runner.invoke(
        app, ["predict", str(model), str(image), *out, "--precision", "int8", "--backend", "onnxruntime"]
    )
    assert result.exit_code == 0, result.output
    fp32 = Predictor(load_model(model), backend="torch").predict(blobs(11)[None])
    assert (read_image(tmp_path / "o" / "x.tif").array[0] == fp32).mean() > 0.99
    # the INT8 file itself predicts (its metadata keeps the description)
    result = runner.invoke(app, ["predict", str(tmp_path / "m.int8.onnx"), str(image), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    # torch cannot run it
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(model), str(image), *out, "--precision", "int8", "--backend", "torch"])
    assert exc.value.code == 2


def test_calibration_images_default_to_the_training_run(trained: UNet, tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = save_model(run / "model.safetensors", trained)
    with pytest.raises(Exception, match="--calibration"):
        calibration_set(model)  # no config.yaml beside it
    for s in range(5):
        write_image(tmp_path / "ds" / "images" / f"i{s}.tif", blobs(s)[None])
        write_image(tmp_path / "ds" / "masks" / f"i{s}.tif", (blobs(s) > 0.5).astype(np.uint8)[None])
    (run / "config.yaml").write_text(f"data:\n  path: {tmp_path / 'ds'}\n")
    found = calibration_set(model)
    assert [p.name for p in found.calibrate] == ["i0.tif", "i1.tif", "i2.tif", "i3.tif"]
    assert [p.name for p in found.held_out] == ["i4.tif"]
    (run / "split.json").write_text('{"train": ["i0", "i1", "i3", "i4"], "val": ["i2"]}')
    found = calibration_set(model)
    assert [p.name for p in found.held_out] == ["i2.tif"] and len(found.calibrate) == 4
    with pytest.raises(Exception, match="at least 2"):
        calibration_set(model, [str(tmp_path / "ds" / "images" / "i0.tif")])
