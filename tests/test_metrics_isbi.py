from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import adapted_rand_error, variation_of_information

from unetkit.errors import DataError
from unetkit.metrics.isbi import (
    pixel_error,
    rand_error,
    rand_score,
    segments,
    simple_point_table,
    warp_labels,
    warping_error,
)


def _cells(shape: tuple[int, int] = (24, 24), step: int = 8) -> np.ndarray:
    """Cell interiors separated by one-pixel membranes on a grid."""
    m = np.ones(shape, np.uint8)
    m[::step, :] = 0
    m[:, ::step] = 0
    return m


def test_pixel_error_hand_computed() -> None:
    truth = _cells()
    pred = truth.copy()
    pred[3, 3] = 0
    pred[0, 5] = 1
    assert pixel_error(pred, truth) == pytest.approx(2 / truth.size)
    assert pixel_error(truth * 255, truth) == 0.0  # any non-zero value is foreground


def test_rand_error_hand_computed_merge() -> None:
    truth = np.array([[1, 1, 0, 1, 1]])
    pred = np.ones((1, 5))
    # truth pairs: 2 + 2 = 4; predicted pairs on truth foreground: 4 * 3 = 12; shared: 4
    s = rand_score(pred, truth)
    assert s.merge == pytest.approx(4 / 12) and s.split == 1.0
    assert s.error == pytest.approx(1 - 2 * 4 / (4 + 12))


def test_rand_error_matches_skimage() -> None:
    rng = np.random.default_rng(1)
    truth = _cells((32, 32))
    pred = truth.copy()
    pred[8, 3:6] = 1  # bridge two cells (merge)
    pred[20:23, 12] = 1
    pred[4, 9:16] = 0  # cut a cell in two (split) -> creates predicted background inside truth
    flip = rng.random(truth.shape) < 0.02
    pred = np.where(flip, 1 - pred, pred)
    t_seg, p_seg = segments(truth), segments(pred)
    ref, _, _ = adapted_rand_error(t_seg, p_seg, ignore_labels=(0,))
    ours = rand_score(pred, truth, pred_background="segment").error
    assert ours == pytest.approx(ref, abs=1e-12)
    # with singletons, predicted background inside cells never merges: error differs but stays in [0, 1]
    assert 0 < rand_error(pred, truth) < 1


def test_rand_error_singletons_agree_when_no_background_inside_cells() -> None:
    truth = _cells()
    pred = truth.copy()
    pred[8, 2] = 1  # only merges, no predicted membrane inside a cell
    ref, _, _ = adapted_rand_error(segments(truth), segments(pred), ignore_labels=(0,))
    assert rand_error(pred, truth) == pytest.approx(ref) and ref > 0


def test_rand_error_3d_uses_3d_components() -> None:
    truth = np.stack([_cells(), _cells()])
    assert rand_error(truth, truth) == 0.0
    pred = truth.copy()
    pred[1] = 1  # every cell merges in slice 1, which links them through 3D
    assert rand_error(pred, truth) > 0.5


def test_variation_of_information_matches_skimage() -> None:
    from unetkit.metrics.isbi import variation_of_information as vi

    truth = _cells((32, 32))
    pred = truth.copy()
    pred[8, 3:6] = 1
    pred[4, 9:16] = 0
    ref = variation_of_information(segments(truth), segments(pred), ignore_labels=(0,))
    np.testing.assert_allclose(vi(pred, truth), ref, atol=1e-12)


def test_simple_point_table_known_cases() -> None:
    for conn in (4, 8):
        t = simple_point_table(conn)
        assert not t[0] and not t[255]  # isolated pixel / interior pixel
        assert t[0b00000010]  # end of a line (only the north neighbour)
        assert not t[0b00100010]  # middle of a vertical line: removing it splits the line
        assert t[0b00001111]  # a corner of a filled region
    # diagonal neighbours only: a bridge under 8-connectivity, not under 4-connectivity
    diag = 0b00000101  # NW and NE
    assert not simple_point_table(8)[diag]
    assert not simple_point_table(4)[0b00010001]  # NW and SE: joins two 4-objects through the pixel
    with pytest.raises(DataError):
        simple_point_table(6)


def test_warping_error_hand_computed() -> None:
    truth = np.zeros((20, 20), np.uint8)
    truth[2:9, 2:18] = 1
    truth[10:18, 2:18] = 1  # two cells split by a membrane row 9
    n = truth.size
    assert warping_error(truth, truth) == 0.0
    # a boundary displaced by two pixels: pixel error, no topological error
    moved = truth.copy()
    moved[2:4, 2:18] = 0
    assert pixel_error(moved, truth) > 0 and warping_error(moved, truth) == 0.0
    # a one-pixel bridge through the membrane: merges two cells
    merged = truth.copy()
    merged[9, 10] = 1
    assert warping_error(merged, truth) == pytest.approx(1 / n)
    # a spurious 2x2 object far away in the background and a hole of 3 pixels inside a cell
    spurious = truth.copy()
    spurious[18:20, 0:2] = 0  # (keep background around it)
    spurious[19, 19] = 1
    assert warping_error(spurious, truth) == pytest.approx(1 / n)
    holed = truth.copy()
    holed[13, 6:9] = 0
    assert warping_error(holed, truth) == pytest.approx(3 / n)
    # both directions see a one-pixel merge
    assert warping_error(merged, truth, warp="prediction") == pytest.approx(1 / n)


def test_warp_preserves_topology() -> None:
    rng = np.random.default_rng(0)
    truth = _cells((40, 40), 10)
    target = ndimage.binary_dilation(truth, iterations=1) & (rng.random(truth.shape) > 0.1)
    warped = warp_labels(truth, target)
    n_truth = ndimage.label(truth)[1]
    assert ndimage.label(warped)[1] == n_truth
    eight = np.ones((3, 3), bool)  # the background is 8-connected in this topology
    # outside the image counts as background, so label the padded complement
    assert ndimage.label(np.pad(~warped, 1, constant_values=True), eight)[1] == 1
    assert ndimage.label(np.pad(~truth.astype(bool), 1, constant_values=True), eight)[1] == 1
    assert np.count_nonzero(warped != target) < np.count_nonzero(truth != target)


def test_warping_error_3d_is_per_slice() -> None:
    truth = np.stack([_cells(), _cells()])
    pred = truth.copy()
    pred[1, 8, 3] = 1
    assert warping_error(pred, truth) == pytest.approx(1 / truth.size)


def test_warping_error_is_fast_on_512() -> None:
    rng = np.random.default_rng(0)
    truth = _cells((512, 512), 16)
    pred = ndimage.binary_erosion(truth, iterations=2) | (rng.random(truth.shape) < 0.01)
    t0 = time.perf_counter()
    err = warping_error(pred, truth)
    assert time.perf_counter() - t0 < 5.0
    assert 0 < err < pixel_error(pred, truth)


def test_shape_mismatch_is_typed() -> None:
    with pytest.raises(DataError, match="shape"):
        pixel_error(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(DataError, match="2D"):
        rand_error(np.zeros(4), np.zeros(4))


def test_the_challenge_protocol_takes_one_threshold_for_the_whole_test_set() -> None:
    from unetkit.metrics import CHALLENGE_THRESHOLDS, challenge_scores, errors_by_threshold

    truth = np.zeros((20, 20), np.uint8)
    truth[2:9, 2:18], truth[11:18, 2:18] = 1, 1  # two cells, a membrane row between them
    soft = np.where(truth > 0, 0.8, 0.2)
    soft[9:11, 5] = 0.55  # a weak bridge: merges at thresholds <= 0.5
    firm = np.where(truth > 0, 0.95, 0.45)  # a membrane that is only right above 0.45
    per_image = [errors_by_threshold(soft, truth), errors_by_threshold(firm, truth)]
    at = CHALLENGE_THRESHOLDS.index(0.5)
    assert per_image[0]["rand_error"][at] > 0 and per_image[0]["rand_error"][at + 1] == 0
    scores = challenge_scores(per_image)
    means = np.mean([e["rand_error"] for e in per_image], axis=0)
    assert scores.rand_error == pytest.approx(means.min()) and scores.rand_threshold == 0.6
    assert scores.rand_error <= means[at] and scores.rand_by_threshold == pytest.approx(tuple(means))
    with pytest.raises(DataError, match="no images"):
        challenge_scores([])
