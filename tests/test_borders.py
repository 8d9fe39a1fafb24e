"""One border rule: training patches, augmentation, prediction tiles and Dask blocks mirror the same way."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from unetkit.augment.intensity import blur_matrices
from unetkit.augment.spatial import affine_grid, resample
from unetkit.data.normalize import Normalizer
from unetkit.data.sampling import PatchSampler
from unetkit.data.windows import fold_index, read_window
from unetkit.infer import Predictor
from unetkit.infer.dask_predict import _block_proba
from unetkit.models import UNet


def reflect_pad(a: np.ndarray, pad: int) -> np.ndarray:
    """numpy's reflect padding of the spatial axes (the convention, written independently of unetkit)."""
    return np.pad(a, [(0, 0)] + [(pad, pad)] * (a.ndim - 1), mode="reflect")


def test_fold_index_is_numpy_reflect_for_ints_arrays_and_tensors() -> None:
    for n in (1, 2, 3, 7):
        coords = np.arange(-25, n + 25)
        want = np.pad(np.arange(n), 25, mode="reflect") if n > 1 else np.zeros(n + 50, int)
        assert fold_index(coords, n).tolist() == want.tolist()
        assert fold_index(torch.from_numpy(coords), n).tolist() == want.tolist()
        assert [fold_index(int(c), n) for c in coords] == want.tolist()
    with pytest.raises(ValueError, match="size 0"):
        fold_index(np.arange(3), 0)


def test_read_window_is_the_same_on_numpy_memmap_and_zarr(tmp_path: Any) -> None:
    zarr = pytest.importorskip("zarr")
    image = np.random.default_rng(0).random((2, 9, 13)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float32, shape=image.shape)
    mm[:] = image
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=image.shape, dtype=np.float32, chunks=(1, 4, 4))
    z[:] = image
    want = reflect_pad(image, 20)[:, 20 - 7 : 20 - 7 + 30, 20 + 5 : 20 + 5 + 25]
    for array in (image, mm, z):
        assert np.array_equal(read_window(array, (-7, 5), (30, 25)), want)
    assert np.array_equal(read_window(image[0], (-7, 5), (30, 25)), want[0])  # no channel axis: masks


@pytest.mark.parametrize("dims", [2, 3])
def test_training_patches_and_prediction_tiles_at_the_border_hold_the_same_pixels(dims: int) -> None:
    """For a valid net, the patch the sampler cuts at origin -margin is the tiler's first input tile, and so on
    for every tile of the plan, including those running past the far border."""
    net = UNet(dims, 1, 2, depth=2, width=2, padding="valid", norm=None).eval()
    shape = (37, 29) if dims == 2 else (9, 11, 7)
    image = np.random.default_rng(1).random((1, *shape)).astype(np.float32)
    seen: list[np.ndarray] = []

    class Spy:
        name, device = "spy", "cpu"

        def __call__(self, batch: np.ndarray) -> np.ndarray:
            seen.extend(batch.copy())
            return np.zeros((len(batch), 2, *net.output_shape(batch.shape[2:])), np.float32)

    tile = 44 if dims == 2 else 40
    predictor = Predictor(net, tile=tile, batch_size=3, normalization={"kind": "none"}, _backend=Spy())
    plan = predictor.plan(shape)
    predictor.predict(image)
    margin = net.margin()
    assert plan.axes[0].spans[0].in_start == -margin
    t = plan.tile_in[0]
    first = reflect_pad(image, t)[(slice(None), *[slice(t - margin, 2 * t - margin)] * dims)]
    assert np.array_equal(seen[0], first)  # the tiler mirrors as numpy's "reflect"

    sample = SimpleNamespace(image=image, mask=(image[0] > 0.5).astype(np.int64), weight=None)
    sampler = PatchSampler([sample], plan.tile_in, output_size=plan.tile_out)
    origins = [tuple(ax.spans[i].in_start for ax, i in zip(plan.axes, t, strict=True)) for t in plan.tiles()]
    assert len(origins) == len(seen) > 1
    batch = sampler._cut([(0, origin, False) for origin in origins])
    for patch, mask, tile_input, origin in zip(batch.image, batch.mask, seen, origins, strict=True):
        assert np.array_equal(patch.numpy(), tile_input), origin
        assert np.array_equal(mask.numpy(), tile_input[0] > 0.5), origin  # the mask is mirrored the same way


@pytest.mark.parametrize("dims", [2, 3])
def test_augmentation_reads_outside_the_patch_by_the_same_rule(dims: int) -> None:
    shape = (7, 9) if dims == 2 else (5, 6, 4)
    x = torch.from_numpy(np.random.default_rng(2).random((1, 1, *shape)))
    identity = affine_grid(torch.eye(dims, dtype=torch.float64)[None], shape)
    for shift in (-11, -3, 2, 5):
        grid = identity.clone()
        grid[..., dims - 1] += 2.0 * shift / shape[0]  # read axis 0 at p + shift (grid order is reversed)
        want = read_window(x[0].numpy(), (shift, *[0] * (dims - 1)), shape)
        modes = ("nearest", "bilinear", "bicubic") if dims == 2 else ("nearest", "bilinear")
        for mode in modes:
            assert np.allclose(resample(x, grid, mode)[0].numpy(), want, atol=1e-9), (shift, mode)
    half = identity.clone()
    half[..., dims - 1] += 2.0 * -1.5 / shape[0]  # between pixels -2 and -1: their mirrors 2 and 1
    rest = [0] * (dims - 1)
    want = 0.5 * (read_window(x[0].numpy(), (-2, *rest), shape) + read_window(x[0].numpy(), (-1, *rest), shape))
    assert np.allclose(resample(x, half, "bilinear")[0].numpy(), want, atol=1e-9)


def test_blur_mirrors_by_the_same_rule() -> None:
    size, sigma = 6, 1.5
    x = torch.rand(size, dtype=torch.float64)
    matrix = blur_matrices(torch.tensor([sigma]), size)[0].double()
    radius = max(1, int(np.ceil(3 * sigma)))  # blur_matrices' kernel radius
    t = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x.numpy(), radius, mode="reflect")
    want = np.convolve(padded, kernel, mode="valid")
    assert np.allclose((matrix @ x).numpy(), want, atol=1e-6)


@pytest.mark.parametrize(("padding", "options"), [("valid", {"tile": 44}), ("same", {"tile": 32, "overlap": 0.5})])
def test_dask_blocks_at_the_border_equal_the_local_tiler(padding: str, options: dict) -> None:
    """A border block, cut as ``map_overlap`` cuts it (chunk plus the halo inside the image), gives the local
    tiler's probabilities there, with the per-image normalisation frozen on the whole image."""
    net = UNet(2, 1, 3, depth=2, width=4, padding=padding).eval()
    image = np.random.default_rng(3).random((1, 90, 70)).astype(np.float32) * 100 + 7
    norm = Normalizer("zscore").to_dict()  # per-image statistics, as training saves by default
    local = Predictor(net, device="cpu", normalization=norm, **options)
    proba = local.predict_proba(image)
    halo = local.plan(image.shape[1:]).tile_in
    frozen = Normalizer.from_dict(norm).freeze(image).to_dict()
    task = {**options, "device": "cpu"}
    for region in ([(0, 40), (0, 35)], [(40, 90), (35, 70)]):  # the top-left and the bottom-right chunk
        box = [slice(max(0, a - h), min(n, b + h)) for (a, b), h, n in zip(region, halo, image.shape[1:], strict=True)]
        block = image[(slice(None), *box)]
        for labels in (True, False):
            location = region if labels else [(0, 3), *region]
            got = _block_proba(
                block, model=net, key=f"border-{padding}", options=task, normalization=frozen, shape=image.shape[1:],
                halo=halo, labels=labels, block_info={None: {"array-location": location}},
            )  # fmt: skip
            want = proba[(slice(None), *(slice(a, b) for a, b in region))]
            if labels:
                assert np.array_equal(got, want.argmax(0))
            else:
                assert np.allclose(got, want, atol=1e-6)
