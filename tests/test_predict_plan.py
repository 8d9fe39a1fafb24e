"""Prediction for planned models: ensembles, the model's spacing, instances from boundary models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unetkit import create_model
from unetkit.data.io import read_image, write_image
from unetkit.errors import ConfigError
from unetkit.infer import Predictor
from unetkit.infer.ensemble import load_ensemble
from unetkit.infer.files import predict_files
from unetkit.modelfile import load_model, save_model


def _model(path: Path, seed: int, **info) -> Path:
    import torch

    torch.manual_seed(seed)
    net = create_model("unet2d_small", depth=2, width=4, norm=None)
    return save_model(path, net, normalization={"kind": "zscore", "params": {"scope": "image"}}, **info)


def test_ensemble_averages_probabilities(tmp_path: Path) -> None:
    a, b = _model(tmp_path / "a.safetensors", 0), _model(tmp_path / "b.safetensors", 1)
    image = np.random.default_rng(0).random((1, 40, 48)).astype(np.float32)
    pa = Predictor(load_model(a), backend="torch", tile=32).predict_proba(image)
    pb = Predictor(load_model(b), backend="torch", tile=32).predict_proba(image)
    both = load_ensemble([a, b], backend="torch", tile=32).predict_proba(image)
    assert np.allclose(both, (pa + pb) / 2, atol=1e-5)
    c = tmp_path / "c.safetensors"
    save_model(c, create_model("unet2d_small", depth=2, width=4, num_classes=3))
    with pytest.raises(ConfigError, match="differs"):
        load_ensemble([a, c], backend="torch")


def test_predict_files_with_several_models(tmp_path: Path) -> None:
    a, b = _model(tmp_path / "a.safetensors", 0), _model(tmp_path / "b.safetensors", 1)
    write_image(tmp_path / "in" / "x.png", (np.random.default_rng(1).random((40, 40)) * 255).astype(np.uint8))
    res = predict_files([a, b], [tmp_path / "in"], tmp_path / "out", backend="torch")
    assert len(res) == 1 and res[0].outputs.labels.is_file()


def test_prediction_at_the_model_spacing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _model(tmp_path / "m.safetensors", 0, spacing=[2.0, 2.0])
    img = (np.random.default_rng(2).random((40, 60)) * 255).astype(np.uint8)
    write_image(tmp_path / "in" / "fine.tif", img, spacing=(1.0, 1.0))
    write_image(tmp_path / "in" / "far.tif", img, spacing=(0.25, 0.25))
    with caplog.at_level("WARNING"):
        res = predict_files(model, [tmp_path / "in"], tmp_path / "out", backend="torch")
    for r in res:
        assert read_image(r.outputs.labels).array.shape[-2:] == (40, 60)  # back on the input grid
    assert any("far from the model" in m for m in caplog.messages)
    assert sum("far from the model" in m for m in caplog.messages) == 1  # fine.tif (ratio 0.5) is close enough


def test_boundary_model_writes_instances_by_default(tmp_path: Path) -> None:
    net = create_model("unet2d_small", depth=2, width=4, num_classes=3)
    model = save_model(
        tmp_path / "b.safetensors",
        net,
        class_names=["background", "interior", "boundary"],
        extra={"target": "boundary"},
    )
    write_image(tmp_path / "in" / "x.tif", (np.random.default_rng(3).random((32, 32)) * 255).astype(np.uint8))
    res = predict_files(model, [tmp_path / "in"], tmp_path / "out", backend="torch")
    assert (tmp_path / "out" / "x_instances.tif").is_file() and res[0].postprocessed


def test_cli_predict_several_models(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unetkit.cli import app

    a, b = _model(tmp_path / "a.safetensors", 0), _model(tmp_path / "b.safetensors", 1)
    write_image(tmp_path / "in" / "x.png", (np.random.default_rng(1).random((40, 40)) * 255).astype(np.uint8))
    args = ["predict", str(a), str(b), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "x.png").is_file() and not (tmp_path / "out" / "b.png").exists()


def test_planned_deep_instance_norm_net_exports_to_onnx() -> None:
    """A planned net (depth 6, instance norm) once failed to export: its bottom was 1 pixel at the trace size."""
    pytest.importorskip("onnxruntime")
    net = create_model("unet2d", depth=6, width=4, max_width=8).eval()
    image = np.random.default_rng(0).random((1, 80, 70)).astype(np.float32)
    torch_p = Predictor(net, backend="torch", tile=128).predict_proba(image)
    onnx_p = Predictor(net, backend="onnxruntime", tile=128).predict_proba(image)
    assert np.abs(torch_p - onnx_p).max() < 1e-4
