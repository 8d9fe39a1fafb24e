from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unetkit.classes import palette
from unetkit.data.datasets import Sample, SegmentationDataset, load_dataset
from unetkit.data.io import write_image
from unetkit.errors import DataError

RNG = np.random.default_rng(2)


def _write(root: Path, name: str, image: np.ndarray, mask: np.ndarray, img_ext: str = ".png", msk_ext: str = ".png"):
    write_image(root / "images" / f"{name}{img_ext}", image)
    write_image(root / "masks" / f"{name}{msk_ext}", mask)


def test_zero_255_masks_become_0_1(tmp_path: Path) -> None:
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = 255
    _write(tmp_path, "a", RNG.integers(0, 255, (8, 8)).astype(np.uint8), m, img_ext=".tif")
    ds = load_dataset(tmp_path)
    assert isinstance(ds, SegmentationDataset) and isinstance(ds[0], Sample)
    assert ds.num_classes == 2 and ds.label_mapping.mapping == {0: 0, 255: 1}
    assert ds.class_names == ["background", "foreground"] and ds.class_colours == palette(2)
    s = ds[0]
    assert s.image.dtype == np.float32 and s.image.shape == (1, 8, 8)
    assert s.mask.dtype == np.int64 and s.mask.sum() == 9 and s.instances is None and s.weight is None


def test_odd_values_become_consecutive_classes(tmp_path: Path) -> None:
    img = np.zeros((6, 6), np.uint8)
    _write(tmp_path, "a", img, np.array([[0, 50, 100, 200, 50, 0]] * 6, np.uint8))
    _write(tmp_path, "b", img, np.full((6, 6), 100, np.uint8))
    ds = load_dataset(tmp_path)
    assert ds.num_classes == 4 and ds.label_mapping.describe() == "classes: 0->0, 50->1, 100->2, 200->3"
    np.testing.assert_array_equal(ds[0].mask[0], [0, 1, 2, 3, 1, 0])
    assert (ds[1].mask == 2).all()  # the same mapping for every mask
    assert ds.class_names == ["background", "class_1", "class_2", "class_3"]


def test_values_within_num_classes_are_kept(tmp_path: Path) -> None:
    _write(tmp_path, "a", np.zeros((4, 4), np.uint8), np.array([[0, 2, 2, 0]] * 4, np.uint8))
    ds = load_dataset(tmp_path, num_classes=4)
    assert ds.num_classes == 4 and ds.label_mapping.is_identity and ds[0].mask.max() == 2


def test_rgb_palette_masks(tmp_path: Path) -> None:
    mask = np.zeros((3, 4, 4), np.uint8)
    mask[0, 0, :] = 255  # red row
    mask[1, 1, :] = 255  # green row
    _write(tmp_path, "a", RNG.integers(0, 255, (3, 4, 4)).astype(np.uint8), mask)
    ds = load_dataset(tmp_path)
    assert ds.label_mapping.kind == "colours" and ds.num_classes == 3 and ds.in_channels == 3
    assert ds.class_colours == [(0, 0, 0), (0, 255, 0), (255, 0, 0)]
    np.testing.assert_array_equal(ds[0].mask[:, 0], [2, 1, 0, 0])
    assert ds.describe()["class_colours"] == ds.class_colours


def test_ignore_index_is_kept(tmp_path: Path) -> None:
    _write(tmp_path, "a", np.zeros((4, 4), np.uint8), np.array([[0, 255, 255, 0], [0, 100, 0, 0]] * 2, np.uint8))
    ds = load_dataset(tmp_path, ignore_index=100)
    assert ds.label_mapping.describe() == "classes: 0->0, 255->1; ignore_index 100 kept"
    np.testing.assert_array_equal(ds[0].mask[1], [0, 100, 0, 0])
    assert ds.fingerprint.ignored_voxels == 2 and sum(ds.fingerprint.class_counts) == 14


def test_instance_masks_auto_and_forced(tmp_path: Path) -> None:
    ids = np.zeros((32, 32), np.uint16)
    for k in range(12):
        ids[(k // 4) * 8 : (k // 4) * 8 + 5, (k % 4) * 8 : (k % 4) * 8 + 5] = k + 1
    _write(tmp_path, "a", RNG.integers(0, 60000, (32, 32)).astype(np.uint16), ids, ".tif", ".tif")
    ds = load_dataset(tmp_path)
    s = ds[0]
    assert ds.label_mapping.kind == "instances" and ds.num_classes == 2
    assert s.instances is not None and s.instances.dtype == np.int32 and s.instances.max() == 12
    np.testing.assert_array_equal(s.mask, ids > 0)
    few = tmp_path / "few"
    _write(few, "a", np.zeros((8, 8), np.uint8), np.array([[0, 1, 2, 3, 0, 0, 0, 0]] * 8, np.uint8))
    assert load_dataset(few).label_mapping.kind == "classes"
    forced = load_dataset(few, mask_kind="instances")
    assert forced.num_classes == 2 and forced[0].instances.max() == 3 and forced[0].mask.max() == 1


def test_3d_volumes_and_mixed_extensions(tmp_path: Path) -> None:
    vol = RNG.normal(size=(1, 6, 10, 12)).astype(np.float32)
    write_image(tmp_path / "images" / "v.nii.gz", vol, spacing=(3.0, 1.0, 1.0))
    write_image(tmp_path / "masks" / "v.tif", (vol[0] > 0).astype(np.uint8), spatial_dims=3)
    ds = load_dataset(tmp_path)
    assert ds.spatial_dims == 3 and ds[0].mask.shape == (6, 10, 12) and ds[0].spacing == (3.0, 1.0, 1.0)
    assert ds.fingerprint.spacing_median == [3.0, 1.0, 1.0]


def test_broken_dataset_raises_with_all_problems(tmp_path: Path) -> None:
    _write(tmp_path, "a", np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8))
    write_image(tmp_path / "images" / "b.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError) as exc:
        load_dataset(tmp_path)
    text = str(exc.value)
    assert "2 problems" in text and "masks/a.png" in text and "images/b.png" in text


def test_shared_isbi2012(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "isbi2012")
    assert len(ds) == 30 and ds.num_classes == 2 and ds.spatial_dims == 2 and ds.in_channels == 1
    assert ds.label_mapping.mapping == {0: 0, 255: 1}
    assert ds[0].image.shape == (1, 512, 512) and set(np.unique(ds[0].mask).tolist()) == {0, 1}
    assert 0.15 < ds.fingerprint.class_frequencies[0] < 0.3  # membrane is about 22% of pixels


def test_shared_dsb2018_instances(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "dsb2018_nuclei")
    s = ds[0]
    assert ds.label_mapping.kind == "instances" and ds.num_classes == 2
    assert s.instances is not None and len(np.unique(s.instances)) - 1 >= 100
    np.testing.assert_array_equal(s.mask, s.instances > 0)
