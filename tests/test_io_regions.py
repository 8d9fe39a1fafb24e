"""Region reads cost O(region) in every layout, and return the pixels of a whole-image read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from unetkit.data.io import open_image, write_image
from unetkit.data.io import regions as regions_mod

RNG = np.random.default_rng(7)
IMG = RNG.integers(0, 250, (3, 203, 181)).astype(np.uint16)

TIFF_LAYOUTS = {
    "contiguous": {},
    "striped16": {"rowsperstrip": 16},
    "striped_lzw": {"rowsperstrip": 16, "compression": "lzw"},
    "tiled": {"tile": (64, 64)},
    "tiled_deflate": {"tile": (64, 64), "compression": "zlib"},
    "tiled_zstd": {"tile": (32, 48), "compression": "zstd"},
    "bigtiff": {"tile": (64, 64), "bigtiff": True},
    "single_strip_lzw": {"compression": "lzw"},
}
REGIONS = [(slice(None), slice(5, 170), slice(30, 101)), (1, slice(0, 1), slice(180, 181)), (slice(0, 2), 7)]


@pytest.mark.parametrize("layout", sorted(TIFF_LAYOUTS))
def test_tiff_region_equals_whole_image(tmp_path: Path, layout: str) -> None:
    path = tmp_path / f"{layout}.tif"
    tifffile.imwrite(path, IMG, **TIFF_LAYOUTS[layout])
    with open_image(path, spatial_dims=2) as img:
        assert type(img.source).__name__ == "TiffRegions"
        whole = img.read()
        assert np.array_equal(whole, IMG)
        for key in REGIONS:
            assert np.array_equal(img[key], whole[key]), key


def test_stack_rgb_planar_and_ome_regions(tmp_path: Path) -> None:
    vol = RNG.integers(0, 255, (6, 70, 90)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", vol, tile=(32, 32), compression="zlib")
    with open_image(tmp_path / "stack.tif", spatial_dims=3) as img:
        assert np.array_equal(img[0, 2:5, 10:40, 50:90], vol[2:5, 10:40, 50:90])
    rgb = RNG.integers(0, 255, (3, 70, 90)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", rgb, photometric="rgb", planarconfig="separate", rowsperstrip=7)
    tifffile.imwrite(tmp_path / "contig.tif", np.moveaxis(rgb, 0, -1), photometric="rgb", compression="lzw")
    for name in ("planar.tif", "contig.tif"):
        with open_image(tmp_path / name) as img:
            assert img.shape == (3, 70, 90) and np.array_equal(img[:, 3:60, 1:2], rgb[:, 3:60, 1:2]), name
    with tifffile.TiffWriter(tmp_path / "pyr.ome.tif") as tw:  # OME-TIFF pyramid: level 0 is read
        tw.write(vol[0], subifds=1, tile=(32, 32), metadata={"axes": "YX"})
        tw.write(vol[0][::2, ::2], subfiletype=1, tile=(32, 32))
    with open_image(tmp_path / "pyr.ome.tif") as img:
        assert img.shape == (1, 70, 90) and np.array_equal(img[0, 5:50, 7:80], vol[0, 5:50, 7:80])


@pytest.mark.parametrize("name", ["a.zarr", "a.npy", "a.nii", "a.nii.gz"])
def test_other_formats_region_equals_whole_image(tmp_path: Path, name: str) -> None:
    write_image(tmp_path / name, IMG)
    with open_image(tmp_path / name, spatial_dims=2) as img:
        whole = img.read()
        assert np.array_equal(whole, IMG)
        for key in REGIONS:
            assert np.array_equal(img[key], whole[key]), key


class _Counting:
    """Counts the bytes region readers take from files (wraps RegionFile.read)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        read = regions_mod.RegionFile.read

        def counted(f: regions_mod.RegionFile, offset: int, nbytes: int) -> bytes:
            view = read(f, offset, nbytes)
            self.bytes += len(view)
            return view

        monkeypatch.setattr(regions_mod.RegionFile, "read", counted)


@pytest.mark.parametrize("kw", [{}, {"rowsperstrip": 16}, {"tile": (256, 256)}])
def test_tile_read_touches_bounded_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kw: dict) -> None:
    n, t = 3000, 256
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.arange(n * n, dtype=np.uint32).reshape(n, n).astype(np.uint8), **kw)
    counter = _Counting(monkeypatch)
    with open_image(path) as img:
        tile = img[:, 1200 : 1200 + t, 1700 : 1700 + t]
        assert tile.shape == (1, t, t)
        expect = (np.arange(1200, 1200 + t)[:, None] * n + np.arange(1700, 1700 + t)[None]).astype(np.uint8)
        assert np.array_equal(tile[0], expect)
    # an uncompressed tile read touches the tile's bytes (tiled: the 4 tiles under it); never O(image)
    bound = 4 * t * t if "tile" in kw else t * t
    assert 0 < counter.bytes <= bound, f"{counter.bytes} bytes read for a {t}x{t} tile of a {n}x{n} image"


def test_compressed_strips_are_decoded_once_per_slab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 1000
    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, RNG.integers(0, 9, (n, n)).astype(np.uint8), rowsperstrip=16, compression="lzw")
    counter = _Counting(monkeypatch)
    with open_image(path) as img:
        for x in range(0, n, 100):  # a row of tiles: each strip under it decoded once
            img[:, 300:400, x : x + 100]
    with tifffile.TiffFile(path) as tif:
        strips = tif.pages.first.databytecounts[300 // 16 : (400 - 1) // 16 + 1]
    assert counter.bytes == sum(strips)


def test_an_uncacheable_compressed_strip_warns_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(regions_mod, "BLOCK_CACHE_BYTES", 1000)
    monkeypatch.setattr(regions_mod.BlockCache.__init__, "__defaults__", (1000,))
    tifffile.imwrite(tmp_path / "one.tif", IMG[0], compression="lzw")
    with caplog.at_level("WARNING"), open_image(tmp_path / "one.tif") as img:
        assert np.array_equal(img[0, 10:20, 10:20], IMG[0, 10:20, 10:20])
    assert "re-tile" in caplog.text and "tifffile" in caplog.text


def test_zarr_chunks_are_decoded_once(tmp_path: Path) -> None:
    import zarr

    z = zarr.create_array(str(tmp_path / "c.zarr"), shape=(300, 300), chunks=(64, 64), dtype="uint8")
    z[...] = IMG[0, :300, :181].max()
    with open_image(tmp_path / "c.zarr") as img:
        grid = img.source
        img[:, 0:100, 0:100]
        cached = grid.cache.nbytes
        img[:, 10:90, 20:150]
        assert cached == 4 * 64 * 64 and grid.cache.nbytes == 6 * 64 * 64


def _rss_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise LookupError


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_pass_over_a_contiguous_file_does_not_stay_resident(tmp_path: Path) -> None:
    """Band by band through a 64 MB contiguous TIFF: no page of the file stays in the process's memory."""
    n = 8000
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((n, n), np.uint8))
    with open_image(path) as img:
        before = _rss_file_kb()
        for y in range(0, n, 256):
            band = img[:, y : y + 256, :]
            assert band.shape == (1, min(256, n - y), n)
        grown_mb = (_rss_file_kb() - before) / 1024
    assert grown_mb < 16, f"{grown_mb:.0f} MB of the 61 MB file stayed resident"


def _mapped_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (``/proc/self/smaps``)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:
            inside = len(head) > 5 and head[5] == str(path)
        elif inside and head[0] == "Rss:":
            total += int(head[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_overlapping_tile_reads_of_a_tiled_file_leave_no_pages_resident(tmp_path: Path) -> None:
    """Prediction's pattern (overlapping tiles across the file's own 512-pixel tiles). Through a memory map the
    kernel mapped whole folios around each faulting page, so even releasing each read's bytes left 87% of this
    file resident (23% releasing 64 KiB windows); positional reads leave none."""
    n, size, step = 4096, 576, 448
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, np.arange(n * n, dtype=np.uint8).reshape(n, n), tile=(512, 512))
    with open_image(path) as img:
        for y in range(0, n - size + step, step):
            for x in range(0, n - size + step, step):
                region = img[:, y : y + size, x : x + size]
                assert region.shape[1:] == (min(size, n - y), min(size, n - x))
        resident_kb = _mapped_kb(path.resolve())
    assert resident_kb < 0.05 * n * n / 1024, f"{resident_kb} kB of the {n * n // 1024} kB file stayed resident"
