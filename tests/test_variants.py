"""U-Net variants: Residual / Attention U-Net (UNet options), MultiResUNet, UNETR; every preset's contract."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from unetkit import InputShapeError, UNet, create_model, list_models, load_model, save_model
from unetkit.cli import app
from unetkit.errors import UnetkitError
from unetkit.models import MODEL_CLASSES, UNETR, MultiResUNet, get_preset
from unetkit.models.attention import AttentionGate
from unetkit.models.blocks import ResidualBlock
from unetkit.models.multires import MultiResBlock, ResPath

VARIANTS = [
    "resunet2d_small", "resunet3d_small", "attention_unet2d_small", "attention_unet3d_small",
    "multires_unet2d_small", "unetr2d_small", "unetr3d_small", "unetr3d_paper",
]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny convolutions gain nothing from threads, and on a loaded 2-core machine OpenMP's spinning threads make
    # them ~100x slower; restore the setting for the other test modules.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(name: str, **extra: Any) -> nn.Module:
    """The preset at a tiny width (and a tiny transformer for UNETR), 2 input channels, 3 classes."""
    small: dict[str, Any] = (
        dict(hidden_size=16, mlp_dim=32, num_layers=4, num_heads=2, width=2)
        if get_preset(name).cls is UNETR
        else dict(depth=2, width=2)
    )
    return create_model(name, in_channels=2, num_classes=3, **{**small, **extra})


def tiny_input(net: Any, batch: int = 2) -> torch.Tensor:
    """A small legal, non-cubic input: the legal sizes at or above (36, 20) in 2D, (20, 18, 16) in 3D."""
    wanted = (36, 20) if net.spatial_dims == 2 else (20, 18, 16)
    return torch.randn(batch, net.in_channels, *(net.legal_size(n, "ceil") for n in wanted))


def test_variant_presets_registered_and_listed() -> None:
    assert set(VARIANTS) <= set(list_models())
    assert {"MultiResUNet", "UNETR", "UNet"} <= set(MODEL_CLASSES)
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(app, ["models", "--json"]).output)}
    for name in VARIANTS:
        if name.endswith("_small"):  # CPU-sized, and the listing counts what create_model builds
            assert rows[name]["parameters"] == create_model(name).count_parameters() < 2_000_000, name
    assert rows["unetr3d_paper"]["parameters"] == 93_185_858
    assert rows["unet_paper"]["parameters"] == 31_030_658
    assert rows["resunet3d_small"]["spatial_dims"] == 3 and rows["unetr2d_small"]["cls"] == "UNETR"


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_every_preset(name: str) -> None:
    net = tiny(name)
    x = tiny_input(net)
    y = net(x)
    assert y.shape == (2, 3, *net.output_shape(x.shape[2:]))
    y.square().mean().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", list_models())
def test_save_load_bit_identical(tmp_path: Path, name: str) -> None:
    net = tiny(name)
    x = tiny_input(net, batch=1)
    net.train()
    net(tiny_input(net))  # batch-norm statistics must travel too
    net.eval()
    path = save_model(tmp_path / "m.safetensors", net, tile_size=list(x.shape[2:]))
    loaded = load_model(path)
    # every constructor argument is recorded (none written by hand), and comes back unchanged
    assert set(net.hparams) == set(inspect.signature(type(net)).parameters)
    assert type(loaded) is type(net) and loaded.hparams == net.hparams and loaded.contract == net.contract
    assert loaded.description.architecture.preset == name
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))


@pytest.mark.parametrize("name", VARIANTS)
def test_illegal_size_names_nearest(name: str) -> None:
    net = tiny(name)
    x = tiny_input(net, batch=1)
    bad = list(x.shape[2:])
    bad[0] += 1
    lo, hi = net.legal_size(bad[0], "floor"), net.legal_size(bad[0], "ceil")
    with pytest.raises(InputShapeError, match=rf"axis 0: {bad[0]} -> use {lo} or {hi}"):
        net(torch.zeros(1, 2, *bad))
    if isinstance(net, UNETR):
        with pytest.raises(InputShapeError, match=r"multiple of 16 \(the patch size\)"):
            net.check_input_shape(bad)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(("block", "attention"), [("residual", False), ("basic", True), ("residual", True)])
def test_residual_and_attention_keep_the_valid_contract(spatial_dims: int, block: str, attention: bool) -> None:
    net = UNet(spatial_dims, 1, 2, depth=2, width=2, padding="valid", block=block, attention=attention)
    plain = UNet(spatial_dims, 1, 2, depth=2, width=2, padding="valid")
    out = (12, 8) if spatial_dims == 2 else (4, 8, 4)
    size = net.input_shape_for(out)
    assert size == plain.input_shape_for(out) and net.margin() == plain.margin() == 20
    with torch.no_grad():
        assert net(torch.randn(1, 1, *size)).shape == (1, 2, *out)
    assert net.output_shape(size) == out


def test_blocks_are_options_not_copies() -> None:
    res = UNet(2, 1, 2, depth=2, width=4, block="residual", attention=True)
    assert isinstance(res.stem, ResidualBlock) and all(isinstance(u.gate, AttentionGate) for u in res.up)
    assert not any(isinstance(m, AttentionGate | ResidualBlock) for m in UNet(2, 1, 2, depth=2, width=4).modules())
    with pytest.raises(UnetkitError, match="block must be one of"):
        create_model("unet2d_small", block="dense")


def test_residual_block_shortcut() -> None:
    assert isinstance(ResidualBlock(2, 4, 4).shortcut, nn.Identity)
    proj = ResidualBlock(3, 2, 4).shortcut
    assert isinstance(proj, nn.Sequential) and proj[0].kernel_size == (1, 1, 1)
    # with the convolution branch zeroed the block is act(shortcut(x)), centre-cropped for valid padding
    block = ResidualBlock(2, 3, 3, padding="valid")
    for conv in (block.conv1, block.conv2):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    x = torch.randn(1, 3, 10, 10)
    assert torch.equal(block(x), torch.relu(x[:, :, 2:8, 2:8]))


def test_attention_gate_coefficients() -> None:
    gate = AttentionGate(2, skip_ch=4, gate_ch=6)
    x, g = torch.randn(2, 4, 12, 8), torch.randn(2, 6, 6, 4)
    alpha = gate.coefficients(x, g)
    assert alpha.shape == (2, 1, 12, 8) and alpha.min() >= 0 and alpha.max() <= 1
    nn.init.zeros_(gate.psi.weight)
    nn.init.zeros_(gate.psi.bias)
    assert torch.allclose(gate(x, g), 0.5 * x)


def test_same_only_variants_refuse_valid() -> None:
    for name in ("multires_unet2d_small", "unetr2d_small"):
        with pytest.raises(UnetkitError, match="supports only padding='same'"):
            create_model(name, padding="valid")


def test_multires_structure_and_paper_count() -> None:
    assert MultiResBlock(2, 3, u=32).out_channels == 8 + 17 + 26
    assert [len(p) for p in MultiResUNet(2, 1, 1, depth=4, width=2).res_paths] == [4, 3, 2, 1]
    assert len(ResPath(2, 3, 4, length=2)) == 2
    with torch.device("meta"):
        net = MultiResUNet(2, in_channels=3, num_classes=1, depth=4, width=32)
    # The paper reports 7,262,750 for its Keras model: convs before a norm have no bias, those norms no scale
    # (gamma), every batch norm keeps 2 running statistics, and its 1x1 head is conv + norm (3 more than bias).
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    conv_bns = [list(s)[1] for s in net.modules() if type(s) is nn.Sequential and isinstance(s[0], nn.Conv2d)]
    gammas = sum(bn.weight.numel() for bn in conv_bns)
    keras = net.count_parameters() + sum(2 * b.num_features for b in bns) - gammas + 2
    assert keras == 7_262_750
    assert MultiResUNet(3, 1, 2, depth=2, width=2)(torch.randn(1, 1, 8, 12, 4)).shape == (1, 2, 8, 12, 4)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_unetr_two_legal_sizes(spatial_dims: int) -> None:
    ref = (32,) * spatial_dims
    net = UNETR(spatial_dims, 1, 2, img_size=ref, patch_size=8, hidden_size=16, mlp_dim=16, num_layers=3,
                num_heads=2, width=2).eval()  # fmt: skip
    other = (24, 40) if spatial_dims == 2 else (16, 24, 40)
    with torch.no_grad():
        for size in (ref, other):
            assert net(torch.randn(1, 1, *size)).shape == (1, 2, *size)
    embed = net.vit.embed
    assert embed.position_for((4,) * spatial_dims) is embed.position
    grid = tuple(s // 8 for s in other)
    assert embed.position_for(grid).shape == (1, torch.Size(grid).numel(), 16)
    with torch.no_grad():  # a constant embedding stays constant under linear resampling
        embed.position.fill_(0.25)
    assert torch.allclose(embed.position_for(grid), torch.full_like(embed.position_for(grid), 0.25))
    assert net.legal_size(30) == 32 and net.min_input_size() == 8 and net.skip_layers == [1, 2]


def test_unetr_paper_sizes() -> None:
    with torch.device("meta"):
        net = create_model("unetr3d_paper")
    assert isinstance(net, UNETR) and net.depth == 4 and net.skip_layers == [3, 6, 9]
    h, m, n_tokens = 768, 3072, (96 // 16) ** 3
    layer = 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * m + m) + (m * h + h)
    vit = (16**3 * h + h) + n_tokens * h + 12 * layer + 2 * h
    assert sum(p.numel() for p in net.vit.parameters()) == vit == 88_368_384
    assert net.count_parameters() == 93_185_858
    assert net.legal_size(100) == 96 and net.input_shape_for((96, 96, 96)) == (96, 96, 96)


def test_unetr_bad_arguments() -> None:
    with pytest.raises(UnetkitError, match="power of two"):
        create_model("unetr2d_small", patch_size=12)
    with pytest.raises(UnetkitError, match="multiple of patch_size"):
        create_model("unetr2d_small", img_size=40)
    with pytest.raises(UnetkitError, match="num_layers"):
        create_model("unetr2d_small", num_layers=3)
    with pytest.raises(UnetkitError, match="divisible by num_heads"):
        create_model("unetr2d_small", num_heads=3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["resunet2d_small", "attention_unet2d_small", "multires_unet2d_small", "unetr2d_small"]
)
def test_variants_learn_disks(name: str) -> None:
    """Each 2D variant learns to segment noisy bright disks (Dice > 0.9 after 150 Adam steps; ~5 s each)."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        centres = torch.randint(8, 24, (n, 2), generator=gen)
        radii = torch.randint(3, 7, (n,), generator=gen)
        masks = (
            (yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2 <= radii[:, None, None] ** 2
        ).long()
        return (masks.float() + 0.3 * torch.randn(n, 32, 32, generator=gen))[:, None], masks

    extra = dict(img_size=32, hidden_size=32, mlp_dim=64) if name.startswith("unetr") else {}
    net = create_model(name, width=4, **extra)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(150):
        x, y = batch(8)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = batch(16)
    with torch.no_grad():
        pred = net(x).argmax(1)
    dice = 2 * ((pred == 1) & (y == 1)).sum() / ((pred == 1).sum() + (y == 1).sum())
    assert dice > 0.9, f"{name}: Dice {dice:.3f}"
