from __future__ import annotations

import numpy as np
import pytest

from unetkit.errors import ConfigError, DataError
from unetkit.postprocess import (
    apply_postprocess,
    crf_refine,
    fill_holes,
    keep_largest_component,
    label_components,
    parse_postprocess,
    remove_small_islands,
    separate_instances,
)


def _disk(shape: tuple[int, ...], centre: tuple[float, ...], r: float) -> np.ndarray:
    grid = np.indices(shape)
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))) <= r


def test_remove_islands_per_class_and_physical_size() -> None:
    lab = np.zeros((10, 10), np.uint8)
    lab[1:5, 1:5] = 1  # 16 px
    lab[7, 7] = 1  # 1 px island
    lab[7:9, 1:3] = 2  # 4 px island of class 2
    out = remove_small_islands(lab, 5)
    assert out[7, 7] == 0 and (out[7:9, 1:3] == 0).all() and (out[1:5, 1:5] == 1).all()
    assert out.dtype == np.uint8
    only1 = remove_small_islands(lab, 5, classes=[1])
    assert (only1[7:9, 1:3] == 2).all()
    # 5 µm² at 0.5 µm pixels = 20 px: the 16-px square goes too
    assert remove_small_islands(lab, 5, spacing=(0.5, 0.5)).max() == 0


def test_removed_island_takes_surrounding_class() -> None:
    lab = np.ones((7, 7), int)
    lab[3, 3] = 2  # a speck of class 2 inside class 1
    assert (remove_small_islands(lab, 2) == 1).all()


def test_fill_holes_and_keep_largest_3d() -> None:
    vol = _disk((9, 9, 9), (4, 4, 4), 3.5).astype(np.int64)
    vol[4, 4, 4] = 0  # an enclosed hole
    vol[0, 0, 0] = 1  # a small separate component
    filled = fill_holes(vol, 1)
    assert filled[4, 4, 4] == 1 and filled[8, 8, 8] == 0  # border-touching background is not a hole
    assert fill_holes(vol, 0)[4, 4, 4] == 0  # bigger than the limit: kept
    largest = keep_largest_component(filled)
    assert largest[0, 0, 0] == 0 and largest[4, 4, 4] == 1


def test_instances_split_touching_disks() -> None:
    two = _disk((20, 34), (10, 9), 7) | _disk((20, 34), (10, 23), 7)
    assert label_components(two).max() == 1
    split = separate_instances(two, "distance", min_distance=4)
    assert split.max() == 2
    assert split[10, 9] != split[10, 23] and split[10, 9] > 0
    # probability watershed: low probability at the neck between the two objects
    prob = np.where(two, 0.95, 0.05).astype(np.float32)
    prob[:, 15:18] = np.where(two[:, 15:18], 0.6, 0.05)
    assert separate_instances(prob, "probability").max() == 2
    assert separate_instances(two, "components").max() == 1
    with pytest.raises(DataError, match="unknown"):
        separate_instances(two, "magic")  # type: ignore[arg-type]


def test_instances_3d_with_spacing() -> None:
    vol = _disk((12, 12, 26), (6, 6, 7), 5) | _disk((12, 12, 26), (6, 6, 18), 5)
    assert separate_instances(vol, "distance", min_distance=3, spacing=(1.0, 1.0, 1.0)).max() == 2


def test_crf_improves_boundary_of_noisy_disk() -> None:
    rng = np.random.default_rng(0)
    n = 48
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - n / 2, xx - n / 2)
    truth = r <= 13
    image = truth.astype(np.float32) + rng.normal(0, 0.1, truth.shape).astype(np.float32)
    band = np.abs(r - 13) < 4
    p = np.where(truth, 0.85, 0.15)
    p = np.where(band, rng.uniform(0.15, 0.85, truth.shape), p)  # the edge is a coin toss
    probs = np.stack([1 - p, p]).astype(np.float32)
    before = np.mean(probs.argmax(0)[band] != truth[band])
    refined = crf_refine(probs, image)
    after = np.mean(refined.argmax(0)[band] != truth[band])
    assert before > 0.3 and after < before / 3
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-5)
    # 0 iterations changes nothing; the spatial kernel alone cannot see the edge
    np.testing.assert_array_equal(crf_refine(probs, image, iterations=0).argmax(0), probs.argmax(0))
    assert np.mean(crf_refine(probs).argmax(0)[band] != truth[band]) > after


def test_crf_3d_runs_and_checks_shapes() -> None:
    truth = _disk((10, 12, 12), (5, 6, 6), 4)
    probs = np.stack([~truth, truth]).astype(np.float32) * 0.6 + 0.2
    out = crf_refine(probs, truth.astype(np.float32), iterations=2, bilateral_sigma=2, window=2)
    assert out.shape == probs.shape
    assert (out.argmax(0) == truth).mean() > 0.99
    with pytest.raises(DataError, match="spatial shape"):
        crf_refine(probs, np.zeros((3, 3)))
    with pytest.raises(DataError, match="one channel"):
        crf_refine(probs[:1])


def test_pipeline_parse_and_apply() -> None:
    steps = parse_postprocess("remove-islands:3@1+2, fill-holes, keep_largest, crf:2")
    assert [s.name for s in steps] == ["remove-islands", "fill-holes", "keep-largest", "crf"]
    assert steps[0].classes == (1, 2) and steps[0].value == 3 and steps[3].value == 2
    assert parse_postprocess("") == [] and parse_postprocess(None) == []
    for bad, msg in (("blur:3", "unknown"), ("remove-islands", "needs a size"), ("fill-holes:x", "name")):
        with pytest.raises(ConfigError, match=msg):
            parse_postprocess(bad)
    lab = np.zeros((12, 12), int)
    lab[2:10, 2:10] = 1
    lab[5, 5] = 0
    lab[0, 11] = 1
    out = apply_postprocess(lab, "remove-islands:2,fill-holes")
    assert out[5, 5] == 1 and out[0, 11] == 0
    image = np.zeros((12, 12), np.float32)
    image[2:10, 2:10] = 1.0  # the image has no hole: the CRF removes the labels' one-pixel hole
    crf_out = apply_postprocess(lab, "crf:3", num_classes=2, image=image)
    assert crf_out[5, 5] == 1 and crf_out[0, 11] == 0 and (crf_out[2:10, 2:10] == 1).all()
