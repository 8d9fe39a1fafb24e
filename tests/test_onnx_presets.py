"""Every preset runs on ONNX Runtime at tile sizes other than the export size, as it does on PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import unetkit
from unetkit import create_model
from unetkit.errors import UnetkitError
from unetkit.infer.backends import OnnxBackend, TorchBackend
from unetkit.infer.export import onnx_bytes
from unetkit.models import UNETR, UNet
from unetkit.models.multires import MultiResUNet

pytest.importorskip("onnxruntime")


def tiny_overrides(name: str) -> dict:
    """Small versions of a preset, keeping everything that shapes the graph (class, dims, padding, blocks)."""
    preset = unetkit.models.registry.get_preset(name)
    dims = preset.args["spatial_dims"]
    if issubclass(preset.cls, UNETR):
        return dict(img_size=8, patch_size=4, hidden_size=16, mlp_dim=16, num_layers=2, num_heads=2, width=2)
    if issubclass(preset.cls, UNet | MultiResUNet):
        return dict(depth=2, width=4 if dims == 2 else 2)
    raise AssertionError(f"preset {name}: add tiny overrides for {preset.cls.__name__} to this test")


def two_tiles(net: torch.nn.Module) -> list[tuple[int, ...]]:
    """Two legal tiles, neither the export size, one of them not square."""
    rule = "nearest" if net.padding == "valid" else "ceil"
    a, b = (net.legal_size(n, rule) for n in ((44, 64) if net.padding == "valid" else (12, 20)))
    return [(a, b, a)[: net.spatial_dims], (b,) * net.spatial_dims]


@pytest.mark.parametrize("name", unetkit.list_models())
def test_every_preset_on_onnxruntime_matches_torch_at_two_tile_sizes(name: str) -> None:
    torch.manual_seed(0)
    net = create_model(name, **tiny_overrides(name)).eval()
    if isinstance(net, UNETR):  # make the position embeddings matter, so a frozen resize would show
        torch.nn.init.normal_(net.vit.embed.position, std=1.0)
    ort = OnnxBackend(onnx_bytes(net), spatial_dims=net.spatial_dims, device="cpu", threads=1)
    ref = TorchBackend(net, device="cpu")
    rng = np.random.default_rng(0)
    for tile in two_tiles(net):
        x = rng.standard_normal((2, 1, *tile)).astype(np.float32)
        a, b = ref(x), ort(x)
        assert a.shape == b.shape == (2, 2, *net.output_shape(tile)), (name, tile)
        assert np.abs(a - b).max() < 1e-4, (name, tile)


def test_unetr_position_embeddings_follow_the_tile_in_onnx() -> None:
    """The resized embeddings really differ per grid, and the ONNX graph follows them (not the export grid)."""
    torch.manual_seed(0)
    net = create_model("unetr2d_small", **tiny_overrides("unetr2d_small")).eval()
    torch.nn.init.normal_(net.vit.embed.position, std=1.0)
    embed = net.vit.embed
    assert embed.position_for((2, 2)) is embed.position  # the reference grid: the learnt embeddings
    assert embed.position_for((3, 5)).shape == (1, 15, 16)
    ort = OnnxBackend(onnx_bytes(net), spatial_dims=2, device="cpu", threads=1)
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)  # the reference grid (2, 2)
    assert np.abs(ort(x) - TorchBackend(net, device="cpu")(x)).max() < 1e-4


def test_default_cli_predict_of_a_unetr_model_file(tmp_path: Path) -> None:
    import tifffile
    from typer.testing import CliRunner

    from unetkit.cli import app
    from unetkit.data.io import write_image
    from unetkit.data.normalize import Normalizer
    from unetkit.infer import load_predictor
    from unetkit.modelfile import save_model

    torch.manual_seed(0)
    net = create_model("unetr2d_small", **tiny_overrides("unetr2d_small")).eval()
    torch.nn.init.normal_(net.vit.embed.position, std=1.0)
    model = save_model(tmp_path / "m.safetensors", net, normalization=Normalizer("zscore").to_dict())
    image = (np.random.default_rng(2).random((1, 50, 37)) * 255).astype(np.uint8)
    write_image(tmp_path / "img.tif", image)
    runner = CliRunner()
    args = ["predict", str(model), str(tmp_path / "img.tif"), "--out", str(tmp_path / "o"), "--probabilities"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.output  # the default backend on CPU
    reference = load_predictor(str(model), backend="torch", device="cpu").predict_proba(image)
    assert np.abs(tifffile.imread(tmp_path / "o" / "img_prob.tif") - reference).max() < 2e-3  # float16 file
    # an exported file runs at any legal tile too
    result = runner.invoke(app, ["export", str(model), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    for tile in ("12", "24"):
        args = ["predict", str(tmp_path / "m.onnx"), str(tmp_path / "img.tif"), "--out", str(tmp_path / tile)]
        result = runner.invoke(app, [*args, "--tile", tile, "--tta", "--probabilities"])
        assert result.exit_code == 0, result.output
        want = load_predictor(str(model), backend="torch", device="cpu", tile=int(tile), tta=True).predict_proba(image)
        assert np.abs(tifffile.imread(tmp_path / tile / "img_prob.tif") - want).max() < 2e-3


def test_onnxruntime_failure_is_one_clear_error() -> None:
    net = UNet(2, 1, 2, depth=2, width=2).eval()
    ort = OnnxBackend(onnx_bytes(net), spatial_dims=2, device="cpu", threads=1)
    with pytest.raises(UnetkitError, match=r"onnxruntime cannot run .*\(1, 1, 10, 10\).*--backend torch"):
        ort(np.zeros((1, 1, 10, 10), np.float32))  # 10 is not a multiple of 2**depth
