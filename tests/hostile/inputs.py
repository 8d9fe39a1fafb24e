"""Generators of hostile inputs: each writes one bad file (or folder) and returns its path."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def png_bomb(path: Path, side: int = 100_000) -> Path:
    """A valid PNG header claiming ``side`` x ``side`` grey pixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def tiff_bomb(path: Path, side: int = 100_000) -> Path:
    """A little-endian classic TIFF whose one strip claims ``side`` x ``side`` uncompressed uint8 pixels."""
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value
        (256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 12 * 11 + 4), (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, side * side % 2**32),
        (284, 3, 1, 1), (339, 3, 1, 1),
    ]  # fmt: skip
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + b"\0" * 256)
    return path


def nan_image(path: Path, shape: tuple[int, int] = (64, 64), everywhere: bool = False) -> Path:
    """A float32 TIFF with NaN and Inf pixels (only NaN with ``everywhere``)."""
    from unetkit.data.io import write_image

    a = np.random.default_rng(0).random(shape, dtype=np.float32)
    a[:8] = np.nan
    a[-4:, :4] = np.inf
    if everywhere:
        a[:] = np.nan
    write_image(path, a)
    return path


def rgb_image(path: Path, shape: tuple[int, int] = (64, 64)) -> Path:
    """An RGB PNG (three channels)."""
    from unetkit.data.io import write_image

    write_image(path, np.random.default_rng(1).integers(0, 255, (3, *shape), dtype=np.uint8))
    return path


def tiff_huge_tag(path: Path) -> Path:
    """A TIFF whose StripByteCounts tag claims 2**30 values stored past the end of the file."""
    entries = [
        (256, 4, 1, 64), (257, 4, 1, 64), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 2**30, 4096), (277, 3, 1, 1), (278, 4, 1, 64), (279, 4, 2**30, 8192),
    ]  # fmt: skip
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + b"\0" * 64)
    return path


def zarr_bomb(path: Path, side: int = 100_000, version: int = 2) -> Path:
    """A zarr array (v2 ``.zarray`` or v3 ``zarr.json``) declaring ``side`` x ``side`` uint8 pixels, no chunks."""
    import json

    path.mkdir(parents=True, exist_ok=True)
    if version == 2:
        meta = {
            "zarr_format": 2, "shape": [side, side], "chunks": [256, 256], "dtype": "|u1", "compressor": None,
            "fill_value": 0, "order": "C", "filters": None,
        }  # fmt: skip
        (path / ".zarray").write_text(json.dumps(meta))
    else:
        meta = {
            "zarr_format": 3, "node_type": "array", "shape": [side, side], "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [256, 256]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0, "codecs": [{"name": "bytes"}], "attributes": {},
        }  # fmt: skip
        (path / "zarr.json").write_text(json.dumps(meta))
    return path


def npy_bomb(path: Path, side: int = 100_000) -> Path:
    """A ``.npy`` whose header declares ``side`` x ``side`` uint8 pixels, followed by 64 bytes."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": (side, side)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue() + b"\0" * 64)
    return path


def nifti_bomb(path: Path, side: int = 100_000) -> Path:
    """A NIfTI-2 file (``.nii``, or gzip-compressed for ``.nii.gz``) declaring ``side`` x ``side`` uint8 voxels
    with 64 bytes of data (NIfTI-1 dims stop at 32767)."""
    import gzip

    import nibabel as nib

    header = nib.Nifti2Header()
    header.set_data_shape((side, side))
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 544  # the 540-byte header and the 4-byte extension flag
    body = header.binaryblock + b"\0" * 4 + b"\0" * 64
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(body) if path.name.endswith(".gz") else body)
    return path


def grey_image(path: Path, shape: tuple[int, int] = (64, 64)) -> Path:
    """A one-channel uint8 image."""
    from unetkit.data.io import write_image

    write_image(path, np.random.default_rng(2).integers(0, 255, shape, dtype=np.uint8))
    return path
