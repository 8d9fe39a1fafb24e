"""`unetkit predict --dask tcp://HOST:PORT` against a real `dask scheduler` and two `dask worker` processes.

The model is trained (tiny) with the training defaults, so it carries per-image z-score normalisation: the
workers see one block each, yet the labels must equal the local tiler's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unetkit.cli import app
from unetkit.config import load_config
from unetkit.data.io import read_image, write_image
from unetkit.synthetic import synthetic_cells
from unetkit.train import train

pytest.importorskip("distributed")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from dask_workers import dask_cluster


def _tiny_model(root: Path) -> Path:
    for i in range(2):
        s = synthetic_cells((64, 64), seed=i, cell_radius=6)
        write_image(root / "data" / "images" / f"im{i}.tif", s.image)
        write_image(root / "data" / "masks" / f"im{i}.tif", s.instances.astype(np.uint16))
    cfg = load_config(
        overrides=[
            f"data.path={root / 'data'}", "data.patch_size=32", "data.val_fraction=0", "model.args.width=4",
            "train.epochs=1", "train.iterations_per_epoch=2", "train.batch_size=2", "train.device=cpu",
        ]
    )  # fmt: skip
    assert cfg.data.normalization == "zscore"  # the default this test is about
    return train(cfg, root / "run").model_path


@pytest.mark.slow  # three processes to start, a model to train: ~30 s
def test_predict_on_a_scheduler_and_two_worker_processes(tmp_path: Path) -> None:
    import distributed
    import zarr

    model = _tiny_model(tmp_path)
    s = synthetic_cells((400, 380), seed=5, cell_radius=6)
    ramp = np.linspace(0, 120, 380)  # the blocks differ in mean: per-block statistics would change the labels
    write_image(tmp_path / "img.tif", np.clip(s.image.astype(np.float32) * 0.5 + ramp, 0, 255).astype(np.uint8))
    common = [str(model), str(tmp_path / "img.tif"), "--tile", "48", "--quiet"]  # 4 tiles per chunk: 2 x 2 chunks
    local = CliRunner().invoke(app, ["predict", *common, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    reference = read_image(tmp_path / "local" / "img.tif").array

    with dask_cluster(2, tmp_path / "cluster") as address, distributed.Client(address) as client:
        with distributed.get_task_stream(client) as stream:
            result = CliRunner().invoke(app, ["predict", *common, "--out", str(tmp_path / "dask"), "--dask", address])
        assert result.exit_code == 0, result.output
        assert len(client.scheduler_info()["workers"]) == 2
        assert len({t["worker"] for t in stream.data}) == 2  # both worker processes computed chunks
    got = zarr.open_array(str(tmp_path / "dask" / "img.zarr"))[:]
    assert got.shape == reference.shape[-2:] and np.array_equal(got, reference.reshape(got.shape))
