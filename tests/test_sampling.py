from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from unetkit import create_model
from unetkit.augment import AugmentConfig, Augmenter
from unetkit.data.sampling import PatchBatch, PatchSampler, crop_to_output
from unetkit.data.windows import read_window, window_indices
from unetkit.errors import ConfigError, DataError, InputShapeError


@dataclass
class FakeSample:
    """The part of ``unetkit.data.Sample`` the sampler uses."""

    image: np.ndarray
    mask: np.ndarray
    weight: np.ndarray | None = None
    name: str = "fake"


def ramp_sample(shape: tuple[int, ...], channels: int = 1, weight: bool = False) -> FakeSample:
    """Image value = flat voxel index (per channel offset), so a patch tells where it came from."""
    n = int(np.prod(shape))
    image = np.stack([np.arange(n, dtype=np.float32).reshape(shape) + 1e6 * c for c in range(channels)])
    mask = np.zeros(shape, np.int64)
    return FakeSample(image, mask, np.arange(n, dtype=np.float32).reshape(shape) if weight else None)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- shapes, dtypes and mirrored borders --------------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
def test_shapes_and_dtypes(dims: int) -> None:
    shape = (30, 40) if dims == 2 else (10, 12, 14)
    samples = [ramp_sample(shape, channels=2, weight=True) for _ in range(3)]
    patch = (16, 24) if dims == 2 else (8, 8, 16)
    batch = PatchSampler(samples, patch).sample(5, gen())
    assert batch.image.shape == (5, 2, *patch) and batch.image.dtype == torch.float32
    assert batch.mask.shape == (5, *patch) and batch.mask.dtype == torch.int64
    assert batch.weight is not None and batch.weight.shape == (5, *patch) and batch.weight.dtype == torch.float32
    assert len(batch.origin) == len(batch.sample_index) == len(batch.forced) == 5


@pytest.mark.parametrize("dims", [2, 3])
def test_patches_are_the_mirrored_image_region(dims: int) -> None:
    shape = (7, 9) if dims == 2 else (5, 6, 7)
    sample = ramp_sample(shape, weight=True)
    patch = (20, 12) if dims == 2 else (9, 4, 16)  # larger than the image on some axes
    batch = PatchSampler([sample], patch).sample(6, gen(1))
    for b, origin in enumerate(batch.origin):
        idx = np.ix_(*(window_indices(o, p, s) for o, p, s in zip(origin, patch, shape, strict=True)))
        assert np.array_equal(batch.image[b, 0].numpy(), sample.image[0][idx])
        assert np.array_equal(batch.weight[b].numpy(), sample.weight[idx])


def test_mirror_padding_values() -> None:
    row = np.array([10, 20, 30])
    assert read_window(row, [-4], [11]).tolist() == [10, 20, 30, 20, 10, 20, 30, 20, 10, 20, 30]
    image = np.arange(12).reshape(1, 3, 4)
    patch = read_window(image, (-1, 2), (5, 4))
    assert patch.shape == (1, 5, 4)
    assert patch[0, :, 0].tolist() == [6, 2, 6, 10, 6]  # rows mirrored at both ends, edge not repeated
    assert patch[0, 1].tolist() == [2, 3, 2, 1]  # columns run over the right border


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_output_regions_stay_inside_the_image(fraction: float) -> None:
    sample = ramp_sample((50, 60))
    sample.mask[:3, :] = 1  # foreground along the top border
    sampler = PatchSampler([sample], (32, 32), output_size=(12, 12), foreground_fraction=fraction)
    batch = sampler.sample(200, gen(2))
    starts = np.array(batch.origin) + 10  # the output region starts `margin` = 10 voxels into the patch
    assert (starts >= 0).all() and (starts[:, 0] <= 50 - 12).all() and (starts[:, 1] <= 60 - 12).all()
    assert starts[:, 0].min() == 0 and starts[:, 1].max() == 48  # the borders are reached
    assert all(batch.forced) == (fraction == 1.0)
    if fraction == 1.0:
        assert (crop_to_output(batch.mask, (12, 12)) > 0).flatten(1).any(1).all()


def test_small_images_sit_inside_the_patch() -> None:
    batch = PatchSampler([ramp_sample((5, 6))], (16, 16), foreground_fraction=0.0).sample(50, gen(3))
    origins = np.array(batch.origin)
    assert (origins <= 0).all() and (origins[:, 0] >= 5 - 16).all() and (origins[:, 1] >= 6 - 16).all()


# ---- foreground oversampling --------------------------------------------------------------------------------
def blob_sample(shape: tuple[int, ...], spots: dict[int, tuple[slice, ...]]) -> FakeSample:
    mask = np.zeros(shape, np.int64)
    for cls, where in spots.items():
        mask[where] = cls
    return FakeSample(np.random.default_rng(0).random((1, *shape), dtype=np.float32), mask)


@pytest.mark.parametrize("fraction", [0.0, 0.33, 0.8])
def test_foreground_fraction_is_honoured(fraction: float) -> None:
    sample = blob_sample((200, 200), {1: (slice(150, 153), slice(20, 23))})
    sampler = PatchSampler([sample], (40, 40), output_size=(20, 20), foreground_fraction=fraction)
    batch = sampler.sample(400, gen(4))
    centre = crop_to_output(batch.mask, (20, 20))
    has_fg = (centre > 0).flatten(1).any(1).numpy()
    forced = np.array(batch.forced)
    assert has_fg[forced].all()  # every forced patch has foreground in its output region
    assert abs(forced.mean() - fraction) < 0.07
    assert has_fg.mean() < fraction + 0.1  # random patches rarely hit a 3x3 spot in 200x200


def test_forced_patches_cover_every_class_and_skip_ignore() -> None:
    big = blob_sample((64, 64, 64), {1: (slice(0, 40),), 255: (slice(40, 64),)})
    small = blob_sample((64, 64, 64), {2: (slice(10, 12), slice(10, 12), slice(10, 12))})
    sampler = PatchSampler([big, small], 16, foreground_fraction=1.0, ignore_index=255)
    assert sampler.foreground_classes == [1, 2]
    batch = sampler.sample(60, gen(5))
    per_class = {c: sum(bool((m == c).any()) for m in batch.mask) for c in (1, 2)}
    assert per_class[1] > 15 and per_class[2] > 15  # the rare class is drawn about as often as the common one


def test_no_foreground_falls_back_to_random_patches() -> None:
    batch = PatchSampler([ramp_sample((20, 20))], 8, foreground_fraction=1.0).sample(4, gen())
    assert not any(batch.forced)


def test_seed_replays_exactly() -> None:
    sample = blob_sample((40, 50), {1: (slice(3, 9), slice(30, 35))})
    sampler = PatchSampler([sample, ramp_sample((40, 50))], (16, 16), foreground_fraction=0.5)
    a, b = sampler.sample(8, gen(9)), sampler.sample(8, gen(9))
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and a.origin == b.origin
    assert sampler.sample(8, gen(10)).origin != a.origin


# ---- valid nets: output size and cropping -------------------------------------------------------------------
def test_for_model_rounds_to_a_legal_size_and_uses_the_output_region() -> None:
    model = create_model("unet2d_small", padding="valid", depth=2, width=2)
    sampler = PatchSampler.for_model([ramp_sample((80, 80))], model, 60)
    assert model.is_legal_size(sampler.patch_size[0])
    assert sampler.output_size == model.output_shape(sampler.patch_size)
    same = PatchSampler.for_model([ramp_sample((80, 80))], create_model("unet2d_small", width=2), 60)
    assert same.patch_size == same.output_size == (64, 64)


def test_crop_to_output_after_augmentation() -> None:
    sample = blob_sample((60, 60), {1: (slice(20, 40), slice(20, 40))})
    sample.weight = np.ones((60, 60), np.float32)
    batch = PatchSampler([sample], 36, output_size=20).sample(3, gen())
    out = Augmenter(AugmentConfig(), 2)(batch.image, batch.mask, batch.weight, generator=gen())
    cropped = crop_to_output(out, (20, 20))
    assert cropped.image.shape == (3, 1, 36, 36)  # the network input keeps its context
    assert cropped.mask.shape == (3, 20, 20) and cropped.weight.shape == (3, 20, 20)
    assert torch.equal(cropped.mask, out.mask[:, 8:28, 8:28])
    as_batch = crop_to_output(batch, (20, 20))
    assert isinstance(as_batch, PatchBatch) and as_batch.mask.shape == (3, 20, 20)
    assert crop_to_output(batch, None) is batch
    with pytest.raises(InputShapeError):
        crop_to_output(batch.mask, (40, 40))


# ---- bad input ----------------------------------------------------------------------------------------------
def test_bad_input_raises_typed_errors() -> None:
    with pytest.raises(DataError, match="no samples"):
        PatchSampler([], 8)
    with pytest.raises(DataError, match="broken"):
        PatchSampler([FakeSample(np.zeros((1, 8, 9)), np.zeros((8, 8), np.int64), name="broken")], 4)
    with pytest.raises(ConfigError, match="patch_size"):
        PatchSampler([ramp_sample((8, 8))], (4, 4, 4))
    with pytest.raises(ConfigError, match="output_size"):
        PatchSampler([ramp_sample((8, 8))], 4, output_size=6)
    with pytest.raises(ConfigError, match="foreground_fraction"):
        PatchSampler([ramp_sample((8, 8))], 4, foreground_fraction=1.5)
    mixed = PatchSampler([ramp_sample((8, 8), weight=True), ramp_sample((8, 8))], 4)
    with pytest.raises(DataError, match="weight map"):
        mixed.sample(16, gen())
