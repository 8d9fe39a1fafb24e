"""Dask prediction: a 2-worker local cluster gives exactly the local tiler's labels."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.infer import Predictor
from unetkit.models import UNet

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():  # type: ignore[no-untyped-def]
    import distributed

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.mark.parametrize(
    ("padding", "options"),
    [("valid", {"tile": 44}), ("same", {"tile": 32, "overlap": 0.5, "blend": "gaussian"})],
)
def test_dask_labels_equal_local_tiler(client, tmp_path, padding: str, options: dict) -> None:  # type: ignore[no-untyped-def]
    import zarr

    from unetkit.infer.dask_predict import predict_dask

    net = UNet(2, 1, 3, depth=2, width=4, padding=padding).eval()
    image = np.random.default_rng(0).random((1, 150, 97)).astype(np.float32)
    reference = Predictor(net, device="cpu", **options).predict(image)
    out = predict_dask(net, image, tmp_path / "labels.zarr", client=client, chunk=40, **options)
    got = zarr.open_array(str(out))[:]
    assert len(client.scheduler_info()["workers"]) == 2
    assert np.array_equal(got, reference)


def test_dask_with_per_image_normalisation_and_probabilities(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A model file with the training default (zscore per image): statistics of the whole image, not the block."""
    import zarr

    from unetkit.data.normalize import Normalizer
    from unetkit.infer import load_predictor
    from unetkit.infer.dask_predict import predict_dask
    from unetkit.modelfile import save_model

    net = UNet(2, 1, 3, depth=2, width=4, padding="same").eval()
    model = save_model(tmp_path / "m.safetensors", net, normalization=Normalizer("zscore").to_dict())
    rng = np.random.default_rng(2)
    image = (rng.random((1, 130, 90)) * 40 + np.linspace(0, 200, 90)).astype(np.float32)  # blocks differ in mean
    local = load_predictor(str(model), device="cpu", tile=32, backend="torch")
    reference = local.predict_proba(image)
    out = predict_dask(
        str(model), image, tmp_path / "l.zarr", probabilities=tmp_path / "p.zarr", client=client, chunk=40,
        tile=32, backend="torch",
    )  # fmt: skip
    assert np.array_equal(zarr.open_array(str(out))[:], reference.argmax(0))
    proba = zarr.open_array(str(tmp_path / "p.zarr"))
    assert proba.dtype == np.float16 and proba.shape == reference.shape
    assert np.abs(proba[:].astype(np.float32) - reference).max() < 1e-3


def test_cli_predict_dask_on_a_scheduler_address(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import zarr
    from typer.testing import CliRunner

    from unetkit.cli import app
    from unetkit.data.io import write_image
    from unetkit.data.normalize import Normalizer
    from unetkit.modelfile import load_model, save_model

    net = UNet(2, 1, 2, depth=2, width=4, padding="valid").eval()
    model = save_model(tmp_path / "m.safetensors", net, normalization=Normalizer("zscore").to_dict())
    image = (np.random.default_rng(1).random((1, 120, 90)) * 255).astype(np.uint8)
    write_image(tmp_path / "img.zarr", image)
    address = client.scheduler.address
    args = ["predict", str(model), str(tmp_path / "img.zarr"), "--out", str(tmp_path / "o"), "--tile", "60"]
    result = CliRunner().invoke(app, [*args, "--dask", address, "--probabilities", "--prob-dtype", "uint8"])
    assert result.exit_code == 0, result.output
    reference = Predictor(load_model(model), tile=60, device="cpu").predict_proba(image)
    assert np.array_equal(zarr.open_array(str(tmp_path / "o" / "img.zarr"))[:], reference.argmax(0))
    proba = zarr.open_array(str(tmp_path / "o" / "img_prob.zarr"))[:]
    assert proba.dtype == np.uint8 and np.abs(proba - reference * 255).max() <= 0.51


def test_many_files_keep_their_own_statistics_and_options(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Workers reuse one predictor per model file and options, but each image gets its own statistics."""
    import zarr

    from unetkit.data.io import write_image
    from unetkit.data.normalize import Normalizer
    from unetkit.infer import load_predictor
    from unetkit.infer.dask_predict import predict_files_dask
    from unetkit.modelfile import save_model

    net = UNet(2, 1, 3, depth=2, width=4, padding="same").eval()
    model = str(save_model(tmp_path / "m.safetensors", net, normalization=Normalizer("zscore").to_dict()))
    rng = np.random.default_rng(3)
    images = {"dark": rng.random((1, 70, 60)) * 30, "bright": rng.random((1, 70, 60)) * 30 + 200}
    for name, image in images.items():
        write_image(tmp_path / f"{name}.npy", image.astype(np.float32))
    files = [tmp_path / "dark.npy", tmp_path / "bright.npy"]
    for tile in (32, 48):
        out = tmp_path / f"o{tile}"
        predict_files_dask(model, files, out, address=client.scheduler.address, tile=tile, backend="torch", chunk=40)
        for name, image in images.items():
            want = load_predictor(model, tile=tile, backend="torch", device="cpu").predict(image.astype(np.float32))
            assert np.array_equal(zarr.open_array(str(out / f"{name}.zarr"))[:], want), (name, tile)


def test_dask_restores_with_a_restoration_model(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A restoration model file over the cluster: the restored image in the targets' range, as a local run."""
    import zarr

    from unetkit.errors import ConfigError
    from unetkit.infer.dask_predict import predict_dask
    from unetkit.infer.loading import load_predictor
    from unetkit.modelfile import save_model

    net = UNet(2, 1, 2, depth=2, width=4, norm=None)
    scaling = {"kind": "range", "params": {"min": [100.0, -1.0], "max": [300.0, 1.0]}}
    path = str(save_model(tmp_path / "r.safetensors", net, task="restore", target_normalization=scaling))
    image = np.random.default_rng(3).random((1, 130, 90)).astype(np.float32)
    reference = load_predictor(path, device="cpu", backend="torch", tile=32).restore(image)
    out = predict_dask(path, image, tmp_path / "restored.zarr", client=client, chunk=40, tile=32, backend="torch")
    got = zarr.open_array(str(out))[:]
    assert got.shape == (2, 130, 90) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-4)
    with pytest.raises(ConfigError, match=r"probabilities: segmentation outputs, but .* is a restoration model"):
        predict_dask(path, image, tmp_path / "x.zarr", probabilities=tmp_path / "p.zarr", client=client, tile=32)
