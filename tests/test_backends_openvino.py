"""The OpenVINO backend: parity with PyTorch (2D/3D, same/valid, TTA, batches split over streams), the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unetkit.cli import app, main
from unetkit.data.io import read_image, write_image
from unetkit.errors import MissingExtraError
from unetkit.infer import Predictor, load_predictor
from unetkit.infer.backends import OnnxBackend, OpenVinoBackend
from unetkit.infer.export import onnx_bytes
from unetkit.modelfile import load_model, save_model
from unetkit.models import UNet

runner = CliRunner()

CASES = [  # dims, padding, tile, image shape
    (2, "same", 48, (70, 50)),
    (2, "valid", 64, (70, 50)),
    (3, "same", 24, (20, 26, 22)),
    (3, "valid", 44, (9, 13, 10)),
]


@pytest.mark.parametrize(("dims", "padding", "tile", "shape"), CASES)
def test_openvino_matches_torch(dims: int, padding: str, tile: int, shape: tuple[int, ...]) -> None:
    pytest.importorskip("openvino")
    net = UNet(dims, 1, 3, depth=2, width=4, padding=padding).eval()
    image = np.random.default_rng(dims).random((1, *shape)).astype(np.float32)
    kw = dict(tile=tile, device="cpu", batch_size=3)
    ref = Predictor(net, backend="torch", **kw).predict_proba(image)  # type: ignore[arg-type]
    got = Predictor(net, backend="openvino", **kw).predict_proba(image)  # type: ignore[arg-type]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4


def test_openvino_splits_a_batch_over_streams_and_tta() -> None:
    pytest.importorskip("openvino")
    net = UNet(2, 1, 2, depth=2, width=4).eval()
    graph = onnx_bytes(net)
    x = np.random.default_rng(0).random((5, 1, 32, 32)).astype(np.float32)
    ref = OnnxBackend(graph, spatial_dims=2, device="cpu", tta=True)(x)
    for hint in ("throughput", "latency"):
        ov = OpenVinoBackend(graph, spatial_dims=2, device="cpu", threads=2, tta=True, hint=hint)
        np.testing.assert_allclose(ov(x), ref, atol=1e-5)
        np.testing.assert_allclose(ov(x[:2]), ref[:2], atol=1e-5)  # another batch shape: compiled again


def test_openvino_gets_one_sub_batch_per_stream_by_default() -> None:
    pytest.importorskip("openvino")
    net = UNet(2, 1, 2, depth=2, width=4).eval()
    pred = Predictor(net, tile=512, device="cpu", backend="openvino")
    assert isinstance(pred.backend, OpenVinoBackend)
    streams = pred.backend.streams((1, 512, 512))
    assert streams >= 1
    plan = pred.plan((1200, 1200))
    assert pred.batch_for(plan) == streams  # one 512-pixel tile per stream
    assert pred.batch_for(pred.plan((256, 1200))) == 4 * pred.backend.streams((1, 256, 512)) // 2


def test_missing_openvino_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    net = UNet(2, 1, 2, depth=2, width=4).eval()
    with pytest.raises(MissingExtraError, match=r"pip install 'unetkit\[openvino\]'"):
        Predictor(net, backend="openvino", device="cpu")
    model = save_model(tmp_path / "m.safetensors", net)
    write_image(tmp_path / "x.png", np.zeros((1, 40, 40), np.uint8))
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(model), str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), "--backend", "openvino"])
    assert exc.value.code == 2
    assert "unetkit[openvino]" in capsys.readouterr().err


def test_predict_cli_and_onnx_file_with_openvino(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    net = UNet(2, 1, 2, depth=2, width=4).eval()
    model = save_model(tmp_path / "m.safetensors", net, class_names=["background", "cell"])
    image = (np.random.default_rng(1).random((1, 64, 48)) * 255).astype(np.uint8)
    write_image(tmp_path / "x.tif", image)
    args = ["predict", str(model), str(tmp_path / "x.tif"), "--tile", "32", "--backend", "openvino", "--probabilities"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    ref = Predictor(load_model(model), tile=32, device="cpu").predict_proba(image)
    prob = read_image(tmp_path / "o" / "x_prob.tif").array.astype(np.float32)
    assert np.abs(prob - ref).max() < 2e-3  # float16 on disk
    result = runner.invoke(app, ["export", str(model), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    pred = load_predictor(str(tmp_path / "m.onnx"), backend="openvino", tile=32)
    assert pred.backend.name == "openvino"
    assert np.abs(pred.predict_proba(image) - ref).max() <= 1e-4
