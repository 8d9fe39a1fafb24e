from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from unetkit.augment import AugmentConfig, Augmenter
from unetkit.augment.spatial import affine_grid, displacement_field, spatial_matrix, upsample_cubic
from unetkit.errors import ConfigError, InputShapeError

SPATIAL = AugmentConfig.SPATIAL_NAMES
INTENSITY = AugmentConfig.INTENSITY_NAMES
SHAPES = {2: (40, 40), 3: (12, 20, 20)}


def only(**parts: dict[str, object]) -> AugmentConfig:
    """Every transform off except the ones given (with their settings)."""
    data: dict[str, object] = {name: {"p": 0.0} for name in (*SPATIAL, *INTENSITY)}
    data.update(parts)
    return AugmentConfig.model_validate(data)


ALL_SPATIAL = {name: {"p": 1.0} for name in SPATIAL}


def blobs(batch: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A label map with a few smooth blobs of classes 1 and 2."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand((batch, 1, *[max(2, s // 6) for s in shape]), generator=gen)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    smooth = F.interpolate(noise, size=shape, mode=mode, align_corners=False)[:, 0]
    return (smooth > 0.45).long() + (smooth > 0.7).long()


# ---- configuration ------------------------------------------------------------------------------------------
def test_config_none_and_defaults() -> None:
    none = AugmentConfig.none()
    assert all(getattr(none, name).p == 0.0 for name in (*SPATIAL, *INTENSITY))
    default = AugmentConfig()
    assert default.rotate.range_for(2) == (-180.0, 180.0) and default.rotate.range_for(3) == (-30.0, 30.0)
    assert default.elastic.grid == 3 and default.elastic.sigma == 10.0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"flip": {"p": 1.5}}, "flip.p"),
        ({"scale": {"range": [1.4, 0.7]}}, "scale.range"),
        ({"elastic": {"sigmaa": 3}}, "elastic.sigmaa"),
        ({"rotat": {"p": 1}}, "rotat"),
        ({"interpolation": "cubic"}, "interpolation"),
    ],
)
def test_config_errors_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        AugmentConfig.from_dict(data)


def test_config_yaml_round_trip(tmp_path: Path) -> None:
    cfg = AugmentConfig.from_dict({"elastic": {"p": 1.0, "sigma": 4}, "mask_interpolation": "label_linear"})
    path = tmp_path / "aug.yaml"
    path.write_text(cfg.to_yaml())
    assert AugmentConfig.from_yaml(path) == cfg
    path.write_text("augment:\n  noise: {p: 0.5}\n")
    assert AugmentConfig.from_yaml(path).noise.p == 0.5
    path.write_text("- just a list\n")
    with pytest.raises(ConfigError, match=r"aug\.yaml"):
        AugmentConfig.from_yaml(path)


def test_augmenter_rejects_bad_settings_and_shapes() -> None:
    with pytest.raises(ConfigError, match="bicubic"):
        Augmenter(AugmentConfig(interpolation="bicubic"), spatial_dims=3)
    with pytest.raises(ConfigError, match=r"rot90\.axes"):
        Augmenter(AugmentConfig.from_dict({"rot90": {"axes": [0, 2]}}), spatial_dims=2)
    aug = Augmenter(AugmentConfig(), spatial_dims=2)
    with pytest.raises(InputShapeError, match="spatial_dims=3"):
        aug(torch.rand(1, 1, 4, 8, 8))
    with pytest.raises(InputShapeError, match="mask"):
        aug(torch.rand(2, 1, 8, 8), torch.zeros(2, 8, 9, dtype=torch.long))
    params = aug.sample_params(2, (8, 8))
    with pytest.raises(InputShapeError, match="sample_params"):
        aug.apply(params, torch.rand(3, 1, 8, 8))


# ---- identity and replay ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
def test_none_changes_nothing(dims: int) -> None:
    shape = SHAPES[dims]
    image, mask, weight = torch.randn(3, 2, *shape), blobs(3, shape), torch.rand(3, *shape)
    out = Augmenter(AugmentConfig.none(), dims)(image, mask, weight, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.image, image) and torch.equal(out.mask, mask) and torch.equal(out.weight, weight)


@pytest.mark.parametrize("dims", [2, 3])
def test_replay_is_exact(dims: int) -> None:
    shape = SHAPES[dims]
    cfg = AugmentConfig.model_validate({name: {"p": 0.7} for name in (*SPATIAL, *INTENSITY)})
    aug = Augmenter(cfg, dims)
    image, mask, weight = torch.randn(4, 1, *shape), blobs(4, shape), torch.rand(4, *shape)
    a = aug(image, mask, weight, generator=torch.Generator().manual_seed(7))
    b = aug(image, mask, weight, generator=torch.Generator().manual_seed(7))
    params = aug.sample_params(4, shape, torch.Generator().manual_seed(7))
    c = aug.apply(params, image, mask, weight)
    for x, y, z in ((a.image, b.image, c.image), (a.mask, b.mask, c.mask), (a.weight, b.weight, c.weight)):
        assert torch.equal(x, y) and torch.equal(x, z)
    d = aug(image, mask, weight, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(a.image, d.image)


def test_inputs_are_not_modified() -> None:
    image, mask = torch.randn(4, 1, 24, 24), blobs(4, (24, 24))
    before = image.clone(), mask.clone()
    cfg = AugmentConfig.model_validate({name: {"p": 1.0} for name in (*SPATIAL, *INTENSITY)})
    Augmenter(cfg, 2)(image, mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(image, before[0]) and torch.equal(mask, before[1])


# ---- spatial ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mask_mode", ["nearest", "label_linear"])
def test_masks_stay_aligned(dims: int, mask_mode: str) -> None:
    """An image equal to its own mask, augmented: the thresholded image equals the augmented mask."""
    shape = (48, 48) if dims == 2 else (20, 28, 28)
    mask = (blobs(4, shape, seed=dims) > 0).long()  # binary, so thresholding the image at 0.5 is the reference
    cfg = only(**ALL_SPATIAL, mask_interpolation=mask_mode)
    out = Augmenter(cfg, dims)(mask[:, None].float(), mask, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(out.mask, mask)  # the transform did something
    thresholded = (out.image[:, 0] > 0.5).long()
    disagree = (thresholded != out.mask).float().mean().item()
    shifted = (thresholded.roll(1, -1) != out.mask).float().mean().item()  # what a 1-pixel misalignment costs
    if mask_mode == "label_linear":
        assert disagree < 1e-3
    else:  # nearest differs from the linear image only on some boundary pixels
        assert disagree < 0.2 * shifted


@pytest.mark.parametrize("dims", [2, 3])
def test_fast_path_equals_grid_path(dims: int) -> None:
    shape = (16, 16) if dims == 2 else (6, 16, 16)
    image, mask, weight = torch.randn(8, 2, *shape), blobs(8, shape), torch.rand(8, *shape)
    cfg = only(flip={"p": 0.5}, rot90={"p": 0.8})
    fast = Augmenter(cfg, dims)(image, mask, weight, generator=torch.Generator().manual_seed(3))
    slow = Augmenter(cfg, dims, fast_path=False)(image, mask, weight, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(fast.image, slow.image, atol=1e-5) and torch.equal(fast.mask, slow.mask)
    assert torch.allclose(fast.weight, slow.weight, atol=1e-5)


def test_flip_all_axes_is_exact_flip() -> None:
    image = torch.randn(2, 1, 6, 10, 12)
    out = Augmenter(only(flip={"p": 1.0}), 3)(image, generator=torch.Generator())
    assert torch.equal(out.image, torch.flip(image, (2, 3, 4)))


def test_quarter_turn_of_non_square_plane_uses_the_grid() -> None:
    image = torch.randn(4, 1, 12, 20)
    fast = Augmenter(only(rot90={"p": 1.0}), 2)(image, generator=torch.Generator().manual_seed(0))
    slow = Augmenter(only(rot90={"p": 1.0}), 2, fast_path=False)(image, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(fast.image, slow.image, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_sampled_positions_match_the_composed_transform(dims: int) -> None:
    """Resample images of the pixel coordinates: each output pixel must read from M (p + d(p))."""
    shape = (64, 64) if dims == 2 else (32, 32, 32)
    cfg = only(
        flip={"p": 0.5}, rot90={"p": 0.5}, rotate={"p": 1.0, "degrees": [-20, 20]}, scale={"p": 1.0},
        elastic={"p": 1.0, "sigma": 2.0},
    )  # fmt: skip
    centred = torch.stack(torch.meshgrid(*[torch.arange(s) - (s - 1) / 2 for s in shape], indexing="ij"))
    image = centred[None].repeat(3, 1, *[1] * dims)
    aug = Augmenter(cfg, dims)
    params = aug.sample_params(3, shape, torch.Generator().manual_seed(2))
    out = aug.apply(params, image)
    field = displacement_field(params.spatial, shape)
    expected = torch.einsum("bij,bj...->bi...", spatial_matrix(params.spatial), centred[None] + field)
    half = torch.tensor([(s - 1) / 2 - 1 for s in shape]).view(1, dims, *[1] * dims)
    inside = (expected.abs() < half).all(1, keepdim=True).expand_as(expected)  # away from mirrored borders
    assert inside.float().mean() > 0.3
    assert torch.allclose(out.image[inside], expected[inside], atol=2e-3)


def test_zoom_enlarges_content() -> None:
    yy, xx = torch.meshgrid(torch.arange(64) - 31.5, torch.arange(64) - 31.5, indexing="ij")
    disc = ((yy**2 + xx**2) < 10**2).long()[None]
    out = Augmenter(only(scale={"p": 1.0, "range": [1.5, 1.5]}), 2)(disc[:, None].float(), disc)
    assert out.mask.sum().item() == pytest.approx(disc.sum().item() * 1.5**2, rel=0.05)


def test_elastic_displacements_have_the_configured_std() -> None:
    sigma = 10.0
    aug = Augmenter(only(elastic={"p": 1.0, "grid": 3, "sigma": sigma}), 2)
    params = aug.sample_params(2000, (65, 65), torch.Generator().manual_seed(0))
    coarse = params.spatial.displacement
    assert coarse.shape == (2000, 2, 3, 3)
    assert coarse.std().item() == pytest.approx(sigma, rel=0.05)
    assert coarse.mean().abs().item() < 0.3
    dense = displacement_field(params.spatial, (65, 65))  # control points sit on pixels 0, 32, 64
    at_points = dense[:, :, ::32, ::32]
    assert torch.allclose(at_points, coarse, atol=1e-3)
    assert at_points.std().item() == pytest.approx(sigma, rel=0.1)


def test_elastic_p_zero_draws_no_field_and_3d_has_cubic_grid() -> None:
    aug = Augmenter(only(elastic={"p": 1.0, "grid": 4}), 3)
    params = aug.sample_params(2, (8, 8, 8), torch.Generator().manual_seed(0))
    assert params.spatial.displacement.shape == (2, 3, 4, 4, 4)
    assert not Augmenter(AugmentConfig.none(), 3).sample_params(2, (8, 8, 8)).spatial.displacement.any()


def test_cubic_upsampling_matches_bicubic_interpolate() -> None:
    coarse = torch.randn(2, 2, 3, 4)
    ours = upsample_cubic(coarse.movedim(1, -1), (17, 30)).movedim(-1, 1)
    ref = F.interpolate(coarse, size=(17, 30), mode="bicubic", align_corners=True)
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(7, 12), (5, 9, 6)])
def test_affine_grid_matches_torch(shape: tuple[int, ...]) -> None:
    n = len(shape)
    theta = torch.randn(3, n, n)
    torch_theta = torch.cat([theta.flip(1).flip(2), torch.zeros(3, n, 1)], dim=2)  # grid order + translation
    ref = F.affine_grid(torch_theta, [3, 1, *shape], align_corners=False)
    assert torch.allclose(affine_grid(theta, shape), ref, atol=1e-6)


def test_label_linear_keeps_only_existing_labels_and_bicubic_runs() -> None:
    mask = blobs(2, (32, 32))
    mask[:, :4] = 255  # an ignore value must survive as itself
    cfg = only(**ALL_SPATIAL, mask_interpolation="label_linear", interpolation="bicubic")
    out = Augmenter(cfg, 2)(torch.rand(2, 1, 32, 32), mask, generator=torch.Generator().manual_seed(0))
    assert set(out.mask.unique().tolist()) <= {0, 1, 2, 255}
    assert (out.mask == 255).any()


def test_constant_weight_stays_constant() -> None:
    weight = torch.full((2, 24, 24), 3.0)
    out = Augmenter(only(**ALL_SPATIAL), 2)(torch.rand(2, 1, 24, 24), None, weight, generator=torch.Generator())
    assert torch.allclose(out.weight, weight)


# ---- intensity ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", INTENSITY)
@pytest.mark.parametrize("dims", [2, 3])
def test_intensity_changes_only_the_image(name: str, dims: int) -> None:
    shape = SHAPES[dims]
    image, mask, weight = torch.rand(3, 2, *shape) + 0.5, blobs(3, shape), torch.rand(3, *shape)
    out = Augmenter(only(**{name: {"p": 1.0}}), dims)(image, mask, weight, generator=torch.Generator())
    assert torch.equal(out.mask, mask) and torch.equal(out.weight, weight)
    assert out.image.shape == image.shape and out.image.dtype == image.dtype
    assert not torch.allclose(out.image, image)


def test_intensity_transforms_do_what_they_say() -> None:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(4, 1, 64, 64, generator=gen) * 2 - 0.5
    FIELDS = {"noise": "noise_std", "blur": "blur_sigma"}

    def run(name: str, **settings: object) -> tuple[torch.Tensor, torch.Tensor]:
        aug = Augmenter(only(**{name: {"p": 1.0, **settings}}), 2)
        params = aug.sample_params(4, (64, 64), torch.Generator().manual_seed(1))
        return aug.apply(params, image).image, getattr(params.intensity, FIELDS.get(name, name))

    out, factor = run("brightness")
    assert torch.allclose(out, image * factor.view(-1, 1, 1, 1))
    out, factor = run("contrast")
    assert (out.amin((1, 2, 3)) >= image.amin((1, 2, 3)) - 1e-6).all()
    assert (out.amax((1, 2, 3)) <= image.amax((1, 2, 3)) + 1e-6).all()
    lower = factor < 1  # no clipping when contrast is reduced: an exact stretch around the mean
    assert lower.any() and (~lower).any()
    mean = image.mean((1, 2, 3), keepdim=True)
    stretched = (image - mean) * factor.view(-1, 1, 1, 1) + mean
    assert torch.allclose(out[lower], stretched[lower], atol=1e-6)
    out, g = run("gamma")
    assert torch.allclose(out.amin((1, 2, 3)), image.amin((1, 2, 3)), atol=1e-6)
    assert torch.allclose(out.amax((1, 2, 3)), image.amax((1, 2, 3)), atol=1e-6)
    assert torch.isfinite(out).all() and (g != 1).all()
    out, std = run("noise", std=[0.2, 0.4])
    residual = (out - image).std((1, 2, 3))
    assert torch.allclose(residual, std * image.std((1, 2, 3)), rtol=0.1)
    out, _ = run("blur", sigma=[1.0, 2.0])
    assert (out.std((1, 2, 3)) < 0.7 * image.std((1, 2, 3))).all()
    assert torch.allclose(out.mean((1, 2, 3)), image.mean((1, 2, 3)), atol=0.02)


def test_only_chosen_samples_change() -> None:
    image = torch.rand(16, 1, 16, 16)
    aug = Augmenter(only(gamma={"p": 0.5}, rotate={"p": 0.5}), 2)
    params = aug.sample_params(16, (16, 16), torch.Generator().manual_seed(4))
    out = aug.apply(params, image).image
    untouched = (params.intensity.gamma == 1) & (params.spatial.angles == 0).all(1)
    assert 0 < int(untouched.sum()) < 16
    assert torch.equal(out[untouched], image[untouched])
    assert not torch.isclose(out[~untouched], image[~untouched]).all()


def test_blur_is_separable_gaussian_in_3d() -> None:
    from unetkit.augment.intensity import gaussian_blur

    x = torch.zeros(1, 1, 15, 15, 15)
    x[0, 0, 7, 7, 7] = 1.0
    y = gaussian_blur(x, torch.tensor([1.5]))
    assert y.sum().item() == pytest.approx(1.0, abs=1e-5)
    profile = y[0, 0, 7, 7, 2:13]  # the kernel is cut at 3 sigma (radius 5)
    expected = torch.exp(-0.5 * (torch.arange(2, 13) - 7.0) ** 2 / 1.5**2)
    assert torch.allclose(profile / profile.max(), expected / expected.max(), atol=1e-4)
    assert torch.allclose(y, y.permute(0, 1, 4, 3, 2), atol=1e-7)  # isotropic
    flat = gaussian_blur(torch.full((2, 1, 3, 4), 5.0), torch.tensor([0.5, 4.0]))  # kernel wider than the image
    assert torch.allclose(flat, torch.full_like(flat, 5.0))  # mirrored borders keep a constant constant


@pytest.mark.gpu
def test_runs_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cfg = AugmentConfig.model_validate({name: {"p": 1.0} for name in (*SPATIAL, *INTENSITY)})
    image, mask = torch.rand(2, 1, 32, 32, 32), blobs(2, (32, 32, 32))
    aug = Augmenter(cfg, 3)
    cpu = aug(image, mask, generator=torch.Generator().manual_seed(0))
    gpu = aug(image.cuda(), mask.cuda(), generator=torch.Generator().manual_seed(0))
    assert gpu.image.is_cuda
    assert (gpu.mask.cpu() == cpu.mask).float().mean() > 0.99
    assert math.isfinite(gpu.image.sum().item())
