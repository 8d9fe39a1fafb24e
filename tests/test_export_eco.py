"""TorchScript export matches PyTorch; the bioimage.io package validates and its test tensors reproduce unetkit."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from unetkit import create_model
from unetkit.infer.bioimageio import export_bioimageio, load_package_model, validate_package
from unetkit.infer.export import export_torchscript
from unetkit.infer.predictor import Predictor
from unetkit.modelfile import describe


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_torchscript_matches_torch_at_two_sizes(tmp_path: Path, padding: str) -> None:
    torch.manual_seed(0)
    net = create_model("unet2d_small", depth=2, width=4, padding=padding).eval()
    path = export_torchscript(net, tmp_path / "m.pt")
    extra = {"unetkit": ""}
    ts = torch.jit.load(str(path), _extra_files=extra)
    assert b"UNet" in extra["unetkit"] if isinstance(extra["unetkit"], bytes) else "UNet" in extra["unetkit"]
    for n in (44, 68):
        size = net.contract.round((n, n + 8), "tile")
        x = torch.randn(2, 1, *size)
        with torch.no_grad():
            assert torch.allclose(ts(x), net(x), atol=1e-5)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_bioimageio_package_validates_and_reproduces_unetkit(tmp_path: Path, padding: str) -> None:
    pytest.importorskip("bioimageio.spec")
    torch.manual_seed(0)
    net = create_model("unet2d_small", depth=2, width=4, padding=padding).eval()
    net.description = describe(net, normalization={"kind": "zscore", "params": {"scope": "image"}})
    path = export_bioimageio(net, tmp_path / "model.zip")
    validate_package(path)
    with zipfile.ZipFile(path) as z:
        x = np.load(io.BytesIO(z.read("test_input.npy")))
        y = np.load(io.BytesIO(z.read("test_output.npy")))
    back = load_package_model(path)
    proba = Predictor(back, device="cpu", backend="torch").predict_proba(x[0])
    m = [(a - b) // 2 for a, b in zip(x.shape[2:], y.shape[2:], strict=True)]
    crop = proba[:, m[0] : m[0] + y.shape[2], m[1] : m[1] + y.shape[3]]
    assert np.abs(crop - y[0]).max() < 1e-3  # the spec's tolerance


def test_bioimageio_core_model_test(tmp_path: Path) -> None:
    core = pytest.importorskip("bioimageio.core")
    torch.manual_seed(0)
    net = create_model("unet2d_small", depth=2, width=4).eval()
    net.description = describe(net, normalization={"kind": "zscore", "params": {"scope": "image"}})
    summary = core.test_model(str(export_bioimageio(net, tmp_path / "model.zip")))
    assert summary.status in ("passed", "valid-format"), summary.display()


def test_cli_exports_a_package_and_predicts_with_it(tmp_path: Path) -> None:
    pytest.importorskip("bioimageio.spec")
    import tifffile
    from typer.testing import CliRunner

    from unetkit.cli import app
    from unetkit.errors import ConfigError
    from unetkit.modelfile import save_model

    torch.manual_seed(0)
    model = save_model(tmp_path / "m.safetensors", create_model("unet2d_small", depth=2, width=4))
    runner = CliRunner()
    zip_path = tmp_path / "model.zip"
    r = runner.invoke(
        app, ["export", str(model), "--format", "bioimageio", "--out", str(zip_path), "--set", "license=CC-BY-4.0"]
    )
    assert r.exit_code == 0, r.output
    assert "validation: passed" in r.output
    r = runner.invoke(app, ["export", str(model), "--format", "bioimageio", "--set", "colour=red"])
    assert isinstance(r.exception, ConfigError) and "unknown package field" in str(r.exception)
    tifffile.imwrite(tmp_path / "img.tif", np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8))
    r = runner.invoke(app, ["predict", str(zip_path), str(tmp_path / "img.tif"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert tifffile.imread(tmp_path / "out" / "img.tif").shape == (40, 50)


def _apply_steps(x: np.ndarray, steps: list[dict]) -> np.ndarray:
    """bioimage.io's ``ensure_dtype``, ``clip`` and ``scale_linear`` (channel axis 1), as a consumer applies them."""
    for step in steps:
        kw = step.get("kwargs", {})
        if step["id"] == "ensure_dtype":
            x = x.astype(kw["dtype"])
        elif step["id"] == "clip":
            x = np.clip(x, kw["min"], kw["max"])
        elif step["id"] == "scale_linear":
            shape = (1, -1) + (1,) * (x.ndim - 2)
            x = x * np.reshape(kw["gain"], shape) + np.reshape(kw["offset"], shape)
        else:
            raise AssertionError(f"unexpected step {step['id']}")
    return x.astype(np.float32)


def test_a_restoration_package_outputs_the_restored_image(tmp_path: Path) -> None:
    """A restoration model's package (``task: restore``) post-processes back to the targets' intensity range:
    its pre-processing, ONNX weights and post-processing, applied as a bioimage.io consumer does, give its test
    output, which is what ``unetkit.predict`` returns; no softmax, no [0, 1] range."""
    pytest.importorskip("bioimageio.spec")
    import onnxruntime as ort
    import yaml

    import unetkit

    torch.manual_seed(0)
    net = create_model("unet2d_small", in_channels=1, num_classes=2, depth=2, width=4, norm=None).eval()
    targets = {"kind": "range", "params": {"min": [100.0, -3.0], "max": [4000.0, 3.0]}, "dtype": "uint16"}
    inputs = {"kind": "range", "params": {"min": [0.0], "max": [255.0]}}
    model = unetkit.save_model(
        tmp_path / "m.safetensors", net, task="restore", normalization=inputs, target_normalization=targets
    )
    path = export_bioimageio(unetkit.load_model(model), tmp_path / "restore.zip")
    validate_package(path)
    with zipfile.ZipFile(path) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        x = np.load(io.BytesIO(z.read("test_input.npy")))
        y = np.load(io.BytesIO(z.read("test_output.npy")))
        onnx = z.read("weights.onnx")
    out = rdf["outputs"][0]
    assert out["id"] == "restored" and "range" not in out["data"] and "restoration" in rdf["tags"]
    assert [s["id"] for s in out["postprocessing"]] == ["scale_linear"]
    assert any("10.1038/s41592-018-0216-7" == c.get("doi") for c in rdf["cite"])  # CARE
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    raw = session.run(None, {session.get_inputs()[0].name: _apply_steps(x, rdf["inputs"][0]["preprocessing"])})[0]
    consumer = _apply_steps(raw, out["postprocessing"])
    np.testing.assert_allclose(consumer, y, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(unetkit.predict(str(path), x[0], device="cpu"), y[0], rtol=1e-4, atol=1e-3)
    # each channel is brought back to its own targets' range: x * (max - min) + min
    np.testing.assert_allclose(y[0, 0], raw[0, 0] * 3900.0 + 100.0, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(y[0, 1], raw[0, 1] * 6.0 - 3.0, rtol=1e-4, atol=1e-4)
