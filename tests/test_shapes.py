"""The shape contract: per-axis arithmetic against real forward passes, the one rounding rule, contracts without
networks (from arguments, from descriptions, for an exported ONNX file)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from unetkit import InputShapeError, UNet, create_model, list_models
from unetkit.errors import ConfigError, ModelFileError, UnetkitError
from unetkit.infer import Predictor, choose_tile
from unetkit.modelfile import describe, shape_contract
from unetkit.models import get_preset
from unetkit.shapes import AxisContract, ShapeContract
from unetkit.train.loop import legal_patch, prediction_tile

SRC = Path(__file__).resolve().parents[1] / "src" / "unetkit"

#: (spatial_dims, padding, pool_sizes, kernel_sizes, block, attention): tiny nets of depth 2
NETS = [
    (2, "valid", None, None, "basic", False),
    (2, "same", None, None, "residual", True),
    (2, "valid", [(2, 1), 2], [(3, 1), 3, (5, 3)], "residual", True),
    (3, "valid", [(1, 2, 2), 2], [(1, 3, 3), 3, 3], "basic", True),
    (3, "same", [(1, 2, 2), (2, 2, 2)], [(1, 3, 3), (1, 3, 3), 3], "basic", False),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add overhead on a shared machine
    yield
    torch.set_num_threads(before)


def tiny_unet(spatial_dims: int, padding: str, pools: Any, kernels: Any, block: str, attention: bool) -> UNet:
    net = UNet(spatial_dims, 1, 2, depth=2, width=1, padding=padding, pool_sizes=pools, kernel_sizes=kernels,
               block=block, attention=attention)  # fmt: skip
    return net.eval()


def torch_legal(net: UNet, shape: tuple[int, ...]) -> tuple[bool, tuple[int, ...] | None]:
    """Whether torch runs ``shape`` through ``net`` with every pooling exact, and the output's size."""
    exact = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        k = module.kernel_size  # type: ignore[attr-defined]
        ks = (k,) * (inputs[0].ndim - 2) if isinstance(k, int) else k
        exact.append(all(s % p == 0 for s, p in zip(inputs[0].shape[2:], ks, strict=True)))

    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d | nn.MaxPool3d)]
    handles = [m.register_forward_pre_hook(hook) for m in pools]
    net._check = lambda x: None  # type: ignore[method-assign]  # let torch decide
    try:
        with torch.no_grad():
            y = net(torch.zeros(1, 1, *shape))
    except RuntimeError:
        return False, None
    finally:
        del net._check
        for h in handles:
            h.remove()
    ok = all(exact) and min(y.shape[2:]) >= 1
    return ok, tuple(y.shape[2:]) if ok else None


# ---- arithmetic against torch ------------------------------------------------------------------------------
@pytest.mark.parametrize("case", NETS, ids=lambda c: f"{c[0]}d-{c[1]}-{'aniso' if c[2] else 'iso'}-{c[4]}")
def test_legal_sizes_agree_with_a_forward_pass(case: tuple[Any, ...]) -> None:
    net = tiny_unet(*case)
    c = net.contract
    base = c.min_input_size()
    for ax in range(c.spatial_dims):
        seen = set()
        for n in range(max(1, base[ax] - 3), base[ax] + 2 * c.steps()[ax] + 2):
            shape = tuple(n if i == ax else base[i] for i in range(c.spatial_dims))
            ok, out = torch_legal(net, shape)
            seen.add(ok)
            assert ok == c.is_legal(n, ax), (ax, n)
            if ok:
                assert out == c.output_shape(shape), (ax, n)
                assert c.input_shape_for(out) == shape
        assert seen == {True, False} or c.steps()[ax] == 1, ax  # both kinds met (every size is legal at step 1)


@pytest.mark.parametrize("case", NETS, ids=lambda c: f"{c[0]}d-{c[1]}-{'aniso' if c[2] else 'iso'}")
def test_input_for_output_round_trips(case: tuple[Any, ...]) -> None:
    c = tiny_unet(*case).contract
    steps = c.steps()
    for k in range(1, 4):
        if c.padding == "valid":
            producible = [a.output_for_bottom(a.bottom_min + k) for a in c.axes]
        else:
            producible = [s * k for s in steps]
        x = tuple(producible)
        assert c.output_shape(c.input_shape_for(x)) == x
        n = c.input_shape_for(x)
        assert all(c.is_legal(v, ax) for ax, v in enumerate(n))
        assert tuple(m - o for m, o in zip(n, x, strict=True)) == tuple(2 * m for m in c.margin())


def test_anisotropic_3d_net_with_1x3x3_kernels_and_1x2x2_pools() -> None:
    net = UNet(3, 1, 2, depth=2, width=2, padding="valid", pool_sizes=[(1, 2, 2), (1, 2, 2)],
               kernel_sizes=[(1, 3, 3), (1, 3, 3), 3], attention=True)  # fmt: skip
    c = net.contract
    assert c.steps() == (1, 4, 4) and not c.isotropic
    # axis 0 only loses the bridge's 3x3x3 convolutions (2 x 2 = 4), the others the full 3x3 chain
    assert c.margin()[0] == 2 and c.margin()[1] == c.margin()[2] > 2
    shape = c.input_shape_for((3, 8, 12))
    with torch.no_grad():
        assert net(torch.zeros(1, 1, *shape)).shape == (1, 2, 3, 8, 12)
    assert net.stem[0].kernel_size == (1, 3, 3) and net.down[0][0].kernel_size == (1, 2, 2)
    assert net.up[-1].up.stride == (1, 2, 2) and net.up[-1].gate.theta_x.stride == (1, 2, 2)
    with pytest.raises(ValueError, match="differs per axis"):
        net.margin()
    with pytest.raises(ValueError, match="give axis="):
        net.legal_size(10)
    assert net.legal_size(10, axis=0) == 10 and net.legal_size(10, "ceil", axis=1) == c.legal_size(10, 1, "ceil")
    with pytest.raises(InputShapeError, match=r"axis 1: .* -> use"):
        net(torch.zeros(1, 1, shape[0], shape[1] + 1, shape[2]))


@pytest.mark.parametrize("upsample", ["nearest", "linear"])
def test_anisotropic_interpolating_upsampling(upsample: str) -> None:
    net = UNet(2, 1, 2, depth=2, width=2, upsample=upsample, pool_sizes=[(1, 2), (2, 2)])
    assert net.contract.steps() == (2, 4)
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 6, 12)).shape == (1, 2, 6, 12)


def test_defaults_build_todays_network() -> None:
    torch.manual_seed(0)
    a = UNet(2, 1, 2, depth=3, width=2, padding="valid", attention=True, block="residual")
    torch.manual_seed(0)
    b = UNet(2, 1, 2, depth=3, width=2, padding="valid", attention=True, block="residual",
             pool_sizes=[2, (2, 2), 2], kernel_sizes=3, max_width=1024)  # fmt: skip
    assert repr(a) == repr(b) and a.contract == b.contract
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert create_model("unet_paper").count_parameters() == 31_030_658


def test_max_width_caps_the_channels() -> None:
    net = UNet(3, 1, 2, depth=4, width=4, max_width=16)
    assert UNet.level_widths(4, 4, 16) == [4, 8, 16, 16, 16]
    assert [d[1][0].out_channels for d in net.down] == [8, 16, 16, 16]
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)
    with pytest.raises(UnetkitError, match="max_width"):
        create_model("unet2d_small", max_width=8)


def test_bad_per_level_arguments() -> None:
    for args, match in (
        (dict(pool_sizes=[2, 2]), "pool_sizes needs 3 entries"),
        (dict(pool_sizes=[2, (1, 2, 2), 2]), r"pool_sizes\[1\]"),
        (dict(pool_sizes=[2, 0, 2]), "integers >= 1"),
        (dict(kernel_sizes=[3, 3, 2, 3]), "odd"),
        (dict(kernel_sizes=[3, 3]), "kernel_sizes needs 4 entries"),
    ):
        with pytest.raises(UnetkitError, match=match):
            create_model("unet2d_small", **args)
        with pytest.raises(ValueError, match=match):
            UNet.contract_from_args(**{**get_preset("unet2d_small").args, **args})


# ---- messages ------------------------------------------------------------------------------------------------
def test_messages_keep_todays_style() -> None:
    paper = ShapeContract.unet(2, 4, "valid")
    with pytest.raises(InputShapeError, match=r"axis 0: 570 -> use 556 or 572; axis 1: 573 -> use 572 or 588"):
        paper.check((570, 573))
    with pytest.raises(InputShapeError, match="smallest legal size"):
        paper.check((100, 188))
    with pytest.raises(InputShapeError, match="nearest producible"):
        paper.input_shape_for((387, 388))
    aniso = ShapeContract.unet(3, 2, "same", pool_sizes=[(1, 2, 2), 2])
    with pytest.raises(InputShapeError, match=r"multiple of \(2, 4, 4\) per axis \(the product of the pool sizes\)"):
        aniso.check((3, 8, 8))
    with pytest.raises(InputShapeError, match="needs 3 spatial axes"):
        aniso.check((8, 8))


# ---- the rounding rule ---------------------------------------------------------------------------------------
def test_round_valid_nearest_same_up() -> None:
    valid = ShapeContract.unet(2, 4, "valid")
    assert valid.round(570, "patch") == (572, 572)  # nearest
    assert valid.round((563, 565), "patch") == (556, 572)  # 563: 556 is nearer; 565: 572 is nearer
    assert valid.round(564, "patch") == (572, 572)  # a tie goes up
    assert valid.round(10, "tile", image=(5, 5)) == (188, 188)  # never below the smallest; image does not limit
    same = ShapeContract.unet(2, 3, "same")
    assert same.round(97, "patch") == (104, 104)  # up, even when 96 is nearer
    assert same.round((500, 500), "tile", image=(100, 1000)) == (104, 504)  # up to what covers the image
    assert same.round(3, "tile") == (16, 16)  # two steps: a one-pixel bottom cannot be normalised
    aniso = ShapeContract.unet(3, 2, "same", pool_sizes=[(1, 2, 2), 2])
    assert aniso.round((5, 30, 30), "patch") == (6, 32, 32)


def test_round_names_the_setting_in_errors() -> None:
    c = ShapeContract.unet(2, 3)
    with pytest.raises(ConfigError, match=r"data\.patch_size: 3 sizes given for a 2D network"):
        c.round((8, 8, 8), "patch")
    with pytest.raises(ConfigError, match="tile: sizes must be positive"):
        c.round((0, 8), "tile")
    with pytest.raises(ValueError, match="purpose"):
        c.round(8, "training")


def test_every_size_choice_goes_through_the_rule() -> None:
    for name in ("unet_paper", "unet2d_small"):
        net = create_model(name, width=2)
        c = net.contract
        assert legal_patch(net, 570) == list(c.round(570, "patch"))
        assert choose_tile(net, 570, (1000, 300)) == c.round(570, "tile", image=(1000, 300))
        assert choose_tile(c, None, (1000, 1000)) == c.round(512, "tile", image=(1000, 1000))
        tile = prediction_tile(net, [572, 572])
        assert tuple(tile) == c.round([max(572, 512 + 2 * m) for m in c.margin()], "tile")
    aniso = UNet(3, 1, 2, depth=2, width=2, padding="valid", pool_sizes=[(1, 2, 2), 2])
    assert legal_patch(aniso, (5, 50, 50)) == list(aniso.contract.round((5, 50, 50), "patch"))
    with pytest.raises(ConfigError, match=r"data\.patch_size"):
        legal_patch(aniso, (8, 8))


def test_no_other_rounding() -> None:
    """The callers that pick sizes call the contract's round and keep no rule of their own."""
    for rel, fn in (
        ("train/loop.py", "legal_patch"), ("train/loop.py", "prediction_tile"), ("infer/tiling.py", "choose_tile"),
        ("infer/export.py", "onnx_bytes"), ("data/sampling.py", "for_model"),
    ):  # fmt: skip
        tree = ast.parse((SRC / rel).read_text())
        node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == fn)
        calls = {c.func.attr for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)}
        assert "round" in calls and "legal_size" not in calls, (rel, fn)


# ---- contracts without networks ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_models())
def test_contract_from_args_equals_the_models(name: str) -> None:
    preset = get_preset(name)
    with torch.device("meta"):
        net = create_model(name)
    assert preset.cls.contract_from_args(**preset.args) == net.contract
    assert shape_contract(describe(net)) == net.contract
    assert shape_contract(describe(net).model_dump(by_alias=True)) == net.contract


def test_contract_from_args_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a torch module was built")

    monkeypatch.setattr(nn.Module, "__init__", refuse)
    for name in list_models():
        preset = get_preset(name)
        assert preset.cls.contract_from_args(**preset.args).spatial_dims == preset.args["spatial_dims"]


def test_shape_contract_bad_descriptions() -> None:
    with pytest.raises(ModelFileError, match="network class 'Nope'"):
        shape_contract({"architecture": {"class": "Nope", "args": {}}})
    with pytest.raises(ModelFileError, match="architecture"):
        shape_contract({})
    with pytest.raises(ModelFileError, match=r"m\.onnx: .*depht"):
        shape_contract({"architecture": {"class": "UNet", "args": {"spatial_dims": 2, "in_channels": 1,
                        "num_classes": 2, "depht": 3}}}, "m.onnx")  # fmt: skip


def test_unetr_and_multires_map_onto_the_contract() -> None:
    unetr = create_model("unetr2d_small", hidden_size=16, mlp_dim=16, num_heads=2, width=2, patch_size=8)
    assert unetr.contract == ShapeContract.unet(2, 3, "same", step_origin="the patch size")
    assert unetr.contract.steps() == (8, 8) and unetr.contract.margin() == (0, 0)
    multires = create_model("multires_unet2d_small", width=2)
    assert multires.contract == ShapeContract.unet(2, 3, "same") and multires.legal_size(20, "ceil") == 24


def test_axis_contract_rejects_inconsistent_stages() -> None:
    with pytest.raises(ValueError, match="encoder"):
        AxisContract((2, 2), (4, 4), (4, 4))
    with pytest.raises(ValueError, match="even"):
        AxisContract((2,), (1, 0), (0,))


def test_shapes_module_needs_no_torch() -> None:
    tree = ast.parse((SRC / "shapes.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m for m in imported if m.startswith("unetkit")} == {"unetkit.errors"}
    assert not any(m.split(".")[0] in ("torch", "numpy") for m in imported)
    sampling = ast.parse((SRC / "data" / "sampling.py").read_text())
    assert not any(
        (n.module or "").startswith("unetkit.models") for n in ast.walk(sampling) if isinstance(n, ast.ImportFrom)
    )


# ---- an exported ONNX file predicts from its contract alone --------------------------------------------------
def test_onnx_predicts_from_its_contract_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from unetkit.infer.export import export_onnx
    from unetkit.infer.loading import load_predictor
    from unetkit.infer.predictor import DescribedNetwork
    from unetkit.infer.select import backend_timings
    from unetkit.modelfile import load_model, save_model

    torch.manual_seed(0)
    net = UNet(2, 1, 3, depth=2, width=2, padding="valid", pool_sizes=[(1, 2), 2]).eval()
    path = save_model(tmp_path / "m.safetensors", net, tile_size=[60, 60])
    onnx_path = export_onnx(load_model(path), tmp_path / "m.onnx")
    image = np.random.default_rng(0).random((1, 37, 53)).astype(np.float32)
    expected = Predictor(load_model(path), backend="torch").predict_proba(image)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a torch module was built")

    backend_timings()  # the machine's one-off backend measurement builds its probe network: done first
    monkeypatch.setattr(nn.Module, "__init__", refuse)
    predictor = load_predictor(str(onnx_path))
    assert isinstance(predictor.model, DescribedNetwork) and predictor.contract == net.contract
    plan = predictor.plan(image.shape[1:])
    assert plan.tile_in == net.contract.round((60, 60), "tile")
    np.testing.assert_allclose(predictor.predict_proba(image), expected, atol=1e-5)
