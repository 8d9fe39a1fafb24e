"""prepare_data's planned options: boundary targets, resampling, 2D slices of volumes, folds."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from unetkit.config import DataConfig
from unetkit.data.io import write_image
from unetkit.errors import ConfigError
from unetkit.synthetic import synthetic_cells
from unetkit.train.data import prepare_data


@pytest.fixture
def instance_set(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(5):
        s = synthetic_cells((64, 64), seed=i)
        tifffile.imwrite(tmp_path / "images" / f"c{i}.tif", s.image)
        tifffile.imwrite(tmp_path / "masks" / f"c{i}.tif", s.instances.astype(np.uint16))
    return tmp_path


@pytest.fixture
def volume_set(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        img = rng.random((6, 32, 32)).astype(np.float32)
        mask = (img > 0.5).astype(np.uint8)
        sp = (4.0, 1.0, 1.0) if i % 2 == 0 else (3.0, 1.0, 1.0)
        write_image(tmp_path / "images" / f"v{i}.nii.gz", img, spacing=sp)
        write_image(tmp_path / "masks" / f"v{i}.nii.gz", mask, spacing=sp)
    return tmp_path


def test_boundary_target_from_instances(instance_set):
    data = prepare_data(DataConfig(path=str(instance_set), target="boundary"), seed=0, use_weight_map=False)
    assert data.num_classes == 3 and data.class_names == ["background", "interior", "boundary"]
    assert set(np.unique(data.train[0].mask).tolist()) <= {0, 1, 2}
    assert (data.train[0].mask == 2).any()


def test_boundary_target_needs_instances(volume_set):
    with pytest.raises(ConfigError, match="instance"):
        prepare_data(
            DataConfig(path=str(volume_set), target="boundary", mask_kind="classes"), seed=0, use_weight_map=False
        )


def test_resampling_to_target_spacing(volume_set):
    data = prepare_data(DataConfig(path=str(volume_set), target_spacing=[2.0, 1.0, 1.0]), seed=0, use_weight_map=False)
    shapes = {s.mask.shape for s in data.train + data.val}
    assert shapes <= {(12, 32, 32), (9, 32, 32)}
    assert all(s.spacing == (2.0, 1.0, 1.0) for s in data.train)
    assert data.spacing == (2.0, 1.0, 1.0)


def test_slices_split_by_volume(volume_set):
    data = prepare_data(DataConfig(path=str(volume_set), slice_axis=0, val_fraction=0.25), seed=0, use_weight_map=False)
    assert data.spatial_dims == 2 and data.train[0].mask.ndim == 2
    train_vols = {s.name.rsplit("_slice", 1)[0] for s in data.train}
    val_vols = {s.name.rsplit("_slice", 1)[0] for s in data.val}
    assert not train_vols & val_vols  # no volume on both sides
    assert len(data.train) == 6 * len(train_vols)
    assert data.split["val"] == sorted(val_vols) or set(data.split["val"]) == val_vols


def test_folds_cover_every_image_once(instance_set):
    seen = []
    for k in range(5):
        data = prepare_data(DataConfig(path=str(instance_set), fold=k, num_folds=5), seed=3, use_weight_map=False)
        seen += data.split["val"]
        assert not set(data.split["train"]) & set(data.split["val"])
    assert sorted(seen) == sorted({f"c{i}" for i in range(5)})
    with pytest.raises(ConfigError, match="fold"):
        prepare_data(DataConfig(path=str(instance_set), fold=5, num_folds=5), seed=3, use_weight_map=False)
