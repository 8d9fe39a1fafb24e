from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch

from unetkit.config import DataConfig, TrainConfig, WeightMapConfig
from unetkit.errors import ConfigError
from unetkit.losses import LOSS_TABLE, LOSSES, LossName, SegmentationLoss, cross_entropy, soft_dice, use_weight_map
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


def test_the_table_is_the_list_of_choices() -> None:
    assert set(get_args(LossName)) == set(LOSS_TABLE) == set(LOSSES)
    assert get_args(TrainConfig.model_fields["loss"].annotation) == get_args(LossName)
    assert all(name == spec.name for name, spec in LOSS_TABLE.items())
    assert TrainConfig.model_fields["loss"].default in LOSS_TABLE
    # the paper's loss is the one that turns the weight map on by itself; dice takes no per-pixel weight
    assert [s.name for s in LOSS_TABLE.values() if s.weight_map_by_default] == ["weighted_ce"]
    assert [s.name for s in LOSS_TABLE.values() if not s.accepts_weight] == ["dice"]


@pytest.mark.parametrize("name", LOSSES)
def test_weight_changes_exactly_the_losses_the_table_says(name: str) -> None:
    logits = torch.randn(2, 3, 6, 6)
    target = torch.randint(0, 3, (2, 6, 6))
    weight = torch.rand(2, 6, 6) * 4
    loss = SegmentationLoss(name)
    assert loss.accepts_weight == LOSS_TABLE[name].accepts_weight
    changed = not torch.allclose(loss(logits, target, weight), loss(logits, target))
    assert changed == loss.accepts_weight
    if loss.accepts_weight and name in ("ce", "weighted_ce"):  # both are the paper's weighted cross-entropy
        assert torch.allclose(loss(logits, target, weight), cross_entropy(logits, target, weight))


def test_docstring_and_config_descriptions_come_from_the_table() -> None:
    doc = inspect.getdoc(SegmentationLoss) or ""
    wm_desc = WeightMapConfig.model_fields["enabled"].description or ""
    loss_desc = TrainConfig.model_fields["loss"].description or ""
    assert "\n" not in wm_desc and "\n" not in loss_desc  # `config init` writes them as one comment line
    for name, spec in LOSS_TABLE.items():
        line = next(ln for ln in doc.splitlines() if ln.strip().startswith(f"``{name}``:"))
        assert spec.summary in line
        assert ("ignores the per-pixel weight" in line) == (not spec.accepts_weight)
        assert ("on by default" in line) == spec.weight_map_by_default
        assert re.search(rf"\b{name}\b", loss_desc), name
        assert re.search(rf"\b{name}\b", wm_desc), name
    never = wm_desc.split("not with")[1]
    assert [n for n in LOSSES if re.search(rf"\b{n}\b", never)] == [
        n for n in LOSSES if not LOSS_TABLE[n].accepts_weight
    ]
    assert "Losses (from" in doc and "Shape:" in doc
    assert DataConfig().weight_map.enabled == "auto"


def test_the_docs_table_agrees_with_the_loss_table() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    section = page.split("## Losses (`train.loss`)")[1].split("\n## ")[0]
    rows = [
        [c.strip() for c in ln.strip().strip("|").split("|")] for ln in section.splitlines() if ln.startswith("| `")
    ]
    assert [r[0].strip("`") for r in rows] == list(LOSSES)
    for name, what, weight, auto in rows:
        spec = LOSS_TABLE[name.strip("`")]
        assert what == spec.summary
        assert weight == (spec.weight or "no")
        assert auto == ("on" if spec.weight_map_by_default else "off")


def test_use_weight_map_follows_the_table_and_refuses_what_would_be_dropped() -> None:
    for name, spec in LOSS_TABLE.items():
        assert use_weight_map(name, "auto") is spec.weight_map_by_default
        assert use_weight_map(name, False) is False
        if spec.accepts_weight:
            assert use_weight_map(name, True) is True
        else:
            with pytest.raises(ConfigError, match=rf"data\.weight_map\.enabled.*{name}"):
                use_weight_map(name, True)
    with pytest.raises(ConfigError, match=r"train\.loss"):
        use_weight_map("hinge", "auto")


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
