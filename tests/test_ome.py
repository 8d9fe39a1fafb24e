"""OME-TIFF and OME-Zarr: spacing read from every kind of metadata, compressed and OME outputs, streamed pyramids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from unetkit.data.io import open_image, read_image, write_image
from unetkit.errors import ConfigError, DataError
from unetkit.infer.writers import OutputMeta, open_target

RNG = np.random.default_rng(0)


def test_ome_tiff_physical_sizes_with_units_are_spacing_in_micrometres(tmp_path: Path) -> None:
    vol = RNG.integers(0, 255, (2, 4, 16, 20)).astype(np.uint8)
    meta = {
        "axes": "CZYX",
        "PhysicalSizeX": 250.0,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 0.25,
        "PhysicalSizeZ": 0.002,
        "PhysicalSizeZUnit": "mm",
    }
    tifffile.imwrite(tmp_path / "a.ome.tif", vol, ome=True, photometric="minisblack", metadata=meta)
    img = open_image(tmp_path / "a.ome.tif")
    assert img.shape == (2, 4, 16, 20)
    assert img.spacing == pytest.approx((2.0, 0.25, 0.25))
    np.testing.assert_array_equal(img[:, 1, 2:5], vol[:, 1, 2:5])


def test_imagej_unit_and_centimetre_resolution_are_converted(tmp_path: Path) -> None:
    vol = np.zeros((3, 8, 8), np.uint16)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        vol,
        imagej=True,
        resolution=(1 / 200, 1 / 100),
        metadata={"spacing": 500, "unit": "nm", "axes": "ZYX"},
    )
    assert read_image(tmp_path / "ij.tif").spacing == pytest.approx((0.5, 0.1, 0.2))
    tifffile.imwrite(tmp_path / "cm.tif", vol[0], resolution=(1e4, 2e4), resolutionunit="CENTIMETER")
    assert read_image(tmp_path / "cm.tif").spacing == pytest.approx((0.5, 1.0))


def test_written_tiffs_are_ome_with_spacing_and_channel_names(tmp_path: Path) -> None:
    arr = RNG.random((3, 20, 30)).astype(np.float32)
    target = open_target(
        tmp_path / "p.tif",
        arr.shape,
        arr.dtype,
        lead=1,
        spacing=(0.5, 0.25),
        meta=OutputMeta(names=["bg", "cell", "edge"]),
    )
    target.write(0, arr[:, :7])
    target.write(7, arr[:, 7:])
    target.commit()
    with tifffile.TiffFile(tmp_path / "p.tif") as tif:
        assert tif.is_ome and 'Name="edge"' in tif.ome_metadata and 'PhysicalSizeX="0.25"' in tif.ome_metadata
        np.testing.assert_array_equal(tif.asarray(), arr)
    assert open_image(tmp_path / "p.tif").spacing == (0.5, 0.25)


@pytest.mark.parametrize("compression", ["zlib", "lzw", "zstd"])
def test_compressed_tiff_target_round_trips_2d_and_3d(tmp_path: Path, compression: str) -> None:
    for shape, lead in (((600, 300), 0), ((2, 3, 70, 290), 1)):
        arr = (RNG.random(shape) * 3).astype(np.uint8)
        dest = tmp_path / f"{len(shape)}.tif"
        target = open_target(
            dest,
            shape,
            arr.dtype,
            lead=lead,
            spacing=(1.0,) * (len(shape) - lead),
            meta=OutputMeta(compression=compression),
        )
        axis = lead
        for start in range(0, shape[axis], 2 if lead else 250):
            target.write(start, arr[(slice(None),) * axis + (slice(start, start + (2 if lead else 250)),)])
        target.commit()
        with tifffile.TiffFile(dest) as tif:
            name = {"zlib": "ADOBE_DEFLATE", "lzw": "LZW", "zstd": "ZSTD"}[compression]
            assert tif.pages[0].compression.name == name and tif.pages[0].is_tiled
        np.testing.assert_array_equal(read_image(dest).array.reshape(arr.shape), arr)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no scratch left


def test_compression_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="zlib, lzw, zstd, none"):
        open_target(tmp_path / "a.tif", (4, 4), np.uint8, meta=OutputMeta(compression="jpeg2000"))
    with pytest.raises(DataError, match="applies to TIFF"):
        open_target(tmp_path / "a.zarr", (4, 4), np.uint8, meta=OutputMeta(compression="zlib"))


def test_truncated_ome_tiff_is_refused_not_read_as_zeros(tmp_path: Path) -> None:
    write_image(tmp_path / "v.tif", RNG.integers(0, 9, (1, 4, 64, 64)).astype(np.uint8))
    data = (tmp_path / "v.tif").read_bytes()
    (tmp_path / "v.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        open_image(tmp_path / "v.tif")


def _ome_zarr(path: Path, version: str, arr: np.ndarray, axes: list[dict], scale: list[float]) -> None:
    fmt = 3 if version == "0.5" else 2
    g = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    g.create_array("s0", data=arr, chunks=arr.shape)
    g.create_array("s1", data=arr[..., ::2, ::2])
    ms = {
        "axes": axes,
        "datasets": [
            {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": scale}]},
            {
                "path": "s1",
                "coordinateTransformations": [{"type": "scale", "scale": scale[:-2] + [s * 2 for s in scale[-2:]]}],
            },
        ],
    }
    g.attrs.update(
        {"ome": {"version": "0.5", "multiscales": [ms]}}
        if version == "0.5"
        else {"multiscales": [{"version": "0.4", **ms}]}
    )


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_read_level_0_with_units(tmp_path: Path, version: str) -> None:
    vol = RNG.integers(0, 99, (2, 5, 12, 16)).astype(np.uint16)
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "nanometer"},
        {"name": "x", "type": "space", "unit": "nanometer"},
    ]
    _ome_zarr(tmp_path / "v.ome.zarr", version, vol, axes, [1.0, 2.0, 300.0, 300.0])
    img = open_image(tmp_path / "v.ome.zarr")
    assert img.shape == (2, 5, 12, 16) and img.spacing == pytest.approx((2.0, 0.3, 0.3))
    np.testing.assert_array_equal(img[:, 2], vol[:, 2])
    img2d = open_image(_write_2d(tmp_path, version))
    assert img2d.shape == (1, 10, 12) and img2d.spacing == (0.5, 0.5)


def _write_2d(tmp_path: Path, version: str) -> Path:
    path = tmp_path / "i.ome.zarr"
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    _ome_zarr(path, version, np.ones((10, 12), np.uint8), axes, [0.5, 0.5])
    return path


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_target_streams_every_level_slab_by_slab(tmp_path: Path, version: str) -> None:
    labels = RNG.integers(0, 3, (1100, 600)).astype(np.uint8)
    dest = tmp_path / "l.ome.zarr"
    meta = OutputMeta(names=["bg", "a", "b"], colours=[(0, 0, 0), (255, 0, 0), (0, 255, 0)], ngff_version=version)
    target = open_target(dest, labels.shape, np.uint8, spacing=(0.5, 0.5), meta=meta)
    level0 = target.levels[0][1]  # type: ignore[attr-defined]
    for start in range(0, 1100, 256):
        target.write(start, labels[start : start + 256])
        # the slab is on disk now (chunks of level 0 up to its last row), not held until the commit
        np.testing.assert_array_equal(level0[start : start + 256], labels[start : start + 256])
    target.commit()
    group = zarr.open_group(str(dest), mode="r")
    attrs = dict(group.attrs)
    ome = attrs["ome"] if version == "0.5" else attrs
    assert [d["path"] for d in ome["multiscales"][0]["datasets"]] == ["0", "1", "2", "3"]
    assert ome["image-label"]["colors"][1] == {"label-value": 1, "rgba": [255, 0, 0, 255]}
    for i in range(4):
        np.testing.assert_array_equal(group[str(i)][...], labels[:: 2**i, :: 2**i])
    img = open_image(dest)
    assert img.spacing == (0.5, 0.5) and img.shape == (1, 1100, 600)


def test_ome_zarr_3d_probabilities_and_a_labels_group(tmp_path: Path) -> None:
    proba = RNG.random((2, 6, 300, 40)).astype(np.float16)
    target = open_target(
        tmp_path / "p.ome.zarr",
        proba.shape,
        proba.dtype,
        lead=1,
        spacing=(2.0, 1.0, 1.0),
        meta=OutputMeta(names=["bg", "cell"], ngff_version="0.5"),
    )
    for z in range(6):
        target.write(z, proba[:, z : z + 1])
    target.commit()
    g = zarr.open_group(str(tmp_path / "p.ome.zarr"), mode="r")
    assert [c["label"] for c in g.attrs["ome"]["omero"]["channels"]] == ["bg", "cell"]
    np.testing.assert_array_equal(g["1"][...], proba[..., ::2, ::2])
    assert open_image(tmp_path / "p.ome.zarr").spacing == (2.0, 1.0, 1.0)
    labels = np.ones((6, 300, 40), np.uint8)
    t = open_target(tmp_path / "l.ome.zarr", labels.shape, np.uint8, meta=OutputMeta(labels_group=True))
    t.write(0, labels)
    t.commit()
    root = zarr.open_group(str(tmp_path / "l.ome.zarr"), mode="r")
    assert root["labels"].attrs["labels"] == ["unetkit"]
    assert root["labels/unetkit"].attrs["image-label"]["source"] == {"image": "../../"}
    np.testing.assert_array_equal(read_image(tmp_path / "l.ome.zarr").array[0], labels)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    import unetkit

    net = unetkit.create_model("unet2d_small", in_channels=1, num_classes=2)
    return unetkit.save_model(tmp_path / "m.safetensors", net, class_names=["background", "cell"])


def test_predict_cli_writes_ome_zarr_and_compressed_ome_tiff(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from typer.testing import CliRunner

    from unetkit.cli import app

    write_image(tmp_path / "img.tif", RNG.integers(0, 255, (1, 80, 96)).astype(np.uint8), spacing=(0.4, 0.4))
    run = CliRunner().invoke(
        app,
        [
            "predict",
            str(model_file),
            str(tmp_path / "img.tif"),
            "--out",
            str(tmp_path / "o"),
            "--format",
            "ome-zarr",
            "--probabilities",
            "--device",
            "cpu",
            "-q",
        ],
    )
    assert run.exit_code == 0, run.output
    labels = open_image(tmp_path / "o" / "img.ome.zarr")
    assert labels.shape == (1, 80, 96) and labels.spacing == pytest.approx((0.4, 0.4))
    prob = zarr.open_group(str(tmp_path / "o" / "img_prob.ome.zarr"), mode="r")
    assert [c["label"] for c in prob.attrs["omero"]["channels"]] == ["background", "cell"]
    run = CliRunner().invoke(
        app,
        [
            "predict",
            str(model_file),
            str(tmp_path / "img.tif"),
            "--out",
            str(tmp_path / "t"),
            "--device",
            "cpu",
            "-q",
            "--probabilities",
            "--prob-dtype",
            "uint8",
        ],
    )
    assert run.exit_code == 0, run.output
    with tifffile.TiffFile(tmp_path / "t" / "img.tif") as tif:  # labels: zlib by default, OME with the spacing
        assert tif.pages[0].compression.name == "ADOBE_DEFLATE" and 'PhysicalSizeX="0.4"' in tif.ome_metadata
        np.testing.assert_array_equal(tif.asarray(), labels[0])
    with tifffile.TiffFile(tmp_path / "t" / "img_prob.tif") as tif:  # probabilities: raw, class names
        assert tif.pages[0].compression == 1 and 'Name="cell"' in tif.ome_metadata
    from unetkit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(
            ["predict", str(model_file), str(tmp_path / "img.tif"), "--out", str(tmp_path / "x"), "--compression", "bz"]
        )
    assert exc.value.code == 2 and "--compression 'bz'" in capsys.readouterr().err


def test_an_ome_zarr_input_gets_a_labels_group(tmp_path: Path, model_file: Path) -> None:
    from unetkit.infer.files import predict_files

    src = tmp_path / "in.ome.zarr"
    axes = [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    _ome_zarr(src, "0.5", RNG.integers(0, 255, (64, 72)).astype(np.uint8), axes, [0.7, 0.7])
    (res,) = predict_files(str(model_file), [src], tmp_path / "o", device="cpu")
    assert res.outputs.labels == tmp_path / "o" / "in.ome.zarr"
    root = zarr.open_group(str(res.outputs.labels), mode="r")
    assert root["labels"].attrs["ome"] == {"version": "0.5", "labels": ["unetkit"]}
    assert open_image(res.outputs.labels).spacing == pytest.approx((0.7, 0.7))


def test_predict_takes_a_bioimageio_zip_in_an_ensemble(tmp_path: Path, model_file: Path) -> None:
    from typer.testing import CliRunner

    import unetkit
    from unetkit.cli import app
    from unetkit.infer.bioimageio import export_bioimageio

    package = export_bioimageio(unetkit.load_model(model_file), tmp_path / "m.zip")
    write_image(tmp_path / "img.tif", RNG.integers(0, 255, (1, 48, 64)).astype(np.uint8))
    out = tmp_path / "o"
    args = ["predict", str(model_file), str(package), str(tmp_path / "img.tif"), "--out", str(out)]
    run = CliRunner().invoke(app, [*args, "--probabilities", "--device", "cpu", "-q"])
    assert run.exit_code == 0, run.output
    # the package is the same network: the ensemble's mean equals one member's probabilities
    single = unetkit.predict(model_file, tmp_path / "img.tif", probabilities=True, device="cpu")[1]
    np.testing.assert_allclose(tifffile.imread(out / "img_prob.tif"), single, atol=2e-3)
    assert not (out / "m.tif").exists()  # the .zip was taken as a model, not as an input


def _stream_labels(path: Path, n: int) -> float:
    """Stream an ``n x n`` label image in 256-row slabs into an OME-Zarr; the traced peak memory in bytes."""
    import tracemalloc

    warm = open_target(path.with_name("warm.ome.zarr"), (300, 300), np.uint8)  # imports and first-use caches
    warm.write(0, np.zeros((300, 300), np.uint8))
    warm.commit()
    slab = (np.arange(256 * n, dtype=np.uint32).reshape(256, n) % 3).astype(np.uint8)
    tracemalloc.start()
    try:
        target = open_target(path, (n, n), np.uint8, meta=OutputMeta(names=["a", "b", "c"]))
        for start in range(0, n, 256):
            target.write(start, slab[: min(256, n - start)])
        target.commit()
        return float(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def test_ome_zarr_streaming_memory_does_not_grow_with_the_image(tmp_path: Path) -> None:
    n = 4096
    peak = _stream_labels(tmp_path / "big.ome.zarr", n)
    assert peak < n * n / 4, f"{peak / 2**20:.1f} MiB traced for a {n * n / 2**20:.0f} MiB label image"
    level = zarr.open_group(str(tmp_path / "big.ome.zarr"), mode="r")["3"]
    assert level.shape == (512, 512) and int(level[1, 1]) == (8 * n + 8) % 3


@pytest.mark.slow
def test_ome_zarr_streams_a_20000_square_label_image(tmp_path: Path) -> None:
    n = 20000
    peak = _stream_labels(tmp_path / "huge.ome.zarr", n)
    assert peak < 64 * 2**20, f"{peak / 2**20:.1f} MiB traced for a {n * n / 2**20:.0f} MiB label image"
    assert len(list(zarr.open_group(str(tmp_path / "huge.ome.zarr"), mode="r").array_keys())) == 8


def test_dask_runs_refuse_other_output_formats(tmp_path: Path, model_file: Path) -> None:
    from unetkit.infer.files import predict_files

    write_image(tmp_path / "img.tif", np.zeros((1, 32, 32), np.uint8))
    with pytest.raises(ConfigError, match="--dask writes"):
        predict_files(str(model_file), [tmp_path / "img.tif"], tmp_path / "o", dask="local", format="ome-zarr")


def test_postprocessing_ome_zarr_labels_keeps_their_layout(tmp_path: Path, model_file: Path) -> None:
    from unetkit.infer.files import predict_files

    src = tmp_path / "in.ome.zarr"
    axes = [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    _ome_zarr(src, "0.5", RNG.integers(0, 255, (64, 72)).astype(np.uint8), axes, [0.7, 0.7])
    (res,) = predict_files(str(model_file), [src], tmp_path / "o", device="cpu", postprocess="remove-islands:5")
    assert res.postprocessed == [res.outputs.labels]
    root = zarr.open_group(str(res.outputs.labels), mode="r")
    label = root["labels/unetkit"]
    assert label.attrs["ome"]["version"] == "0.5"
    assert [p["class"] for p in label.attrs["ome"]["image-label"]["properties"]] == ["background", "cell"]
    assert open_image(res.outputs.labels).spacing == pytest.approx((0.7, 0.7))


def test_rewriting_a_compressed_tiff_keeps_its_compression(tmp_path: Path) -> None:
    t = open_target(tmp_path / "l.tif", (40, 50), np.uint8, meta=OutputMeta(compression="zstd"))
    t.write(0, np.ones((40, 50), np.uint8))
    t.commit()
    write_image(tmp_path / "l.tif", np.zeros((1, 40, 50), np.uint8))  # as post-processing rewrites labels
    with tifffile.TiffFile(tmp_path / "l.tif") as tif:
        assert tif.pages[0].compression.name == "ZSTD" and not tif.asarray().any()


def test_output_paths_per_format(tmp_path: Path) -> None:
    from unetkit.infer.outputs import output_paths

    out = tmp_path / "o"
    png, ome = tmp_path / "a.png", tmp_path / "s.ome.tif"
    plans = {f: output_paths(png, out, probabilities=True, overlay=False, format=f) for f in ("auto", "tiff", "zarr")}
    assert [plans[f].labels.name for f in plans] == ["a.png", "a.tif", "a.zarr"]
    assert [plans[f].probabilities.name for f in plans] == ["a_prob.tif", "a_prob.tif", "a_prob.zarr"]  # type: ignore[union-attr]
    plan = output_paths(ome, out, probabilities=True, overlay=False, format="ome-zarr")
    assert (plan.labels.name, plan.probabilities.name) == ("s.ome.zarr", "s_prob.ome.zarr")  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="auto, tiff, zarr, ome-zarr"):
        output_paths(png, out, probabilities=False, overlay=False, format="n5")
