"""Resampling to a target spacing: shapes, round trips, masks keep their labels."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.data.resample import (
    needs_resampling,
    resample_image,
    resample_mask,
    resample_probabilities,
    resampled_shape,
)


def smooth_volume(shape):
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    return (np.sin(3 * grids[0]) + np.cos(2 * grids[-1]) + grids[1]).astype(np.float32)[None]


def test_shapes_and_tolerance():
    assert resampled_shape((10, 20), (2.0, 1.0), (1.0, 1.0)) == (20, 20)
    assert resampled_shape((10, 20), (1.005, 1.0), (1.0, 1.0)) == (10, 20)
    assert not needs_resampling((1.0, 1.0), (1.0, 1.0))
    assert not needs_resampling(None, (1.0, 1.0))
    assert needs_resampling((2.0, 1.0), (1.0, 1.0))


@pytest.mark.parametrize(
    "shape,spacing,target", [((16, 24), (2.0, 1.0), (1.0, 1.0)), ((8, 16, 16), (4.0, 1.0, 1.0), (2.0, 1.0, 1.0))]
)
def test_image_round_trip(shape, spacing, target):
    img = smooth_volume(shape)
    up = resample_image(img, spacing, target)
    assert up.shape[1:] == resampled_shape(shape, spacing, target)
    back = resample_image(up, target, spacing)
    assert back.shape == img.shape
    assert np.abs(back - img).mean() < 0.05 * np.abs(img).mean()


def test_mask_keeps_labels_and_ignore_value():
    m = np.zeros((20, 20), np.int64)
    m[5:15, 5:15] = 1
    m[0, 0] = 255  # an ignore value survives
    for mode in ("nearest", "onehot"):
        up = resample_mask(m, (1.0, 1.0), (0.5, 0.5), mode=mode)
        assert up.shape == (40, 40)
        assert set(np.unique(up).tolist()) <= {0, 1, 255}
        back = resample_mask(up, (0.5, 0.5), (1.0, 1.0), mode=mode)
        assert (back == m).mean() > 0.97


def test_probabilities_to_input_grid():
    p = np.random.default_rng(0).random((3, 10, 12)).astype(np.float32)
    out = resample_probabilities(p, (20, 24))
    assert out.shape == (3, 20, 24) and out.dtype == np.float32
    assert resample_probabilities(p, (10, 12)) is p


def test_boundary_target_round_trip_separates_touching_objects():
    from unetkit.data.targets import boundary_classes
    from unetkit.postprocess.instances import instances_from_boundary, label_components

    yy, xx = np.mgrid[:40, :60]
    inst = np.zeros((40, 60), np.int32)
    centres = [(20, 15), (20, 29), (20, 43)]  # three touching disks in a row
    for i, (cy, cx) in enumerate(centres, 1):
        inst[((yy - cy) ** 2 + (xx - cx) ** 2 <= 64) & (inst == 0)] = i
    target = boundary_classes(inst)
    assert label_components(target > 0).max() == 1  # as one foreground they merge
    out = instances_from_boundary(target)
    assert out.max() == 3
    # each recovered object overlaps exactly one true object, and covers most of it
    for i in range(1, 4):
        overlap = np.bincount(out[inst == i], minlength=4)[1:]
        assert overlap.max() / (inst == i).sum() > 0.9
    proba = np.stack([(target == k).astype(np.float32) for k in range(3)])
    assert instances_from_boundary(proba).max() == 3


def test_ct_normalisation_uses_the_foreground():
    from types import SimpleNamespace

    from unetkit.data.normalize import Normalizer

    rng = np.random.default_rng(0)
    image = np.full((1, 32, 32), -1000.0)  # air
    mask = np.zeros((32, 32), np.int64)
    mask[8:24, 8:24] = 1
    image[0, 8:24, 8:24] = rng.normal(50, 10, (16, 16))  # soft tissue
    image[0, 0, 0] = 3000  # bone outlier
    n = Normalizer("ct").fit([SimpleNamespace(image=image, mask=mask)])
    out = n(image)
    assert abs(float(out[0, 8:24, 8:24].mean())) < 0.2 and 0.7 < float(out[0, 8:24, 8:24].std()) < 1.3
    assert out.max() < 4 and out.min() > -4  # air and bone are clipped to the foreground range
    again = Normalizer.from_dict(n.to_dict())
    assert np.allclose(again(image), out)


@pytest.mark.parametrize(
    ("shape", "spacing", "target"),
    [((1, 50, 41), (2.0, 0.7), (1.0, 1.0)), ((2, 9, 30, 28), (5.0, 1.0, 1.3), (2.0, 1.0, 1.0))],
    ids=["2d", "3d-anisotropic"],
)
def test_region_by_region_resampling_equals_whole_image(shape, spacing, target) -> None:
    from unetkit.data.resample import ResampledImage

    img = np.random.default_rng(0).random(shape).astype(np.float32)
    whole = resample_image(img, spacing, target)
    view = ResampledImage(img, spacing, target)
    assert view.shape == whole.shape
    np.testing.assert_allclose(np.asarray(view), whole, atol=2e-5)
    # any region (the tiler's bands and tiles), to within the prefilter's margin error
    rng = np.random.default_rng(1)
    for _ in range(10):
        key = [slice(None)]
        for n in whole.shape[1:]:
            a = int(rng.integers(0, n - 1))
            key.append(slice(a, int(rng.integers(a + 1, n + 1))))
        np.testing.assert_allclose(view[tuple(key)], whole[tuple(key)], atol=2e-4)


@pytest.mark.parametrize(
    ("shape", "spacing", "target", "model"),
    [
        ((1, 90, 70), (0.5, 0.5), (1.0, 1.0), "unet2d_small"),
        ((1, 10, 40, 36), (4.0, 1.0, 1.0), (2.0, 1.0, 1.0), "unet3d_small"),
    ],
    ids=["2d-down", "3d-anisotropic-up"],
)
def test_streamed_prediction_at_the_model_spacing_equals_the_whole_image_route(shape, spacing, target, model) -> None:
    import torch

    from unetkit.data.resample import resample_probabilities
    from unetkit.infer import Predictor
    from unetkit.infer.spacing import resampled_slabs
    from unetkit.models import create_model

    torch.manual_seed(0)
    net = create_model(model, depth=2, width=4).eval()
    predictor = Predictor(
        net, normalization={"kind": "zscore", "params": {"scope": "image"}}, tile=16 if "3d" in model else 32
    )
    img = np.random.default_rng(3).random(shape).astype(np.float32)
    whole = resample_probabilities(predictor.predict_proba(resample_image(img, spacing, target)), shape[1:])
    slabs = list(resampled_slabs(predictor, img, spacing, target))
    assert len(slabs) > 1  # streamed, not one slab
    streamed = np.concatenate([s.proba for s in slabs], axis=1)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=2e-3)
