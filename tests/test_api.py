"""The one-call Python API: unetkit.predict on every array layout and on files, unetkit.train on a folder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import unetkit
from unetkit.errors import ConfigError, InputShapeError

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def net2d_rgb() -> object:
    return unetkit.create_model("unet2d_small", in_channels=3, num_classes=2)


def test_predict_finds_the_channel_axis(net2d_rgb: object, caplog: pytest.LogCaptureFixture) -> None:
    image = RNG.random((3, 40, 48)).astype(np.float32)
    first = unetkit.predict(net2d_rgb, image, device="cpu")
    assert first.shape == (40, 48) and first.dtype == np.uint8
    with caplog.at_level(logging.INFO, logger="unetkit.api"):
        last = unetkit.predict(net2d_rgb, np.moveaxis(image, 0, -1), device="cpu")
    np.testing.assert_array_equal(first, last)
    assert "channels-last" in caplog.text
    labels, proba = unetkit.predict(net2d_rgb, image, probabilities=True, device="cpu")
    np.testing.assert_array_equal(labels, first)
    assert proba.shape == (2, 40, 48) and np.allclose(proba.sum(0), 1, atol=1e-4)
    with pytest.raises(InputShapeError, match="channel_axis"):
        unetkit.predict(net2d_rgb, np.zeros((40, 5, 48), np.float32), device="cpu")
    mid = unetkit.predict(net2d_rgb, np.moveaxis(image, 0, 1), channel_axis=1, device="cpu")
    np.testing.assert_array_equal(mid, first)


def test_predict_says_when_the_layout_is_ambiguous(caplog: pytest.LogCaptureFixture) -> None:
    net = unetkit.create_model("unet2d_small", in_channels=3, num_classes=2)
    with caplog.at_level(logging.INFO, logger="unetkit.api"):
        assert unetkit.predict(net, np.zeros((3, 40, 3), np.float32), device="cpu").shape == (40, 3)
    assert "took the first" in caplog.text


def test_predict_grey_2d_and_3d_arrays_and_files(tmp_path: Path) -> None:
    net = unetkit.create_model("unet2d_small", in_channels=1, num_classes=2)
    path = unetkit.save_model(tmp_path / "m.safetensors", net)
    image = RNG.random((40, 48)).astype(np.float32)
    a = unetkit.predict(str(path), image, device="cpu")
    b = unetkit.predict(path, image[None], device="cpu")
    np.testing.assert_array_equal(a, b)
    from unetkit.data.io import write_image

    write_image(tmp_path / "img.tif", image[None])
    np.testing.assert_array_equal(unetkit.predict(path, tmp_path / "img.tif", device="cpu"), a)
    res = unetkit.predict(path, tmp_path / "img.tif", out=tmp_path / "o", format="ome-zarr", device="cpu")
    assert res.outputs.labels == tmp_path / "o" / "img.ome.zarr"
    with pytest.raises(ConfigError, match="image file"):
        unetkit.predict(path, image, out=tmp_path / "o")
    net3d = unetkit.create_model("unet3d_small", in_channels=1, num_classes=3)
    vol = RNG.random((16, 24, 24)).astype(np.float32)
    assert unetkit.predict(net3d, vol, device="cpu").shape == (16, 24, 24)


def test_a_2d_network_predicts_a_stack_slice_by_slice(tmp_path: Path) -> None:
    """A stack (a file, ``(C, Z, Y, X)`` or, for one channel, ``(Z, Y, X)``) through a 2D network: each Z slice
    as a 2D image, as ``unetkit predict`` does; a ``(3, H, W)`` array is still an RGB image for the channel rule."""
    from unetkit.data.io import read_image, write_image

    net = unetkit.create_model("unet2d_small", in_channels=1, num_classes=3)
    path = unetkit.save_model(tmp_path / "m.safetensors", net)
    stack = RNG.random((6, 40, 48)).astype(np.float32)
    per_slice = np.stack([unetkit.predict(path, s, device="cpu") for s in stack])
    np.testing.assert_array_equal(unetkit.predict(path, stack, device="cpu"), per_slice)
    labels, proba = unetkit.predict(path, stack[None], probabilities=True, device="cpu")
    np.testing.assert_array_equal(labels, per_slice)
    assert proba.shape == (3, 6, 40, 48) and np.allclose(proba.sum(0), 1, atol=1e-4)
    np.testing.assert_allclose(proba[:, 2], unetkit.predict(path, stack[2], probabilities=True, device="cpu")[1])
    write_image(tmp_path / "stack.tif", stack[None])
    np.testing.assert_array_equal(unetkit.predict(path, tmp_path / "stack.tif", device="cpu"), per_slice)
    res = unetkit.predict(path, tmp_path / "stack.tif", out=tmp_path / "o", device="cpu")  # the CLI's way: the same
    np.testing.assert_array_equal(read_image(res.outputs.labels, spatial_dims=3).array.squeeze(), per_slice)
    from unetkit.errors import DataError

    with pytest.raises(DataError, match="3 channels"):  # 3 planes: an RGB image for a grey network, not a stack
        unetkit.predict(path, stack[:3], device="cpu")


def test_train_on_a_folder_returns_the_model_file(tmp_path: Path) -> None:
    from unetkit.synthetic import write_dataset

    write_dataset(str(tmp_path / "data"), n=4, shape=(64, 64))
    model = unetkit.train(
        tmp_path / "data",
        tmp_path / "run",
        plan=False,
        train__epochs=1,
        train__device="cpu",
        model__name="unet2d_small",
        data__patch_size=[64, 64],
        train__batch_size=2,
    )
    assert model == tmp_path / "run" / "model.safetensors" and model.is_file()
    assert unetkit.predict(model, RNG.random((64, 64)).astype(np.float32), device="cpu").shape == (64, 64)


def test_train_plans_a_restoration_folder_and_predict_restores(tmp_path: Path) -> None:
    """``unetkit.train(DATA, OUT, task="restore")`` plans and trains as ``unetkit train DATA --task restore``;
    ``unetkit.predict`` with the model restores an array (channels in the targets' range), not labels."""
    from unetkit.plan import load_plan
    from unetkit.synthetic import write_restore_dataset

    write_restore_dataset(str(tmp_path / "data"), n=3, shape=(48, 48), seed=0)
    model = unetkit.train(
        tmp_path / "data", tmp_path / "run", budget="0.1m", task="restore", train__device="cpu",
        train__epochs=1, train__iterations_per_epoch=2,
    )  # fmt: skip
    assert unetkit.read_description(model).task == "restore"
    plan = load_plan(tmp_path / "run" / "plan.yaml")
    assert plan.get("task") == "restore" and plan.get("model.args.norm") == "none"  # the restoration rules
    out = unetkit.predict(model, RNG.random((48, 40)).astype(np.float32), device="cpu")
    assert out.shape == (1, 48, 40) and out.dtype == np.float32
