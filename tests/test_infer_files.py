"""Streaming prediction on files: formats, naming, atomicity, never overwriting inputs, bounded slabs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from unetkit.data.io import open_mask, read_image, write_image
from unetkit.errors import ConfigError, DataError
from unetkit.infer import Predictor, expand_inputs, predict_file
from unetkit.infer.outputs import plan_outputs
from unetkit.infer.writers import open_target
from unetkit.modelfile import load_model, save_model
from unetkit.models import UNet


@pytest.fixture
def net2d(tmp_path: Path) -> UNet:
    net = UNet(2, 1, 3, depth=2, width=4).eval()
    save_model(tmp_path / "m.safetensors", net, class_names=["bg", "a", "b"], tile_size=[32, 32])
    return load_model(tmp_path / "m.safetensors")  # type: ignore[return-value]


def test_tiff_in_tiff_out_streams_labels_probabilities_and_overlay(tmp_path: Path, net2d: UNet) -> None:
    image = (np.random.default_rng(0).random((150, 90)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(64, 64))
    pred = Predictor(net2d, device="cpu", overlap=0.5)
    res = predict_file(pred, tmp_path / "big.tif", tmp_path / "out", probabilities=True, overlay=True)
    assert [p.name for p in res.outputs.all()] == ["big.tif", "big_prob.tif", "big_overlay.png"]
    labels = tifffile.imread(tmp_path / "out" / "big.tif")
    expected = pred.predict(image[None])
    assert labels.dtype == np.uint8 and np.array_equal(labels, expected)
    proba = tifffile.imread(tmp_path / "out" / "big_prob.tif")
    assert proba.shape == (3, 150, 90) and proba.dtype == np.float16
    np.testing.assert_allclose(proba.astype(np.float32), pred.predict_proba(image[None]), atol=1e-3)
    assert sum(res.class_counts) == 150 * 90
    overlay = read_image(tmp_path / "out" / "big_overlay.png").array
    assert overlay.shape[0] == 3 and overlay.shape[1] > 150  # image plus legend strip
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("suffix", [".zarr", ".npy", ".png"])
def test_output_format_follows_input(tmp_path: Path, net2d: UNet, suffix: str) -> None:
    image = (np.random.default_rng(1).random((1, 40, 70)) * 255).astype(np.uint8)
    write_image(tmp_path / f"x{suffix}", image)
    pred = Predictor(net2d, device="cpu")
    res = predict_file(pred, tmp_path / f"x{suffix}", tmp_path / "out", probabilities=suffix == ".zarr")
    assert res.outputs.labels.name == f"x{suffix}"
    got = open_mask(res.outputs.labels).read()  # a label PNG is a palette PNG: a mask reader gives the indices
    assert np.array_equal(got.reshape(40, 70), pred.predict(image))
    if suffix == ".zarr":
        assert res.outputs.probabilities is not None and res.outputs.probabilities.name == "x_prob.zarr"


def test_nifti_volume_with_valid_3d_net(tmp_path: Path) -> None:
    net = UNet(3, 1, 2, depth=1, width=2, padding="valid").eval()
    vol = np.random.default_rng(2).random((1, 9, 14, 11)).astype(np.float32)
    write_image(tmp_path / "v.nii.gz", vol, spacing=(2.0, 1.0, 1.0))
    pred = Predictor(net, device="cpu", tile=24)
    res = predict_file(pred, tmp_path / "v.nii.gz", tmp_path / "out", overlay=True)
    out = read_image(res.outputs.labels)
    assert res.outputs.labels.name == "v.nii.gz" and res.outputs.overlay is None
    assert out.spacing == (2.0, 1.0, 1.0) and np.array_equal(out.array[0], pred.predict(vol))


def test_never_overwrites_an_input(tmp_path: Path) -> None:
    write_image(tmp_path / "a.tif", np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(DataError, match="overwrite the input") as exc:
        plan_outputs([tmp_path / "a.tif"], tmp_path, probabilities=False, overlay=False)
    assert (exc.value.file, exc.value.fix) == (str(tmp_path / "a.tif"), "choose another --out folder")
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    for d in ("d1", "d2"):
        write_image(tmp_path / d / "s.png", np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(DataError, match="both write"):
        plan_outputs(
            expand_inputs([tmp_path / "d1", tmp_path / "d2"]), tmp_path / "o", probabilities=False, overlay=False
        )


def test_expand_inputs_files_folders_globs(tmp_path: Path) -> None:
    for name in ("b.png", "a.tif", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_inputs([tmp_path])] == ["a.tif", "b.png"]
    assert [p.name for p in expand_inputs([str(tmp_path / "*.png"), tmp_path / "b.png"])] == ["b.png"]
    with pytest.raises(DataError, match="no such file") as exc:
        expand_inputs([tmp_path / "missing.tif"])
    assert exc.value.file == str(tmp_path / "missing.tif") and exc.value.fix == "check the path"
    assert (
        str(exc.value) == f"{tmp_path / 'missing.tif'}: no such file, folder or matching pattern; fix: check the path"
    )


def test_failed_run_leaves_destination_untouched(tmp_path: Path) -> None:
    dest = tmp_path / "l.tif"
    dest.write_bytes(b"old")
    target = open_target(dest, (10, 10), np.uint8)
    target.write(0, np.ones((5, 10), np.uint8))
    target.abort()
    assert dest.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_slabs_stay_bounded_on_a_tall_image() -> None:
    """Memory grows with the width, never the height: no slab exceeds a row of tiles plus its overlap."""
    net = UNet(2, 1, 2, depth=2, width=2).eval()
    image = np.zeros((1, 3000, 40), np.float32)
    for blend, limit in (("gaussian", 64), ("center", 64)):
        pred = Predictor(net, device="cpu", tile=64, overlap=0.25, blend=blend, batch_size=8)
        rows = [s.proba.shape[1] for s in pred.iter_slabs(image)]
        assert sum(rows) == 3000 and max(rows) <= limit and len(rows) > 40


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def start(self, path: Path, summary: str, tiles: int, megapixels: float) -> None:
        self.events.append(("start", (path.name, tiles)))

    def advance(self, tiles: int) -> None:
        self.events.append(("advance", tiles))

    def predicted(self, result: object) -> None:
        self.events.append(("predicted", result))

    def done(self, result: object) -> None:
        self.events.append(("done", result))


def test_predict_files_is_the_whole_job_with_progress_hooks(tmp_path: Path, net2d: UNet) -> None:
    from unetkit.infer.files import predict_files

    rng = np.random.default_rng(3)
    for name in ("a.png", "b.tif"):
        write_image(tmp_path / "in" / name, (rng.random((1, 40, 50)) * 255).astype(np.uint8))
    pred = Predictor(net2d, device="cpu")
    rec = _Recorder()
    results = predict_files(
        pred, [tmp_path / "in"], tmp_path / "out", probabilities=True, postprocess="remove-islands:2",
        instances="components", progress=rec,
    )  # fmt: skip
    assert [r.input.name for r in results] == ["a.png", "b.tif"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["a.png", "a_prob.tif", "a_instances.tif", "b.tif", "b_prob.tif", "b_instances.tif"]
    )
    a = results[0]
    assert a.postprocessed == [a.outputs.labels, tmp_path / "out" / "a_instances.tif"]
    kinds = [k for k, _ in rec.events]
    assert kinds[0] == "start" and kinds.count("start") == 2 and kinds.count("done") == 2
    assert sum(n for k, n in rec.events if k == "advance") == sum(r.tiles for r in results)
    assert kinds.index("predicted") < kinds.index("done") < kinds.index("start", 1)
    with pytest.raises(ConfigError, match="instances"):
        predict_files(pred, [tmp_path / "in"], tmp_path / "o2", instances="watershed")
    with pytest.raises(ConfigError, match="apply to a model file"):
        predict_files(pred, [tmp_path / "in"], tmp_path / "o2", tile=64)
    assert not (tmp_path / "o2").exists()  # options are checked before any work


def test_a_stack_through_a_2d_network_is_predicted_slice_by_slice(tmp_path) -> None:
    """A model trained with --dims 2 predicts a 3D stack one Z slice at a time, each slice as a 2D image."""
    import torch

    from unetkit import create_model
    from unetkit.infer.files import predict_files
    from unetkit.infer.loading import load_predictor

    torch.manual_seed(0)
    model_path = tmp_path / "m.safetensors"
    save_model(model_path, create_model("unet2d_small", depth=2, width=4).eval(), tile_size=[32, 32])
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, (10, 50, 40)).astype(np.uint8)  # (few pages would read as channels)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    res = predict_files(str(model_path), [tmp_path / "stack.tif"], tmp_path / "out", probabilities=True)
    labels = tifffile.imread(res[0].outputs.labels)
    assert labels.shape == (10, 50, 40)
    predictor = load_predictor(str(model_path))
    for z in range(10):
        plane = stack[z][None]
        assert np.array_equal(labels[z], predictor.predict(plane)), z
    assert res[0].tiles == 10 * predictor.tiles_for((50, 40))


def test_committing_a_compressed_tiff_with_many_encoder_threads_holds_a_batch_not_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tifffile's threaded encoder takes its input tiles in batches (512 MiB by default); the target hands it
    ``ENCODE_BATCH_BYTES`` at a time, so a many-core machine does not hold a large label image at the commit."""
    import tracemalloc

    from unetkit.infer import writers

    monkeypatch.setattr(tifffile.TiffWriter, "_maxworkers", staticmethod(lambda *args: 4))
    monkeypatch.setattr(writers, "ENCODE_BATCH_BYTES", 2**20)
    n = 4096  # 16 MiB of labels: 256 tiles of 64 KiB
    target = open_target(tmp_path / "labels.tif", (n, n), np.uint8, meta=writers.OutputMeta(compression="zlib"))
    rng = np.random.default_rng(0)
    band = rng.integers(0, 3, (256, n), dtype=np.uint8)  # noise: the encoder is slower than the reads
    for y in range(0, n, 256):
        target.write(y, band)
    tracemalloc.start()
    try:
        target.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB held while committing 16 MiB of labels"
    assert tifffile.imread(tmp_path / "labels.tif")[:256].tolist() == band.tolist()
