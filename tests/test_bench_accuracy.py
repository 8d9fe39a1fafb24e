"""benchmarks/accuracy.py: the sets' splits, the DSB quarters, unetkit's and nnU-Net's dataset folders (no training)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import accuracy

from unetkit.data.io import read_image

needs_nnunet = pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is None, reason="nnunetv2 is not installed")


def test_isbi_2d_split(shared_data: Path) -> None:
    s = accuracy.isbi_2d(shared_data)
    assert (len(s.train), len(s.test)) == (25, 5)
    assert s.test_names == [f"isbi_{i}" for i in range(25, 30)]
    first_test = read_image(shared_data / "isbi2012" / "images" / "25.png").array[0]
    np.testing.assert_array_equal(s.test[0][0], first_test)
    truth = read_image(shared_data / "isbi2012" / "masks" / "29.png").array[0] > 127
    np.testing.assert_array_equal(s.test[-1][1], truth)
    assert all(set(np.unique(m)) <= {0, 1} for _, m in s.train + s.test)


def test_isbi_stack_and_unetkit_folder(shared_data: Path, tmp_path: Path) -> None:
    s = accuracy.isbi_stack(shared_data)
    (train_img, train_mask), (test_img, test_mask) = s.train[0], s.test[0]
    assert train_img.shape == (20, 512, 512) and test_img.shape == (10, 512, 512)
    slices = accuracy.isbi_2d(shared_data)
    np.testing.assert_array_equal(train_img[0], slices.train[0][0])  # z 00
    np.testing.assert_array_equal(test_img[0], slices.train[20][0])  # z 20
    np.testing.assert_array_equal(test_mask[-1], slices.test[-1][1])  # z 29
    data, test = accuracy.write_unetkit_dataset(s, tmp_path)
    img = read_image(data / "images" / "stack_z00-19.nii.gz")
    assert img.array.shape == (1, 20, 512, 512) and img.spacing == pytest.approx((50.0, 4.0, 4.0))
    mask = read_image(data / "masks" / "stack_z00-19.nii.gz")
    np.testing.assert_array_equal(mask.array[0], train_mask)
    assert read_image(test / "stack_z20-29.nii.gz").spacing == pytest.approx((50.0, 4.0, 4.0))


def test_dsb_quarters(shared_data: Path, tmp_path: Path) -> None:
    s = accuracy.dsb_quarters(shared_data)
    image = read_image(shared_data / "dsb2018_nuclei" / "images" / "img2d.tif").array[0]
    labels = read_image(shared_data / "dsb2018_nuclei" / "masks" / "img2d.tif").array[0]
    assert (len(s.train), len(s.test)) == (3, 1) and s.test_names == ["dsb_q3"]
    q = s.train + s.test  # q0, q1, q2 train, q3 (bottom right) tests
    np.testing.assert_array_equal(np.block([[q[0][0], q[1][0]], [q[2][0], q[3][0]]]), image)
    fg = np.block([[q[0][1], q[1][1]], [q[2][1], q[3][1]]]) > 0
    np.testing.assert_array_equal(fg, labels > 0)
    for _, m in q:
        assert m.shape == (256, 256)
        ids = np.unique(m[m > 0])
        np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))  # consecutive
        assert ids.size > 8  # enough ids for unetkit to read the masks as instances
    # a nucleus cut by the quarter border keeps one id per side
    np.testing.assert_array_equal(q[3][1] > 0, labels[256:, 256:] > 0)
    data, test = accuracy.write_unetkit_dataset(s, tmp_path)
    back = read_image(data / "masks" / "dsb_q0.tif").array[0]
    np.testing.assert_array_equal(back, q[0][1])
    assert sorted(p.name for p in test.iterdir()) == ["dsb_q3.tif"]


def test_score_of_the_truth_is_perfect(shared_data: Path) -> None:
    s = accuracy.isbi_stack(shared_data)
    r = accuracy.score(s, [m for _, m in s.test])
    assert r["dice"] == 1.0 and r["rand_error"] == pytest.approx(0.0) and r["pixel_error"] == 0.0
    c = accuracy.dsb_quarters(shared_data)
    r = accuracy.score(c, [m for _, m in c.test])
    assert r["f1"] == 1.0 and r["ap"] == 1.0 and r["predicted_instances"] == r["true_instances"]
    merged = [(m > 0).astype(np.int32) for _, m in c.test]  # one object: every nucleus merged
    assert accuracy.score(c, merged)["f1"] < 0.1


@needs_nnunet
def test_nnunet_raw_2d(shared_data: Path, tmp_path: Path) -> None:
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    for bset in (accuracy.isbi_2d(shared_data), accuracy.dsb_quarters(shared_data)):
        folder = accuracy.write_nnunet_raw(bset, tmp_path / "raw")
        assert folder.name == f"Dataset{accuracy.NNUNET_IDS[bset.key]}_{bset.name}"
        meta = json.loads((folder / "dataset.json").read_text())
        assert meta["numTraining"] == len(bset.train) and meta["file_ending"] == ".png"
        assert meta["labels"]["background"] == 0 and len(meta["labels"]) == 2
        cases = get_filenames_of_train_images_and_targets(str(folder), meta)
        assert sorted(cases) == sorted(bset.train_names)
        io = NaturalImage2DIO()
        name = bset.train_names[0]
        img, _ = io.read_images(cases[name]["images"])
        seg, _ = io.read_seg(cases[name]["label"])
        assert img.shape == (1, 1, *bset.train[0][0].shape)
        np.testing.assert_array_equal(img[0, 0], bset.train[0][0])  # 16-bit DSB values survive
        np.testing.assert_array_equal(seg[0, 0], bset.train[0][1] > 0)  # binary foreground
        assert len(list((folder / "imagesTs").iterdir())) == len(bset.test)


@needs_nnunet
def test_nnunet_raw_3d_spacing(shared_data: Path, tmp_path: Path) -> None:
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    bset = accuracy.isbi_stack(shared_data)
    folder = accuracy.write_nnunet_raw(bset, tmp_path / "raw")
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["file_ending"] == ".nii.gz" and meta["overwrite_image_reader_writer"] == "SimpleITKIO"
    img, props = SimpleITKIO().read_images([str(folder / "imagesTr" / "stack_z00-19_0000.nii.gz")])
    assert img.shape == (1, 20, 512, 512)
    assert tuple(props["spacing"]) == pytest.approx((50.0, 4.0, 4.0))  # nnU-Net's (z, y, x)
    np.testing.assert_array_equal(img[0], bset.train[0][0])
    seg, _ = SimpleITKIO().read_seg(str(folder / "labelsTr" / "stack_z00-19.nii.gz"))
    np.testing.assert_array_equal(seg[0], bset.train[0][1])


@needs_nnunet
def test_budget_trainer_is_an_nnunet_trainer() -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    cls = accuracy.budget_trainer_class()
    assert issubclass(cls, nnUNetTrainer) and cls.__name__ == "nnUNetTrainerBudget"
    assert "run_training" in vars(cls) and "configure_optimizers" in vars(cls)


def test_set_a_is_also_scored_by_the_challenge_protocol_from_probabilities(shared_data: Path) -> None:
    a = accuracy.isbi_2d(shared_data)
    truths = [m for _, m in a.test][:2]
    a = dataclasses.replace(a, test=a.test[:2])
    soft = [np.where(t > 0, 0.7, 0.4).astype(np.float32) for t in truths]  # right at 0.5 and 0.6
    labels = [(f >= 0.5).astype(np.int64) for f in soft]
    r = accuracy.score(a, labels, soft)
    assert r["pixel_error_challenge"] == 0.0 and r["rand_error_challenge"] == pytest.approx(0.0)
    assert 0.4 < r["pixel_threshold"] <= 0.7
    shifted = [f - 0.25 for f in soft]  # at 0.5 the cells vanish; the best threshold finds them again
    r = accuracy.score(a, [(f >= 0.5).astype(np.int64) for f in shifted], shifted)
    assert r["pixel_error"] > 0.1 and r["pixel_error_challenge"] == 0.0
    assert "pixel_error_challenge" not in accuracy.score(a, labels)
