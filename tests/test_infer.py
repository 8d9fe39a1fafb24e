"""The tiler and the predictor: exactness against whole-image passes, blending, TTA, backends."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from unetkit.data.windows import fold_index, read_window
from unetkit.errors import ConfigError, InputShapeError
from unetkit.infer import Predictor, choose_tile, plan_tiles
from unetkit.infer.backends import probabilities, tiles_per_call
from unetkit.infer.tiling import BLEND_MODES, window_1d
from unetkit.models import UNet


class Identity:
    """A backend returning its input: the tiler must then reconstruct the image exactly."""

    name, device = "identity", "cpu"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return batch.copy()


def whole_image_proba(net: UNet, image: np.ndarray) -> np.ndarray:
    """One pass of a valid net over the mirror-padded image, cropped to the image."""
    m, spatial = net.margin(), image.shape[1:]
    sizes = [net.legal_size(n + 2 * m, "ceil") for n in spatial]
    pad = [(0, 0)] + [(m, s - n - m) for s, n in zip(sizes, spatial, strict=True)]
    padded = np.pad(image, pad, mode="reflect")
    with torch.no_grad():
        out = probabilities(net(torch.from_numpy(padded)[None].float()), torch)[0].numpy()
    return out[(slice(None), *(slice(0, n) for n in spatial))]


def test_fold_index_matches_numpy_pad_far_outside() -> None:
    for n in (1, 2, 5):
        a = np.arange(n)
        ref = np.pad(a, (13, 17), mode="reflect") if n > 1 else np.zeros(n + 30, int)
        assert np.array_equal(a[fold_index(np.arange(-13, n + 17), n)], ref)


def test_read_window_reads_only_the_needed_box() -> None:
    class Spy:
        shape, dtype = (1, 100, 100), np.uint8

        def __init__(self) -> None:
            self.boxes: list[tuple[slice, ...]] = []

        def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
            self.boxes.append(key)
            return np.zeros((1, *(s.stop - s.start for s in key[1:])), np.uint8)

    spy = Spy()
    assert read_window(spy, (40, -3), (10, 8)).shape == (1, 10, 8)
    assert spy.boxes == [(slice(None), slice(40, 50), slice(0, 5))]


@pytest.mark.parametrize(
    ("dims", "shape", "tile"),
    [(2, (37, 53), 60), (2, (100, 29), 76), (2, (5, 7), 44), (3, (13, 9, 22), 44)],
)
def test_valid_tiling_equals_whole_image_pass(dims: int, shape: tuple[int, ...], tile: int) -> None:
    net = UNet(dims, in_channels=2, num_classes=3, depth=2, width=2, padding="valid").eval()
    image = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    pred = Predictor(net, tile=tile, batch_size=3, device="cpu")
    assert pred.plan(shape).num_tiles > 1 or min(shape) < 10
    got = pred.predict_proba(image)
    assert np.abs(got - whole_image_proba(net, image)).max() < 1e-5
    assert np.array_equal(pred.predict(image), got.argmax(0))


@pytest.mark.parametrize("blend", BLEND_MODES)
@pytest.mark.parametrize(("shape", "overlap"), [((70, 45), 0.25), ((20, 13), 0.5), ((33, 150), 0.0)])
def test_identity_network_reconstructs_exactly_2d(blend: str, shape: tuple[int, ...], overlap: float) -> None:
    net = UNet(2, in_channels=3, num_classes=3, depth=2, width=2)
    image = np.random.default_rng(1).random((3, *shape)).astype(np.float32)
    pred = Predictor(net, tile=32, overlap=overlap, blend=blend, _backend=Identity())
    np.testing.assert_allclose(pred.predict_proba(image), image, rtol=0, atol=1e-6)


def test_the_default_batch_holds_512_squared_pixels_per_call_on_the_cpu_and_4_tiles_on_cuda() -> None:
    net = UNet(2, in_channels=1, num_classes=1, depth=1, width=2)
    image = np.zeros((1, 600, 2200), np.float32)  # a row of 128 tiles holds more than 16
    sizes: list[int] = []

    class Spy(Identity):
        def __call__(self, batch: np.ndarray) -> np.ndarray:
            sizes.append(len(batch))
            return batch.copy()

    for tile, expected in ((512, 1), (256, 4), (128, 16)):
        sizes.clear()
        pred = Predictor(net, tile=tile, _backend=Spy())
        pred.num_classes = 1
        plan = pred.plan(image.shape[1:])
        assert pred.batch_for(plan) == expected and f"batch {expected}" in pred.describe(image.shape[1:])
        pred.predict_proba(image)
        assert max(sizes) == expected and sum(sizes) == plan.num_tiles
    explicit = Predictor(net, tile=512, batch_size=3, _backend=Spy())
    assert explicit.batch_for(explicit.plan(image.shape[1:])) == 3
    cuda = Spy()
    cuda.device = "cuda:0"
    assert tiles_per_call(cuda, (512, 512)) == 4 and tiles_per_call(cuda, (64, 64)) == 64


def test_the_default_tile_is_512_in_2d_and_96_in_3d() -> None:
    assert choose_tile(UNet(2, 1, 2, depth=2, width=2), None, (2000, 2000)) == (512, 512)
    assert choose_tile(UNet(2, 1, 2, depth=2, width=2), None, (300, 2000)) == (300, 512)
    assert choose_tile(UNet(3, 1, 2, depth=2, width=2), None, (200, 200, 200)) == (96, 96, 96)


@pytest.mark.parametrize("blend", ["gaussian", "center"])
def test_identity_network_reconstructs_exactly_3d(blend: str) -> None:
    net = UNet(3, in_channels=1, num_classes=1, depth=1, width=2)
    image = np.random.default_rng(2).random((1, 11, 19, 7)).astype(np.float32)
    pred = Predictor(net, tile=8, overlap=0.5, blend=blend, _backend=Identity())
    assert pred.plan(image.shape[1:]).num_tiles >= 8
    pred.num_classes = 1
    np.testing.assert_allclose(pred.predict_proba(image), image, rtol=0, atol=1e-6)


def test_blend_windows_are_positive_and_shaped() -> None:
    for mode in BLEND_MODES:
        w = window_1d(16, mode)
        assert w.shape == (16,) and (w > 0).all() and np.allclose(w, w[::-1])
    assert window_1d(16, "gaussian")[8] > window_1d(16, "gaussian")[0] * 10
    with pytest.raises(ConfigError, match="blend"):
        window_1d(4, "median")


def test_plans_cover_every_pixel_once_when_not_blended() -> None:
    plan = plan_tiles((101,), padding="same", tile=(32,), overlap=0.3, blend="center")
    kept = [s.keep_stop - s.keep_start for s in plan.axes[0].spans]
    assert sum(kept) == 101 and not plan.blended
    assert plan.axes[0].spans[0].keep_start == 0 and plan.axes[0].spans[-1].keep_stop == 101
    with pytest.raises(ConfigError, match="overlap"):
        plan_tiles((10,), padding="same", tile=(8,), overlap=1.0)


def test_tile_rounding_follows_design(caplog: pytest.LogCaptureFixture) -> None:
    valid = UNet(2, 1, 2, depth=2, width=2, padding="valid")
    same = UNet(2, 1, 2, depth=3, width=2)
    assert choose_tile(valid, 61, (500, 500)) == (valid.legal_size(61),) * 2
    assert choose_tile(same, 50, (500, 30)) == (56, 32)
    with caplog.at_level(logging.INFO, logger="unetkit.infer"):
        Predictor(valid, tile=61, device="cpu").plan((100, 100))
    assert "not legal" in caplog.text


def test_tta_logs_cost_and_is_flip_invariant(caplog: pytest.LogCaptureFixture) -> None:
    net = UNet(2, 1, 2, depth=2, width=4).eval()
    image = np.random.default_rng(3).random((1, 40, 40)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="unetkit.infer"):
        pred = Predictor(net, tile=40, tta=True, device="cpu")
    assert "TTA: 4 passes per tile" in caplog.text
    a = pred.predict_proba(image)
    b = pred.predict_proba(image[:, ::-1, :].copy())[:, ::-1, :]
    np.testing.assert_allclose(a, b, atol=1e-5)
    plain = Predictor(net, tile=40, device="cpu").predict_proba(image)
    assert np.abs(a - plain).max() > 1e-4  # the flips really were averaged


def test_onnxruntime_backend_matches_torch() -> None:
    pytest.importorskip("onnxruntime")
    for padding in ("same", "valid"):
        net = UNet(2, 1, 3, depth=2, width=4, padding=padding).eval()
        image = np.random.default_rng(4).random((1, 70, 90)).astype(np.float32)
        kw = dict(tile=48 if padding == "same" else 60, device="cpu", batch_size=2)
        a = Predictor(net, **kw).predict_proba(image)  # type: ignore[arg-type]
        b = Predictor(net, backend="onnxruntime", **kw).predict_proba(image)  # type: ignore[arg-type]
        assert np.abs(a - b).max() <= 1e-4


def test_sigmoid_head_gives_two_class_probabilities() -> None:
    net = UNet(2, 1, 1, depth=2, width=2).eval()
    p = Predictor(net, tile=32, device="cpu").predict_proba(np.zeros((1, 20, 20), np.float32))
    assert p.shape == (2, 20, 20) and np.allclose(p.sum(0), 1, atol=1e-6)


def test_region_equals_crop_of_whole_run() -> None:
    net = UNet(2, 1, 2, depth=2, width=4).eval()
    image = np.random.default_rng(5).random((1, 90, 70)).astype(np.float32)
    pred = Predictor(net, tile=32, overlap=0.5, device="cpu")
    whole = pred.predict_proba(image)
    slabs = list(pred.iter_slabs(image, region=[(17, 61), (30, 70)]))
    part = np.concatenate([s.proba for s in slabs], axis=1)
    assert slabs[0].origin == (17, 30)
    np.testing.assert_allclose(part, whole[:, 17:61, 30:70], atol=1e-6)


def test_bad_input_and_options_raise_typed_errors() -> None:
    net = UNet(2, 2, 2, depth=2, width=2)
    with pytest.raises(InputShapeError, match="channel"):
        Predictor(net, device="cpu").predict(np.zeros((3, 10, 10)))
    with pytest.raises(ConfigError, match="backend"):
        Predictor(net, backend="tensorflow")
    with pytest.raises(ConfigError, match="blend"):
        Predictor(net, blend="max")
    with pytest.raises(ConfigError, match="device"):
        Predictor(net, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="not on this machine"):
            Predictor(net, device="cuda")


def test_normalisation_uses_image_level_statistics_per_tile() -> None:
    from unetkit.data.normalize import Normalizer

    net = UNet(2, 1, 2, depth=2, width=4).eval()
    image = (np.random.default_rng(6).random((1, 90, 70)) * 1000).astype(np.uint16)
    norm = Normalizer("zscore")
    expected_input = norm.for_image(image)(image)  # the whole image normalised with its own statistics
    got = Predictor(net, tile=32, device="cpu", normalization=norm.to_dict()).predict_proba(image)
    plain = Predictor(net, tile=32, device="cpu", normalization={"kind": "none"}).predict_proba(expected_input)
    np.testing.assert_allclose(got, plain, atol=1e-5)
