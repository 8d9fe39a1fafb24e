from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from unetkit.errors import DataError
from unetkit.metrics.instance import InstanceCounts, instance_iou, instance_scores, match_instances
from unetkit.metrics.surface import surface_distances, surface_distances_per_class


def _ball(shape: tuple[int, ...], centre: tuple[float, ...], r: float) -> np.ndarray:
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= r * r


def test_surface_hand_computed_with_spacing() -> None:
    a = np.zeros((5, 9), bool)
    a[2, 2] = True
    b = np.zeros((5, 9), bool)
    b[2, 6] = True
    assert surface_distances(a, b) == (4.0, 4.0, 4.0)
    assert surface_distances(a, b, spacing=(3.0, 0.25)) == (1.0, 1.0, 1.0)
    assert surface_distances(a, a) == (0.0, 0.0, 0.0)
    assert surface_distances(np.zeros_like(a), np.zeros_like(a)).hd95 == 0.0
    assert surface_distances(a, np.zeros_like(a)).msd == float("inf")


def test_surface_3d_shifted_ball() -> None:
    truth = _ball((16, 16, 16), (8, 8, 8), 5)
    pred = np.roll(truth, 2, axis=0)
    d = surface_distances(pred, truth, spacing=(0.5, 1.0, 1.0))
    assert d.hd == pytest.approx(1.0)  # a 2-voxel shift along a 0.5-spaced axis
    assert 0 < d.msd <= d.hd95 <= d.hd


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_surface_matches_monai() -> None:
    monai_metrics = pytest.importorskip("monai.metrics")
    import torch

    rng = np.random.default_rng(0)
    a = ndimage.binary_dilation(rng.random((12, 14, 13)) > 0.97, iterations=2)
    b = ndimage.binary_dilation(rng.random((12, 14, 13)) > 0.97, iterations=2)
    sp = (2.0, 1.0, 0.5)

    def onehot(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x)
        return torch.stack([~t, t]).unsqueeze(0).float()

    ours = surface_distances(a, b, sp)
    hd95 = monai_metrics.compute_hausdorff_distance(onehot(a), onehot(b), percentile=95, spacing=sp)
    msd = monai_metrics.compute_average_surface_distance(onehot(a), onehot(b), symmetric=True, spacing=sp)
    assert ours.hd95 == pytest.approx(float(hd95)) and ours.msd == pytest.approx(float(msd))


def test_surface_per_class_and_errors() -> None:
    lab = np.zeros((8, 8), int)
    lab[1:3, 1:3] = 1
    lab[5:7, 5:7] = 2
    pred = lab.copy()
    pred[5:7, 5:7] = 0
    pred[5:7, 4:6] = 2
    res = surface_distances_per_class(pred, lab, 3)
    assert res[1].hd == 0 and res[2].hd == 1.0
    with pytest.raises(DataError, match="spacing"):
        surface_distances(lab, lab, spacing=(1.0,))


def test_instance_hand_computed() -> None:
    truth = np.zeros((6, 12), int)
    truth[1:5, 1:5] = 1  # 16 px
    truth[1:5, 7:11] = 2  # 16 px
    pred = np.zeros_like(truth)
    pred[1:5, 1:4] = 5  # IoU 12/16 = 0.75 with object 1
    pred[0, 11] = 9  # spurious
    iou, t_ids, p_ids = instance_iou(pred, truth)
    assert t_ids.tolist() == [1, 2] and p_ids.tolist() == [5, 9]
    assert iou[0, 0] == pytest.approx(0.75)
    s = instance_scores(pred, truth)
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5
    # thresholds 0.5..0.7 (5 of 10): TP 1, FP 1, FN 1 -> 1/3; 0.75.. : TP 0 -> 0
    assert s["ap"] == pytest.approx(5 * (1 / 3) / 10)


def test_instance_counts_pool_over_images_and_low_threshold() -> None:
    a = np.array([[1, 1, 0, 2, 2]])
    c = InstanceCounts(thresholds=(0.5,))
    c.update(a, a).update(np.zeros_like(a), a)
    assert c.tp.tolist() == [2] and c.fn.tolist() == [2] and c.fp.tolist() == [0]
    assert c.mean_image_ap() == pytest.approx(0.5)
    assert c.recall()[0] == pytest.approx(0.5) and c.precision()[0] == 1.0
    # below 0.5 a one-to-one matching is needed
    assert match_instances(np.array([[0.4, 0.4], [0.4, 0.0]]), 0.3) == 2
    with pytest.raises(DataError, match="thresholds"):
        InstanceCounts(thresholds=(1.5,))
    with pytest.raises(DataError, match="dtype"):
        instance_iou(np.zeros(3), np.zeros(3, int))


def _read_dsb_mask(root: Path) -> np.ndarray:
    import tifffile

    files = sorted((root / "dsb2018_nuclei" / "masks").glob("*.tif*"))
    if not files:
        pytest.skip("dsb2018 mask absent")
    return tifffile.imread(files[0]).astype(np.int64)


def test_dsb2018_truth_vs_itself_and_eroded(shared_data: Path) -> None:
    truth = _read_dsb_mask(shared_data)
    assert instance_scores(truth, truth)["ap"] == 1.0
    aps = []
    for r in (1, 3):
        # erode every nucleus by r pixels (a pixel stays when its whole neighbourhood has its id)
        size = (2 * r + 1,) * 2
        keep = (ndimage.grey_erosion(truth, size=size) == truth) & (ndimage.grey_dilation(truth, size=size) == truth)
        aps.append(instance_scores(np.where(keep, truth, 0), truth)["ap"])
    assert 0 < aps[1] < aps[0] < 1.0  # more erosion, fewer objects above the high IoU thresholds
