from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from unetkit.data.datasets import Sample
from unetkit.data.fingerprint import Fingerprint
from unetkit.data.io import open_image, write_image
from unetkit.data.normalize import Normalizer
from unetkit.errors import ConfigError

RNG = np.random.default_rng(3)


def _samples() -> list[Sample]:
    out = []
    for i in range(3):
        img = np.stack([RNG.normal(10 + i, 2, (16, 16)), RNG.uniform(0, 1000, (16, 16))]).astype(np.float32)
        out.append(Sample(name=str(i), image=img, mask=np.zeros((16, 16), np.int64)))
    return out


def test_zscore_per_image_numpy_and_torch() -> None:
    x = RNG.normal(5, 3, (2, 8, 8, 8)).astype(np.float32)
    y = Normalizer("zscore")(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y.reshape(2, -1).mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(y.reshape(2, -1).std(1), 1, atol=1e-4)
    t = Normalizer("zscore")(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), y, atol=1e-5)


def test_constant_image_does_not_divide_by_zero() -> None:
    assert np.isfinite(Normalizer("zscore")(np.full((1, 4, 4), 7.0))).all()


def test_percentile_dataset_fit_from_fingerprint_and_samples() -> None:
    samples = _samples()
    fp = Fingerprint(
        intensity={
            "p0.5": [5.0, 10.0],
            "p99.5": [15.0, 990.0],
            "mean": [0, 0],
            "std": [1, 1],
            "min": [0, 0],
            "max": [1, 1],
        }
    )
    n = Normalizer("percentile").fit(fp)
    y = n(samples[0].image)
    assert y.min() >= 0.0 and y.max() <= 1.0
    np.testing.assert_allclose(n(np.array([[[5.0]], [[500.0]]])).ravel(), [0.0, 490 / 980], rtol=1e-5)
    n2 = Normalizer("percentile", lower=1, upper=99).fit(samples)
    pooled = np.concatenate([s.image.reshape(2, -1) for s in samples], axis=1)
    assert n2.params["high"] == pytest.approx(np.percentile(pooled, 99, axis=1).tolist())
    with pytest.raises(ConfigError, match="fit"):
        Normalizer("percentile")(samples[0].image)


def test_range_from_dtype_and_fixed() -> None:
    n = Normalizer("range").fit(Fingerprint(image_dtype="uint16", intensity={"min": [3.0], "max": [9.0]}))
    assert n.params["min"] == [0.0] and n.params["max"] == [65535.0]
    assert Normalizer("range", min=[10.0], max=[20.0])(np.array([[[15.0]]])).item() == pytest.approx(0.5)


def test_round_trip_through_json() -> None:
    for n in (
        Normalizer("zscore"),
        Normalizer("zscore", scope="dataset").fit(_samples()),
        Normalizer("percentile").fit(_samples()),
        Normalizer("range", min=[0], max=[255]),
        Normalizer("none"),
    ):
        d = json.loads(json.dumps(n.to_dict()))
        back = Normalizer.from_dict(d)
        assert back.to_dict() == n.to_dict()
        x = _samples()[0].image[:1] if n.kind == "range" else _samples()[0].image
        np.testing.assert_allclose(back(x), n(x), rtol=1e-6)
    assert Normalizer.from_dict(None).kind == "none"


def test_bad_config() -> None:
    with pytest.raises(ConfigError, match="kind"):
        Normalizer("minmax")
    with pytest.raises(ConfigError, match="percentiles"):
        Normalizer("percentile", lower=99, upper=1)
    with pytest.raises(ConfigError, match="scope"):
        Normalizer("zscore", scope="batch")


def test_for_image_on_a_lazy_image_is_tile_consistent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unetkit.data.normalize as norm

    img = (RNG.normal(100, 20, (1, 256, 256))).astype(np.float32)
    write_image(tmp_path / "big.tif", img)
    lazy = open_image(tmp_path / "big.tif")
    reads: list[tuple] = []
    real_getitem = type(lazy).__getitem__

    def spy(self, key):
        reads.append(key)
        return real_getitem(self, key)

    monkeypatch.setattr(norm, "SUBSAMPLE_VOXELS", 4096)  # force block subsampling
    monkeypatch.setattr(type(lazy), "__getitem__", spy)
    f = Normalizer("zscore").for_image(lazy)
    monkeypatch.undo()
    assert 1 < len(reads) <= 64  # blocks, not the whole image
    assert sum(np.prod([s.stop - s.start for s in k[1:]]) for k in reads) < img.size // 4
    whole = f(img)
    tiles = np.concatenate([f(img[:, :128]), f(img[:, 128:])], axis=1)
    np.testing.assert_array_equal(whole, tiles)
    assert abs(whole.mean()) < 0.1 and abs(whole.std() - 1) < 0.1  # the subsample's stats are close
