from __future__ import annotations

import numpy as np
import pytest
import torch

from unetkit.errors import DataError
from unetkit.metrics import ConfusionMatrix, confusion_matrix


def test_hand_computed_two_class() -> None:
    truth = np.array([[0, 0, 1], [1, 1, 1]])
    pred = np.array([[0, 1, 1], [0, 1, 1]])
    cm = ConfusionMatrix(2).update(pred, truth)
    # truth 0: one right, one called 1; truth 1: three right, one called 0
    assert cm.matrix.tolist() == [[1, 1], [1, 3]]
    np.testing.assert_allclose(cm.dice(), [2 / 4, 6 / 8])
    np.testing.assert_allclose(cm.iou(), [1 / 3, 3 / 5])
    np.testing.assert_allclose(cm.precision(), [1 / 2, 3 / 4])
    np.testing.assert_allclose(cm.recall(), [1 / 2, 3 / 4])
    assert cm.accuracy() == pytest.approx(4 / 6)
    assert cm.mean("dice") == pytest.approx(0.75)
    assert cm.mean("dice", include_background=True) == pytest.approx(0.625)


def test_tiles_sum_to_whole_and_3d() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (4, 8, 8))
    pred = rng.integers(0, 3, (4, 8, 8))
    whole = ConfusionMatrix(3).update(pred, truth)
    tiles = ConfusionMatrix(3)
    for z in range(4):
        for y in (slice(0, 3), slice(3, 8)):
            tiles.update(pred[z, y], truth[z, y])
    np.testing.assert_array_equal(whole.matrix, tiles.matrix)
    np.testing.assert_allclose(whole.dice(), tiles.dice())
    a, b = ConfusionMatrix(3).update(pred[:2], truth[:2]), ConfusionMatrix(3).update(pred[2:], truth[2:])
    np.testing.assert_array_equal(a.merge(b).matrix, whole.matrix)
    whole.reset()
    assert whole.total == 0


def test_torch_matches_numpy_and_ignore_index() -> None:
    truth = torch.tensor([[0, 1, 255], [1, 255, 0]])
    pred = torch.tensor([[0, 1, 1], [0, 0, 0]])
    m_t = confusion_matrix(pred, truth, 2, ignore_index=255)
    m_n = confusion_matrix(pred.numpy(), truth.numpy(), 2, ignore_index=255)
    np.testing.assert_array_equal(m_t, m_n)
    assert m_t.sum() == 4 and m_t.tolist() == [[2, 0], [1, 1]]


def test_absent_class_is_nan_and_skipped() -> None:
    cm = ConfusionMatrix(3).update(np.array([0, 1, 1]), np.array([0, 1, 1]))
    d = cm.dice()
    assert np.isnan(d[2]) and d[1] == 1.0
    assert cm.mean("dice") == 1.0
    assert np.isnan(ConfusionMatrix(2).mean("dice"))


def test_bad_input_raises_typed_errors() -> None:
    with pytest.raises(DataError, match="shape"):
        ConfusionMatrix(2).update(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(DataError, match="ignore_index=255"):
        ConfusionMatrix(2).update(np.zeros(3, int), np.array([0, 1, 255]))
    with pytest.raises(DataError, match="dtype"):
        ConfusionMatrix(2).update(np.zeros(3, float), np.zeros(3, int))
    with pytest.raises(DataError, match="merge"):
        ConfusionMatrix(2).merge(ConfusionMatrix(3))
