"""The one size rule for every format: a header may not declare more pixel data than the file can hold.

The hostile cases (``tests/hostile``) refuse 100000^2 headers in each format; these tests show the rule's other
side: genuine files, however compressible, are read, and the limits are where the message says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unetkit.data.io import common, open_image, write_image
from unetkit.errors import DataError


def test_a_genuine_npy_and_nii_are_read_and_a_short_one_is_refused(tmp_path: Path) -> None:
    a = np.random.default_rng(0).integers(0, 255, (1, 64, 48), dtype=np.uint8)
    for name in ("a.npy", "a.nii"):
        write_image(tmp_path / name, a)
        with open_image(tmp_path / name) as img:
            assert np.array_equal(img[...], a)
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"short_{name}").write_bytes(data[: len(data) // 2])  # truncated: its header still says 64 x 48
        with pytest.raises(DataError, match=r"the header declares \d+ x \d+ pixels") as exc:  # NIfTI: X, Y
            open_image(tmp_path / f"short_{name}")
        assert "must fit in the file" in str(exc.value.fix)


def test_a_sparse_zarr_is_judged_by_the_chunks_it_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unetkit.data.io.zarrio import create_zarr

    # a 64 x 64 array stands in for a huge one: no floor, and at most 2 pixel bytes per stored byte
    monkeypatch.setattr(common, "BOMB_FLOOR_BYTES", 0)
    monkeypatch.setattr(common, "MAX_COMPRESSION", 2)
    full = create_zarr(tmp_path / "full.zarr", (1, 64, 64), np.uint8)
    full[...] = np.random.default_rng(1).integers(0, 255, (1, 64, 64), dtype=np.uint8)
    with open_image(tmp_path / "full.zarr") as img:  # its chunks hold its bytes
        assert img.shape == (1, 64, 64)
    create_zarr(tmp_path / "empty.zarr", (1, 64, 64), np.uint8)  # no chunk written: metadata only
    with pytest.raises(DataError, match="the header declares 64 x 64 pixels") as exc:
        open_image(tmp_path / "empty.zarr")
    assert "MAX_COMPRESSION (now 2 pixel bytes per file byte)" in str(exc.value.fix)
    monkeypatch.setattr(common, "MAX_COMPRESSION", 100_000)  # raised, as the fix says
    with open_image(tmp_path / "empty.zarr") as img:
        assert not img[...].any()


def test_a_zarr_chunk_that_cannot_fit_in_memory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unetkit.data.io import zarrio

    z = zarrio.create_zarr(tmp_path / "one.zarr", (1, 64, 64), np.uint8, chunk_edge=64)
    z[...] = 1
    monkeypatch.setattr(zarrio, "BOMB_FLOOR_BYTES", 0)
    monkeypatch.setattr(common, "available_memory", lambda: 1000)
    with pytest.raises(DataError, match="each 1 x 64 x 64 chunk of the array must be read whole") as exc:
        open_image(tmp_path / "one.zarr")
    assert "rechunk" in str(exc.value.fix)
