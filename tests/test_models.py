from __future__ import annotations

import pytest
import torch

from unetkit import InputShapeError, UNet, create_model, list_models
from unetkit.errors import UnetkitError


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_shapes(spatial_dims: int, depth: int, padding: str) -> None:
    net = UNet(spatial_dims, in_channels=2, num_classes=3, depth=depth, width=2, padding=padding)
    size = net.min_input_size() + (2**depth if spatial_dims == 2 else 0)
    assert net.is_legal_size(size)
    x = torch.randn(2, 2, *(size,) * spatial_dims)
    out_spatial = net.output_shape(x.shape[2:])
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, *out_spatial)
    assert net.input_shape_for(out_spatial) == tuple(x.shape[2:])
    if padding == "same":
        assert out_spatial == tuple(x.shape[2:])
    else:
        assert all(o == size - 2 * net.margin() for o in out_spatial)


def test_paper_preset() -> None:
    net = create_model("unet_paper")
    assert net.count_parameters() == 31_030_658
    assert net.output_shape((572, 572)) == (388, 388)
    assert net.input_shape_for((388, 388)) == (572, 572)
    assert net.margin() == 92
    # the paper's widths 64..1024
    assert net.stem[0].out_channels == 64 and net.down[-1][1][0].out_channels == 1024


def test_paper_preset_forward_small() -> None:
    net = create_model("unet_paper", width=4)
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 188, 188)).shape == (1, 2, 4, 4)


@pytest.mark.parametrize("name", list_models())
def test_presets_overridable(name: str) -> None:
    net = create_model(name, in_channels=3, num_classes=5, width=2)
    assert (net.in_channels, net.num_classes) == (3, 5)
    assert net.preset == name


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("norm", [None, "batch", "instance", "group"])
def test_gradients_reach_every_parameter(spatial_dims: int, norm: str | None) -> None:
    net = UNet(spatial_dims, 1, 2, depth=2, width=4, norm=norm, dropout=0.1, upsample="transpose")
    x = torch.randn(2, 1, *(16,) * spatial_dims)
    net(x).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("upsample", ["nearest", "linear"])
@pytest.mark.parametrize("activation", ["leaky_relu", "gelu", "prelu"])
def test_options(upsample: str, activation: str) -> None:
    net = UNet(2, 1, 2, depth=2, width=4, upsample=upsample, activation=activation, padding="valid")
    s = net.input_shape_for((8, 8))
    assert net(torch.randn(1, 1, *s)).shape == (1, 2, 8, 8)


def test_dropout_at_end_of_contracting_path() -> None:
    net = UNet(2, 1, 2, depth=3, width=2, dropout=0.5)
    drops = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Dropout2d)]
    assert drops == ["drop_deep", "drop_bridge"]
    net.eval()
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(net(x), net(x))


def test_illegal_size_names_nearest() -> None:
    net = create_model("unet_paper", width=2)
    with pytest.raises(InputShapeError, match=r"570 -> use 556 or 572"):
        net(torch.zeros(1, 1, 570, 572))
    small = create_model("unet2d_small", width=2)
    with pytest.raises(InputShapeError, match=r"100 -> use 96 or 104"):
        small(torch.zeros(1, 1, 100, 96))
    with pytest.raises(InputShapeError, match=r"smallest legal size"):
        net.check_input_shape((100, 188))
    with pytest.raises(InputShapeError, match="expected a tensor of shape"):
        small(torch.zeros(1, 3, 96, 96))
    with pytest.raises(InputShapeError, match="nearest producible"):
        net.input_shape_for((387, 388))


def test_legal_size_rounding() -> None:
    valid = create_model("unet_paper", width=2)
    assert valid.legal_size(572) == 572
    assert valid.legal_size(565) == 572 and valid.legal_size(563) == 556
    assert valid.legal_size(10) == 188 and valid.legal_size(10, "floor") == 188
    same = create_model("unet2d_small", width=2)
    assert same.legal_size(100, "ceil") == 104 and same.legal_size(100, "floor") == 96


def test_bad_arguments() -> None:
    with pytest.raises(UnetkitError, match="unknown model"):
        create_model("unet_nope")
    with pytest.raises(UnetkitError, match="unknown argument"):
        create_model("unet2d_small", widht=3)
    with pytest.raises(UnetkitError, match="padding"):
        create_model("unet2d_small", padding="full")
    with pytest.raises(UnetkitError, match="norm"):
        create_model("unet2d_small", norm="layer")
