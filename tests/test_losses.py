from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unetkit.errors import ConfigError
from unetkit.losses import LOSSES, SegmentationLoss, cross_entropy, soft_dice
from unetkit.train.weightmap import border_distances, class_balance, weight_map


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_losses_finite_and_differentiable(name: str, spatial_dims: int) -> None:
    logits = torch.randn(2, 3, *(6,) * spatial_dims, requires_grad=True)
    target = torch.randint(0, 3, (2, *(6,) * spatial_dims))
    weight = torch.rand(2, *(6,) * spatial_dims) + 0.5
    loss = SegmentationLoss(name, ignore_index=None)(logits, target, weight)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSSES)
def test_perfect_prediction_beats_wrong(name: str) -> None:
    target = torch.randint(0, 2, (1, 8, 8))
    good = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float() * 20 - 10
    loss = SegmentationLoss(name)
    assert loss(good, target) < loss(-good, target)


def test_ignore_index_pixels_contribute_nothing() -> None:
    logits = torch.randn(1, 2, 4, 4)
    target = torch.randint(0, 2, (1, 4, 4))
    other = target.clone()
    other[0, 0, :] = 255
    changed = logits.clone()
    changed[0, :, 0, :] = torch.randn(2, 4) * 100
    for name in ("ce", "dice", "focal", "bce"):
        loss = SegmentationLoss(name, ignore_index=255)
        assert torch.allclose(loss(logits, other), loss(changed, other)), name


def test_weighted_ce_is_ce_times_weight() -> None:
    logits = torch.randn(1, 2, 5, 5)
    target = torch.randint(0, 2, (1, 5, 5))
    assert torch.allclose(cross_entropy(logits, target, torch.full((1, 5, 5), 3.0)), 3 * cross_entropy(logits, target))
    assert math.isclose(
        float(cross_entropy(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))), math.log(2), rel_tol=1e-6
    )


def test_soft_dice_hand_computed() -> None:
    # probabilities 0.5 everywhere, 2 classes, foreground = 2 of 4 pixels:
    # Dice_fg = 2 * (0.5 + 0.5) / (4 * 0.5 + 2) = 0.5
    target = torch.tensor([[[0, 0, 1, 1]]])
    assert math.isclose(float(soft_dice(torch.zeros(1, 2, 1, 4), target)), 0.5, rel_tol=1e-4)
    # a confident, correct prediction: Dice_fg -> 1
    logits = torch.tensor([[[[9.0, 9.0, -9.0, -9.0]], [[-9.0, -9.0, 9.0, 9.0]]]])
    assert float(soft_dice(logits, target)) < 1e-4


def test_unknown_loss() -> None:
    with pytest.raises(ConfigError, match="dice_ce"):
        SegmentationLoss("hinge")


def test_weight_map_peaks_in_gap_between_touching_squares() -> None:
    mask = np.zeros((40, 60), dtype=np.int64)
    mask[10:30, 8:29] = 1
    mask[10:30, 31:52] = 1  # a 2-pixel gap at columns 29-30
    w = weight_map(mask, 2, w0=10, sigma=5)
    wc = class_balance(mask, 2)
    gap = w[20, 29]
    assert gap > wc[0] + 8  # d1 + d2 = 1 + 2 -> 10 * exp(-9/50) ~ 8.35 above w_c
    assert gap == pytest.approx(wc[0] + 10 * np.exp(-((1 + 2) ** 2) / 50), rel=1e-4)
    far = w[2, 2]
    assert gap > far + 5
    # inside the objects only the class weight applies
    assert w[20, 15] == pytest.approx(wc[1])
    # the maximum of the border term lies in the gap column
    assert np.unravel_index(np.argmax(w[:, :]), w.shape)[1] in (29, 30)


def test_weight_map_3d_and_instances_and_ignore() -> None:
    mask = np.zeros((12, 20, 20), dtype=np.int64)
    mask[2:10, 2:9, 2:18] = 1
    mask[2:10, 10:18, 2:18] = 1  # touching along a 1-voxel gap at y = 9
    inst = np.zeros_like(mask)
    inst[2:10, 2:9, 2:18] = 1
    inst[2:10, 10:18, 2:18] = 2
    w = weight_map(mask, 2, instances=inst)
    assert w[6, 9, 10] > 9
    mask[0] = 255
    w2 = weight_map(mask, 2, ignore_index=255)
    assert (w2[0] == 0).all()


def test_border_distances_are_exact() -> None:
    inst = np.zeros((1, 30), dtype=np.int32)
    inst[0, 5] = 1
    inst[0, 20] = 2
    d1, d2 = border_distances(inst, cutoff=50.0)
    assert d1[0, 10] == 5 and d2[0, 10] == 10
    assert d1[0, 25] == 5 and d2[0, 25] == 20
