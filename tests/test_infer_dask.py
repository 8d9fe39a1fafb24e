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


def test_cli_predict_dask_on_a_scheduler_address(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import zarr
    from typer.testing import CliRunner

    from unetkit.cli import app
    from unetkit.data.io import write_image
    from unetkit.modelfile import load_model, save_model

    net = UNet(2, 1, 2, depth=2, width=4, padding="valid").eval()
    model = save_model(tmp_path / "m.safetensors", net)
    image = (np.random.default_rng(1).random((1, 120, 90)) * 255).astype(np.uint8)
    write_image(tmp_path / "img.zarr", image)
    address = client.scheduler.address
    args = ["predict", str(model), str(tmp_path / "img.zarr"), "--out", str(tmp_path / "o"), "--tile", "60"]
    result = CliRunner().invoke(app, [*args, "--dask", address, "--backend", "torch"])
    assert result.exit_code == 0, result.output
    reference = Predictor(load_model(model), tile=60, device="cpu").predict(image)
    assert np.array_equal(zarr.open_array(str(tmp_path / "o" / "img.zarr"))[:], reference)
