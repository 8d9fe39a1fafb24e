"""Training data streamed from the files: same batches as in memory, O(patch) reads, the one switch rule."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from unetkit.config import DataConfig
from unetkit.data import streamed
from unetkit.data.io import regions as regions_mod
from unetkit.data.io import write_image
from unetkit.data.sampling import PatchSampler
from unetkit.data.streamed import StreamedImage, StreamedMask, choose_reading, decoded_bytes
from unetkit.data.windows import read_window
from unetkit.errors import ConfigError
from unetkit.infer import Predictor
from unetkit.models import create_model
from unetkit.train.data import prepare_data


def _write_set(root: Path, shape: tuple[int, ...], n: int = 4, colour: bool = False, channels: int = 1) -> Path:
    rng = np.random.default_rng(3)
    for i in range(n):
        img = rng.integers(0, 4000, (channels, *shape) if channels > 1 else shape).astype(np.uint16)
        lab = (rng.random(shape) > 0.7).astype(np.uint8) * 200 + (rng.random(shape) > 0.9).astype(np.uint8) * 50
        if colour:
            rgb = np.zeros((*shape, 3), np.uint8)
            rgb[lab == 200] = (255, 0, 0)
            rgb[lab == 250] = (0, 255, 0)
            mask = rgb
        else:
            mask = lab
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        if channels > 1:
            tifffile.imwrite(root / "images" / f"s{i}.tif", img, metadata={"axes": "CYX"})
        else:
            tifffile.imwrite(root / "images" / f"s{i}.tif", img)
        if colour:
            write_image(root / "masks" / f"s{i}.png", np.moveaxis(mask, -1, 0))
        else:
            tifffile.imwrite(root / "masks" / f"s{i}.tif", mask)
    return root


def _batches(data, patch, n=3, seed=5):  # type: ignore[no-untyped-def]
    sampler = PatchSampler(data.train, patch, foreground_fraction=0.5)
    g = torch.Generator().manual_seed(seed)
    return [sampler.sample(4, g) for _ in range(n)]


@pytest.mark.parametrize(
    ("shape", "colour", "channels"),
    [((70, 90), False, 1), ((70, 90), True, 1), ((12, 40, 36), False, 1), ((50, 60), False, 2)],
    ids=["2d", "2d-colour-masks", "3d", "2-channels"],
)
def test_streamed_data_gives_the_same_batches_as_in_memory(tmp_path, shape, colour, channels) -> None:
    root = _write_set(tmp_path / "set", shape, colour=colour, channels=channels)
    mem = prepare_data(DataConfig(path=str(root), read="memory"), seed=1, use_weight_map=False)
    disk = prepare_data(DataConfig(path=str(root), read="disk"), seed=1, use_weight_map=False)
    assert all(isinstance(s.image, StreamedImage) and isinstance(s.mask, StreamedMask) for s in disk.train)
    assert all(isinstance(s.image, np.ndarray) for s in mem.train)
    assert disk.split == mem.split and disk.num_classes == mem.num_classes >= 3
    assert disk.normalizer.to_dict() == mem.normalizer.to_dict()
    patch = (32, 32) if len(shape) == 2 else (8, 16, 16)
    for a, b in zip(_batches(mem, patch), _batches(disk, patch), strict=True):
        assert a.origin == b.origin and a.sample_index == b.sample_index
        assert torch.equal(a.mask, b.mask)
        assert torch.equal(a.image, b.image)
    # the validation images predict the same through the tiler
    name = "unet2d_small" if len(shape) == 2 else "unet3d_small"
    model = create_model(name, in_channels=channels, num_classes=mem.num_classes)
    predictor = Predictor(model.eval(), normalization={"kind": "none"}, tile=32 if len(shape) == 2 else 16)
    for s_mem, s_disk in zip(mem.val, disk.val, strict=True):
        assert np.array_equal(np.asarray(s_mem.mask), np.asarray(s_disk.mask))
        np.testing.assert_allclose(predictor.predict_proba(s_mem.image), predictor.predict_proba(s_disk.image))


def test_a_streamed_patch_reads_only_its_bytes(tmp_path, monkeypatch) -> None:
    n, p = 3000, 64
    root = tmp_path / "big"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[0:n, 0:n]
    tifffile.imwrite(root / "images" / "a.tif", ((yy * 7 + xx) % 251).astype(np.uint8))  # one contiguous strip
    tifffile.imwrite(root / "masks" / "a.tif", ((yy // 50 + xx // 50) % 2).astype(np.uint8))
    data = prepare_data(DataConfig(path=str(root), read="disk", val_fraction=0), seed=0, use_weight_map=False)
    sample = data.train[0]
    sampler = PatchSampler(data.train, p, foreground_fraction=0.5)  # its foreground index reads the mask once
    g = torch.Generator().manual_seed(0)
    counted = {"bytes": 0}
    read = regions_mod.RegionFile.read

    def counting(f, offset, nbytes):  # type: ignore[no-untyped-def]
        view = read(f, offset, nbytes)
        counted["bytes"] += len(view)
        return view

    monkeypatch.setattr(regions_mod.RegionFile, "read", counting)
    for _ in range(5):
        counted["bytes"] = 0
        batch = sampler.sample(1, g)
        (y, x) = batch.origin[0]
        expect = (yy[y : y + p, x : x + p] // 50 + xx[y : y + p, x : x + p] // 50) % 2
        assert np.array_equal(batch.mask[0].numpy(), expect)
        # image and mask: one patch each, never the 9 MB image (the normalisation statistics are frozen)
        assert 0 < counted["bytes"] <= 2 * p * p, counted["bytes"]
    assert sample.image.shape == (1, n, n)


def test_the_switch_rule() -> None:
    gib = 2**30
    assert choose_reading("auto", 2 * gib, [], memory=16 * gib) == (False, "training data in memory (2.00 GiB decoded)")
    stream, why = choose_reading("auto", 5 * gib, [], memory=16 * gib)
    assert stream and "more than 25% of this machine's 16 GiB" in why
    stream, why = choose_reading("auto", 5 * gib, ["data.slice_axis"], memory=16 * gib)
    assert not stream and "data.slice_axis need(s) it" in why
    assert choose_reading("memory", 100 * gib, [], memory=16 * gib)[0] is False
    assert choose_reading("disk", 1, [], memory=16 * gib)[0] is True
    with pytest.raises(ConfigError, match=r"data\.read=disk: data\.target=boundary"):
        choose_reading("disk", 1, ["data.target=boundary"], memory=16 * gib)


def test_decoded_bytes_reads_headers_only(tmp_path) -> None:
    root = _write_set(tmp_path / "set", (70, 90), n=3, channels=2)
    assert decoded_bytes(root) == 3 * 70 * 90 * (4 * 2 + 8)


def test_auto_streams_a_set_larger_than_its_share_of_memory(tmp_path, monkeypatch) -> None:
    root = _write_set(tmp_path / "set", (40, 40), n=3)
    monkeypatch.setattr(streamed, "machine_memory", lambda: 3 * 40 * 40 * 12 * 3)  # the set is 1/3 of "RAM"
    data = prepare_data(DataConfig(path=str(root)), seed=0, use_weight_map=False)
    assert isinstance(data.train[0].image, StreamedImage)
    # the paper's weight map streams too: computed one image at a time, then memory-mapped from the cache
    data = prepare_data(DataConfig(path=str(root)), seed=0, use_weight_map=True, cache_dir=tmp_path / "cache")
    assert isinstance(data.train[0].image, StreamedImage) and isinstance(data.train[0].weight, np.memmap)
    mem = prepare_data(DataConfig(path=str(root), read="memory"), seed=0, use_weight_map=True)
    assert np.array_equal(np.asarray(data.train[0].weight), mem.train[0].weight)
    # an option that changes whole images is refused under disk
    with pytest.raises(ConfigError, match=r"data\.read=disk: data\.slice_axis"):
        prepare_data(DataConfig(path=str(root), read="disk", slice_axis=0), seed=0, use_weight_map=False)


def test_resampling_falls_back_to_memory_or_is_refused_on_disk(tmp_path) -> None:
    root = tmp_path / "vol"
    rng = np.random.default_rng(0)
    for i, sp in enumerate([(4.0, 1.0, 1.0), (2.0, 1.0, 1.0)]):
        write_image(root / "images" / f"v{i}.tif", rng.random((6, 20, 20)).astype(np.float32), spacing=sp)
        write_image(root / "masks" / f"v{i}.tif", (rng.random((6, 20, 20)) > 0.5).astype(np.uint8), spacing=sp)
    with pytest.raises(ConfigError, match=r"data\.target_spacing resamples"):
        prepare_data(DataConfig(path=str(root), read="disk", target_spacing=[3, 1, 1]), seed=0, use_weight_map=False)
    # spacing already at the target: streaming is fine
    data = prepare_data(DataConfig(path=str(root), read="disk", target_spacing=None), seed=0, use_weight_map=False)
    assert isinstance(data.train[0].image, StreamedImage)


def test_prediction_reads_the_next_row_of_tiles_in_the_background() -> None:
    """Each band of tile rows is read once, by the prefetch thread, and the result equals a plain read."""
    rng = np.random.default_rng(0)
    img = rng.random((1, 300, 200)).astype(np.float32)

    class Watched:
        def __init__(self) -> None:
            self.shape, self.dtype, self.threads, self.reads = img.shape, img.dtype, set(), 0

        def __getitem__(self, key):  # type: ignore[no-untyped-def]
            self.threads.add(threading.current_thread().name)
            self.reads += 1
            return img[key]

    model = create_model("unet2d_small", depth=2, width=4).eval()
    predictor = Predictor(model, normalization={"kind": "none"}, tile=64, overlap=0.25)
    watched = Watched()
    got = predictor.predict_proba(watched)
    plain = predictor.iter_slabs(img, reader=lambda start, size: read_window(img, start, size))
    want = np.concatenate([s.proba for s in plain], axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=0)
    rows = len(predictor.plan((300, 200)).axes[0].spans)
    assert watched.reads == rows  # one band per row of tiles
    assert all(t.startswith("unetkit-read") for t in watched.threads)


def test_a_consumer_that_stops_early_leaves_no_thread_behind() -> None:
    img = np.zeros((1, 400, 64), np.float32)
    model = create_model("unet2d_small", depth=2, width=4).eval()
    predictor = Predictor(model, normalization={"kind": "none"}, tile=32)
    before = threading.active_count()
    slabs = predictor.iter_slabs(img)
    next(slabs)
    slabs.close()
    assert threading.active_count() == before
