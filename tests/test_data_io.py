from __future__ import annotations

import importlib.util
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from unetkit.data.io import ImageData, image_format, open_image, read_image, read_mask, write_image
from unetkit.errors import DataError

RNG = np.random.default_rng(0)


def _img(shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    hi = 250 if dtype == np.uint8 else 60000
    return RNG.integers(0, hi, size=shape).astype(dtype)


@pytest.mark.parametrize(
    ("name", "shape", "dtype", "spacing"),
    [
        ("grey.png", (1, 20, 30), np.uint8, None),
        ("grey16.png", (1, 20, 30), np.uint16, None),
        ("rgb.png", (3, 20, 30), np.uint8, None),
        ("rgba.png", (4, 20, 30), np.uint8, None),
        ("grey.bmp", (1, 20, 30), np.uint8, None),
        ("rgb.bmp", (3, 20, 30), np.uint8, None),
        ("t8.tif", (1, 20, 30), np.uint8, (0.5, 0.25)),
        ("t16.tiff", (2, 20, 30), np.uint16, None),
        ("tf.tif", (1, 5, 20, 30), np.float32, (3.0, 1.0, 0.5)),
        ("t4c.tif", (4, 5, 20, 30), np.uint16, None),
        ("v.nii", (1, 5, 20, 30), np.int16, (2.0, 0.8, 0.7)),
        ("v.nii.gz", (2, 5, 20, 30), np.float32, (2.0, 0.8, 0.7)),
        ("i2.nii.gz", (1, 20, 30), np.uint8, (0.8, 0.7)),
        ("i2c.nii.gz", (3, 20, 30), np.uint8, None),
        ("a.npy", (1, 20, 30), np.uint16, None),
        ("a3.npy", (2, 5, 20, 30), np.float32, None),
        ("a.zarr", (3, 20, 30), np.uint8, (0.5, 0.5)),
        ("v.zarr", (1, 5, 20, 30), np.uint16, (4.0, 1.0, 1.0)),
    ],
)
def test_round_trip(tmp_path: Path, name: str, shape: tuple[int, ...], dtype: type, spacing: tuple | None) -> None:
    arr = _img(shape, dtype)
    write_image(tmp_path / name, arr, spacing=spacing)
    data = read_image(tmp_path / name)
    assert isinstance(data, ImageData)
    assert data.array.dtype == arr.dtype
    np.testing.assert_array_equal(data.array, arr)
    if spacing is not None:
        assert data.spacing == pytest.approx(spacing)
    lazy = open_image(tmp_path / name)
    assert lazy.shape == arr.shape and lazy.dtype == arr.dtype and lazy.ndim == arr.ndim
    region = (slice(None), *(slice(1, s - 1, 2) for s in shape[1:]))
    np.testing.assert_array_equal(lazy[region], arr[region])
    np.testing.assert_array_equal(lazy[0, ..., 3], arr[0, ..., 3])


def test_jpeg_round_trip_is_close(tmp_path: Path) -> None:
    arr = np.full((3, 16, 16), 100, np.uint8)
    write_image(tmp_path / "a.jpg", arr)
    back = read_image(tmp_path / "a.jpg").array
    assert back.shape == (3, 16, 16) and np.abs(back.astype(int) - 100).max() <= 2


def test_rgb_channels_last_becomes_first(tmp_path: Path) -> None:
    hwc = _img((20, 30, 3))
    tifffile.imwrite(tmp_path / "rgb.tif", hwc, photometric="rgb")
    np.save(tmp_path / "rgb.npy", hwc)
    for name in ("rgb.tif", "rgb.npy"):
        np.testing.assert_array_equal(read_image(tmp_path / name).array, np.moveaxis(hwc, -1, 0))


def test_multipage_tiff_is_3d(tmp_path: Path) -> None:
    stack = _img((7, 20, 30), np.uint16)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tw:
        for page in stack:  # separate pages, no shape metadata: a plain multi-page file
            tw.write(page, metadata=None)
    data = read_image(tmp_path / "pages.tif")
    assert data.array.shape == (1, 7, 20, 30)
    np.testing.assert_array_equal(data.array[0], stack)
    # forced 2D, the pages become channels
    assert read_image(tmp_path / "pages.tif", spatial_dims=2).array.shape == (7, 20, 30)


def test_imagej_hyperstack_spacing(tmp_path: Path) -> None:
    vol = _img((4, 2, 10, 12), np.uint16)  # Z C Y X
    tifffile.imwrite(
        tmp_path / "ij.tif", vol, imagej=True, resolution=(1 / 0.2, 1 / 0.3), metadata={"spacing": 1.5, "axes": "ZCYX"}
    )
    data = read_image(tmp_path / "ij.tif")
    assert data.array.shape == (2, 4, 10, 12)
    np.testing.assert_array_equal(data.array, vol.transpose(1, 0, 2, 3))
    assert data.spacing == pytest.approx((1.5, 0.3, 0.2))


def test_bigtiff_tiled_region_read_is_lazy(tmp_path: Path) -> None:
    """A 8192x8192 compressed BigTIFF (64 MiB decoded): a region read stays far below the full size."""
    n, t = 8192, 512
    path = tmp_path / "big.tif"

    def tiles():
        for ty in range(n // t):
            for tx in range(n // t):
                yield np.full((t, t), (ty * 16 + tx) % 251, np.uint8)

    tifffile.imwrite(path, tiles(), shape=(n, n), dtype=np.uint8, tile=(t, t), compression="zlib", bigtiff=True)
    assert path.stat().st_size < 5_000_000
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    img = open_image(path)
    assert img.shape == (1, n, n) and type(img.source).__name__ == "TiffRegions"
    tracemalloc.start()
    region = img[:, 1000:1100, 5000:5300]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    img.close()
    assert region.shape == (1, 100, 300)
    assert (region[0, 0, 0], region[0, -1, -1]) == ((1 * 16 + 9) % 251, (2 * 16 + 10) % 251)
    assert peak < 8 * 2**20, f"region read allocated {peak / 2**20:.1f} MiB"


def test_npy_and_nifti_are_memory_mapped(tmp_path: Path) -> None:
    arr = _img((1, 6, 40, 50), np.uint16)
    write_image(tmp_path / "a.npy", arr)
    write_image(tmp_path / "a.nii", arr, spacing=(1.0, 1.0, 1.0))
    assert isinstance(open_image(tmp_path / "a.npy").source, np.memmap)
    lazy = open_image(tmp_path / "a.nii")
    assert type(lazy.source).__name__ == "ArrayProxy"
    np.testing.assert_array_equal(lazy[:, 2:4, 10:20, 5:9], arr[:, 2:4, 10:20, 5:9])


def test_zarr_group_holding_an_array(tmp_path: Path) -> None:
    import zarr

    arr = _img((2, 4, 16, 16), np.uint16)
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("small", shape=(3,), dtype="uint8")
    z = group.create_array("raw", shape=arr.shape, dtype=arr.dtype, chunks=(1, 2, 8, 8))
    z[...] = arr
    np.testing.assert_array_equal(read_image(tmp_path / "g.zarr").array, arr)


def test_ome_zarr_multiscales(tmp_path: Path) -> None:
    import zarr

    arr = _img((5, 16, 16), np.uint8)  # Z Y X, no channel axis
    group = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    group.create_array("0", shape=arr.shape, dtype=arr.dtype)[...] = arr
    group.attrs["multiscales"] = [
        {
            "axes": [{"name": "z"}, {"name": "y"}, {"name": "x"}],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]}],
        }
    ]
    data = read_image(tmp_path / "ome.zarr")
    assert data.array.shape == (1, 5, 16, 16) and data.spacing == (2.0, 0.5, 0.5)


def test_read_mask_shapes(tmp_path: Path) -> None:
    from PIL import Image

    grey = np.array([[0, 255], [255, 0]], np.uint8)
    write_image(tmp_path / "g.png", grey)
    np.testing.assert_array_equal(read_mask(tmp_path / "g.png"), grey)
    rgb = np.zeros((3, 2, 2), np.uint8)
    rgb[0, 0, 0] = 200
    write_image(tmp_path / "c.png", rgb)
    assert read_mask(tmp_path / "c.png").shape == (2, 2, 3)
    write_image(tmp_path / "same.png", np.stack([grey] * 3))
    np.testing.assert_array_equal(read_mask(tmp_path / "same.png"), grey)
    pal = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), [[0, 1], [2, 1]])  # indices kept
    assert read_image(tmp_path / "p.png").array.shape == (3, 2, 2)  # images get the colours


@pytest.mark.parametrize("name", ["e.png", "e.tif", "e.nii.gz", "e.npy", "e.jpg"])
def test_empty_file_is_a_data_error(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match=r"e\..*0 bytes"):
        read_image(tmp_path / name)


@pytest.mark.parametrize("name", ["t.png", "t.tif", "t.nii.gz", "t.npy"])
def test_truncated_file_is_a_data_error(tmp_path: Path, name: str) -> None:
    write_image(tmp_path / name, _img((1, 64, 64)))
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{name}.*(unreadable|truncated|failed)"):
        read_image(tmp_path / name)


def test_garbage_and_missing_and_unknown(tmp_path: Path) -> None:
    (tmp_path / "g.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match=r"g\.tif"):
        read_image(tmp_path / "g.tif")
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(DataError, match="unknown image format"):
        image_format(tmp_path / "x.gif")


def _one_line_with_fields(exc: DataError, file: Path) -> None:
    """A reader's error keeps file, problem and fix apart, and ``str()`` names each once, on one line."""
    assert exc.file == str(file) and exc.problem and exc.fix
    assert str(file) not in exc.problem and "fix:" not in exc.problem
    assert str(exc) == f"{file}: {exc.problem}; fix: {exc.fix}" and "\n" not in str(exc)


@pytest.mark.parametrize("name", ["e.png", "e.tif", "e.nii.gz", "e.npy"])
def test_reader_errors_are_data_not_text(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError) as empty:
        read_image(tmp_path / name)
    _one_line_with_fields(empty.value, tmp_path / name)
    assert (empty.value.problem, empty.value.fix) == (
        "file is empty (0 bytes)",
        "re-export it or remove it from the dataset",
    )
    write_image(tmp_path / name, _img((1, 64, 64)))
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as truncated:
        read_image(tmp_path / name)
    _one_line_with_fields(truncated.value, tmp_path / name)
    with pytest.raises(DataError) as missing:
        read_image(tmp_path / "missing.png")
    _one_line_with_fields(missing.value, tmp_path / "missing.png")
    with pytest.raises(DataError) as unknown:
        image_format(tmp_path / "x.gif")
    _one_line_with_fields(unknown.value, tmp_path / "x.gif")
    with pytest.raises(DataError) as unwritable:
        write_image(tmp_path / "f.png", np.zeros((1, 4, 4), np.float32))
    _one_line_with_fields(unwritable.value, tmp_path / "f.png")


def test_write_rejects_what_the_format_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot store"):
        write_image(tmp_path / "f.png", np.zeros((1, 4, 4), np.float32))
    with pytest.raises(DataError, match="spacing"):
        write_image(tmp_path / "s.tif", np.zeros((1, 4, 4), np.uint8), spacing=(1.0,))
    with pytest.raises(DataError, match="spacing"):
        write_image(tmp_path / "s.tif", np.zeros((1, 4, 4), np.uint8), spacing=(1.0, 1.0, 1.0), spatial_dims=2)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_write_is_atomic_and_overwrites(tmp_path: Path) -> None:
    for name in ("a.tif", "a.zarr", "a.npy"):
        write_image(tmp_path / name, np.zeros((1, 4, 4), np.uint8))
        write_image(tmp_path / name, np.ones((1, 4, 4), np.uint8))
        assert read_image(tmp_path / name).array.max() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.tif", "a.zarr"]


def test_bool_and_spatial_only_arrays(tmp_path: Path) -> None:
    write_image(tmp_path / "b.png", np.eye(4, dtype=bool))
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), np.eye(4, dtype=np.uint8))
    write_image(tmp_path / "v.tif", np.zeros((3, 8, 8), np.uint8), spatial_dims=3)
    assert read_image(tmp_path / "v.tif").array.shape == (1, 3, 8, 8)
    assert read_image(tmp_path / "v.tif", spatial_dims=3).spatial_dims == 3
    # an OME-TIFF drops the size-1 C axis, so a one-channel stack forced 2D reads Z as channels (as any
    # Z stack); a multi-channel volume cannot be read as 2D
    write_image(tmp_path / "v2.tif", np.zeros((2, 3, 8, 8), np.uint8), spatial_dims=3)
    with pytest.raises(DataError, match="expected 2D"):
        read_image(tmp_path / "v2.tif", spatial_dims=2)


def test_three_page_tiff_forced_3d(tmp_path: Path) -> None:
    vol = _img((3, 8, 8))
    tifffile.imwrite(tmp_path / "v.tif", vol, photometric="rgb", planarconfig="separate")  # a planar "RGB" file
    assert read_image(tmp_path / "v.tif").array.shape == (3, 8, 8)
    np.testing.assert_array_equal(read_image(tmp_path / "v.tif", spatial_dims=3).array[0], vol)
    np.testing.assert_array_equal(read_mask(tmp_path / "v.tif", spatial_dims=3), vol)


@pytest.mark.parametrize("name", ["x.png", "x.tif", "x.nii.gz", "x.npy", "x.zarr"])
def test_a_bug_inside_unetkit_propagates_and_is_not_called_a_bad_file(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import unetkit.data.io.lazy as lazy

    write_image(tmp_path / name, _img((1, 16, 16)))

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug in unetkit")

    for module in ("pil", "tiff", "nifti", "npy", "zarrio"):  # every reader builds its layout with this
        monkeypatch.setattr(f"unetkit.data.io.{module}.layout_from_axes", broken)
    with pytest.raises(KeyError, match="a bug in unetkit"):
        read_image(tmp_path / name)
    monkeypatch.undo()
    monkeypatch.setattr(lazy, "_arrange", broken)  # a bug after the region is read, in a lazy read
    with pytest.raises(KeyError, match="a bug in unetkit"):
        open_image(tmp_path / name)[:, 0:4, 0:4]
    monkeypatch.undo()
    assert read_image(tmp_path / name).array.shape == (1, 16, 16)


def test_a_failing_reader_region_read_is_a_data_error(tmp_path: Path) -> None:
    # a shaped (non-OME) TIFF: its series comes from the header (a truncated OME-TIFF: tests/test_ome.py)
    tifffile.imwrite(tmp_path / "v.tif", _img((1, 4, 64, 64)), metadata={"axes": "CZYX"}, photometric="minisblack")
    data = (tmp_path / "v.tif").read_bytes()
    (tmp_path / "v.tif").write_bytes(data[: len(data) // 2])  # header intact, the last slices missing
    img = open_image(tmp_path / "v.tif")
    assert img.shape == (1, 4, 64, 64)
    with pytest.raises(DataError, match=r"v\.tif: reading region .* truncated or corrupt"):
        img[:, 3]


def test_a_tiff_codec_that_needs_imagecodecs_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    Image.fromarray(_img((32, 32))).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    if importlib.util.find_spec("imagecodecs") is not None:  # make tifffile behave as it does without it
        codecs = type(tifffile.TIFF.DECOMPRESSORS)
        lookup = codecs.__getitem__

        def without_imagecodecs(self: object, key: int) -> object:
            if key == 5:
                raise KeyError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")
            return lookup(self, key)  # type: ignore[arg-type]

        monkeypatch.setattr(codecs, "__getitem__", without_imagecodecs)
    with pytest.raises(DataError, match=r"lzw\.tif: the TIFF is compressed with LZW.*'imagecodecs'.*pip install"):
        read_image(tmp_path / "lzw.tif")


def test_one_bigtiff_rule_for_write_image_and_the_streaming_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unetkit.data.io import tiff
    from unetkit.infer.writers import open_target

    arr = _img((1, 20, 30))
    monkeypatch.setattr(tiff, "BIGTIFF_BYTES", arr.nbytes - 1)
    write_image(tmp_path / "w.tif", arr, spacing=(0.5, 0.25))
    target = open_target(tmp_path / "s.tif", arr.shape[1:], arr.dtype, spacing=(0.5, 0.25))
    target.write(0, arr[0])
    target.commit()
    monkeypatch.setattr(tiff, "BIGTIFF_BYTES", arr.nbytes)
    write_image(tmp_path / "c.tif", arr)
    for name, big in (("w.tif", True), ("s.tif", True), ("c.tif", False)):
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.is_bigtiff is big, name
        img = read_image(tmp_path / name)
        np.testing.assert_array_equal(img.array, arr)
        assert img.spacing == (None if name == "c.tif" else (0.5, 0.25))


def test_zarr_stores_are_replaced_whole_by_every_writer(tmp_path: Path) -> None:
    from unetkit.infer.writers import open_target

    dest = tmp_path / "z.zarr"
    write_image(dest, np.zeros((1, 300, 40), np.uint8))
    target = open_target(dest, (2, 300, 40), np.uint8, lead=1, spacing=(2.0, 1.0))
    target.write(0, np.ones((2, 300, 40), np.uint8))
    target.abort()  # an aborted writer leaves the old store as it was
    assert read_image(dest).array.shape == (1, 300, 40)
    target = open_target(dest, (2, 300, 40), np.uint8, lead=1, spacing=(2.0, 1.0))
    target.write(0, np.ones((2, 300, 40), np.uint8))
    target.commit()
    img = read_image(dest)
    assert img.array.shape == (2, 300, 40) and img.array.min() == 1 and img.spacing == (2.0, 1.0)
    import zarr

    written = zarr.open_array(str(dest))
    assert written.chunks == (1, 256, 40) and list(written.metadata.dimension_names) == ["c", "y", "x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.zarr"]  # no temporary or old folders left


def test_malformed_metadata_is_a_data_error(tmp_path: Path) -> None:
    import zarr

    z = zarr.create_array(str(tmp_path / "s.zarr"), shape=(1, 8, 8), dtype="uint8")
    z.attrs["spacing"] = ["wide", "tall"]
    with pytest.raises(DataError, match=r"s\.zarr: malformed spacing metadata"):
        read_image(tmp_path / "s.zarr")
    g = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    g.create_array("0", shape=(8, 8), dtype="uint8")
    g.attrs["multiscales"] = [{"datasets": []}]
    with pytest.raises(DataError, match=r"ome\.zarr: malformed OME-Zarr"):
        read_image(tmp_path / "ome.zarr")
