from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unetkit import InputShapeError, UNet, create_model, list_models, load_model, save_model
from unetkit.errors import UnetkitError
from unetkit.modelfile import read_description
from unetkit.models import MODEL_CLASSES, UNETR, MultiResUNet
from unetkit.shapes import ShapeContract


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


class GainUNet(UNet):
    """A variant with one more constructor argument and no hand-written record of it."""

    def __init__(
        self, spatial_dims: int, in_channels: int, num_classes: int, depth: int = 2, padding: str = "valid",
        gain: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__(spatial_dims, in_channels, num_classes, depth=depth, width=2, padding=padding)
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.gain


def test_a_new_argument_reaches_the_model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODEL_CLASSES, "GainUNet", GainUNet)
    net = GainUNet(2, 1, 2, gain=3.0).eval()
    assert net.hparams == dict(spatial_dims=2, in_channels=1, num_classes=2, depth=2, padding="valid", gain=3.0)
    assert net.contract == UNet(2, 1, 2, depth=2, width=2, padding="valid").contract
    assert GainUNet.contract_from_args(**net.hparams) == net.contract
    path = save_model(tmp_path / "g.safetensors", net)
    assert read_description(path).architecture.args["gain"] == 3.0
    loaded = load_model(path)
    assert isinstance(loaded, GainUNet) and loaded.gain == 3.0
    x = torch.randn(1, 1, *net.input_shape_for((4, 4)))
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_a_subclass_that_remaps_arguments_must_say_its_contract() -> None:
    class Shallow(UNet):
        def __init__(self, spatial_dims: int, in_channels: int, num_classes: int) -> None:
            super().__init__(spatial_dims, in_channels, num_classes, depth=1, width=1)

    with pytest.raises(TypeError, match="Shallow: its arguments give another shape contract"):
        Shallow(2, 1, 2)

    class Fixed(Shallow):
        @classmethod
        def _build_contract(cls, args: dict) -> ShapeContract:  # type: ignore[override]
            return ShapeContract.unet(args["spatial_dims"], 1)

    assert Fixed(2, 1, 2).contract.steps() == (2, 2) == Fixed.contract_from_args(**Fixed(2, 1, 2).hparams).steps()


def test_hparams_record_the_given_values() -> None:
    net = UNet(3, 1, 2, depth=2, width=2, pool_sizes=[(1, 2, 2), 2], kernel_sizes=[(1, 3, 3), 3, 3], norm="none")
    assert net.hparams["pool_sizes"] == [[1, 2, 2], 2] and net.hparams["kernel_sizes"] == [[1, 3, 3], 3, 3]
    assert net.hparams["norm"] == "none" and net.hparams["max_width"] is None
    assert UNet(**net.hparams).contract == net.contract


@pytest.mark.parametrize("cls", [UNet, MultiResUNet, UNETR])
def test_one_shared_argument_check(cls: type) -> None:
    for bad, match in (
        (dict(spatial_dims=4), "spatial_dims must be 2 or 3, got 4"),
        (dict(in_channels=0), "in_channels must be an integer >= 1, got 0"),
        (dict(num_classes=1.5), "num_classes must be an integer >= 1"),
        (dict(width=True), "width must be an integer >= 1"),
        (dict(activation="tanh"), "activation must be one of"),
    ):
        with pytest.raises(ValueError, match=match):
            cls(**{"spatial_dims": 2, "in_channels": 1, "num_classes": 2, **bad})
        with pytest.raises(ValueError, match=match):
            cls.contract_from_args(**{"spatial_dims": 2, "in_channels": 1, "num_classes": 2, **bad})
    with pytest.raises(TypeError, match=f"{cls.__name__}: .*unexpected keyword"):
        cls(2, 1, 2, nope=1)


def test_dropout_range() -> None:
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
            UNet(2, 1, 2, depth=1, width=1, dropout=p)


def test_init_options() -> None:
    """``init="he"`` (the paper's, the default) draws He-normal weights and zero biases; ``"pytorch"`` keeps each
    layer's own uniform draw (std 1/sqrt(3 fan_in), 2.4x smaller); both are recorded; others are refused."""
    torch.manual_seed(0)
    he = UNet(2, 1, 1, depth=2, width=32)
    torch.manual_seed(0)
    pt = UNet(2, 1, 1, depth=2, width=32, init="pytorch")
    conv_he, conv_pt = he.up[-1].conv[2], pt.up[-1].conv[2]  # a 32 -> 32 3x3 convolution, fan_in 288
    assert conv_he.weight.std().item() == pytest.approx((2 / 288) ** 0.5, rel=0.1)
    assert conv_pt.weight.abs().max().item() <= 1 / 288**0.5 and conv_pt.weight.std().item() == pytest.approx(
        1 / (3 * 288) ** 0.5, rel=0.1
    )
    assert float(conv_he.bias.abs().max()) == 0.0 and float(conv_pt.bias.abs().max()) > 0.0
    assert he.hparams["init"] == "he" and pt.hparams["init"] == "pytorch"
    with pytest.raises(UnetkitError, match="init must be one of"):
        create_model("unet2d", in_channels=1, num_classes=1, init="xavier")


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_residual_input(padding: str) -> None:
    """``residual_input=True`` adds the input (its centre, for valid nets) to the head's output: with a zero head
    the network is the identity on what it outputs; the option is recorded, and a channel mismatch is refused."""
    torch.manual_seed(0)
    net = UNet(2, 2, 2, depth=2, width=4, padding=padding, residual_input=True)
    plain = UNet(2, 2, 2, depth=2, width=4, padding=padding)
    plain.load_state_dict(net.state_dict())
    x = torch.randn(1, 2, *net.input_shape_for((8, 8)))
    out = net(x)
    crop = [(s - o) // 2 for s, o in zip(x.shape[2:], out.shape[2:], strict=True)]
    centre = x[:, :, crop[0] : crop[0] + out.shape[2], crop[1] : crop[1] + out.shape[3]]
    torch.testing.assert_close(out - plain(x), centre)
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.zeros_(net.head.bias)
    torch.testing.assert_close(net(x), centre)
    assert net.hparams["residual_input"] is True and plain.hparams["residual_input"] is False
    with pytest.raises(UnetkitError, match=r"in_channels \(1\) must equal num_classes \(2\)"):
        create_model("unet2d", in_channels=1, num_classes=2, residual_input=True)
