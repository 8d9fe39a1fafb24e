"""The pictures unetkit writes: palette label PNGs, class overlays (fill, outlines, a legend that matches the
picture) and instance overlays (neighbours told apart, every object outlined, the object count)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage.segmentation import find_boundaries
from typer.testing import CliRunner

from unetkit.cli import app
from unetkit.data.io import open_mask, read_image, read_mask, read_palette, write_image
from unetkit.errors import DataError
from unetkit.infer import Predictor, predict_file
from unetkit.infer.outputs import output_paths
from unetkit.infer.overlay import OverlayTarget
from unetkit.modelfile import load_model, save_model
from unetkit.models import UNet
from unetkit.viz import instance_colours, instance_overlay, save_instance_overlay
from unetkit.viz.downsample import grey_preview
from unetkit.viz.instances import INSTANCE_COLOURS
from unetkit.viz.legend import PAD, ROW, SWATCH, swatch

runner = CliRunner()
COLOURS = [(10, 20, 30), (0, 255, 0), (200, 0, 200)]


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    net = UNet(2, 1, 3, depth=2, width=4).eval()
    return save_model(
        tmp_path / "m.safetensors", net, class_names=["bg", "a", "b"], class_colours=COLOURS, tile_size=[32, 32]
    )


def _image(shape: tuple[int, int] = (40, 56), seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((1, *shape)) * 255).astype(np.uint8)


def test_predicted_label_png_is_a_palette_png_of_the_class_colours(tmp_path: Path, model_file: Path) -> None:
    image = _image()
    write_image(tmp_path / "x.png", image)
    pred = Predictor(load_model(model_file), device="cpu")
    res = predict_file(pred, tmp_path / "x.png", tmp_path / "out")
    expected = pred.predict(image)
    with Image.open(res.outputs.labels) as im:
        assert im.mode == "P"
        assert (im.getpalette() or [])[: 3 * len(COLOURS)] == [v for c in COLOURS for v in c]
        assert np.array_equal(np.asarray(im), expected)
    assert read_palette(res.outputs.labels)[: len(COLOURS)] == COLOURS  # type: ignore[index]
    assert np.array_equal(read_mask(res.outputs.labels), expected)  # mask readers give the indices
    assert np.array_equal(open_mask(res.outputs.labels).read()[0], expected)
    shown = read_image(res.outputs.labels).array  # an image reader gives what a viewer shows: the colours
    assert np.array_equal(np.moveaxis(shown, 0, -1), np.array(COLOURS, np.uint8)[expected])


def test_palette_png_round_trip_and_labels_beyond_255(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2, 4]], np.uint8)  # 4: beyond the colours given, coloured from the palette
    write_image(tmp_path / "l.png", labels, palette=[(1, 2, 3), (4, 5, 6)])
    palette = read_palette(tmp_path / "l.png")
    assert palette is not None and palette[:2] == [(1, 2, 3), (4, 5, 6)] and len(palette) >= 5
    assert np.array_equal(read_mask(tmp_path / "l.png"), labels)
    wide = np.array([[0, 300, 65535]], np.uint16)  # no palette holds these: 16-bit grey, as before
    write_image(tmp_path / "w.png", wide, palette=[(1, 2, 3)])
    with Image.open(tmp_path / "w.png") as im:
        assert im.mode != "P"
    assert read_palette(tmp_path / "w.png") is None and np.array_equal(read_mask(tmp_path / "w.png"), wide)
    write_image(tmp_path / "t.tif", labels)
    assert read_palette(tmp_path / "t.tif") is None


def test_palette_masks_train_as_their_indices(tmp_path: Path) -> None:
    from unetkit.data import load_dataset

    labels = np.zeros((32, 32), np.uint8)
    labels[4:12, 4:12] = 1
    labels[16:28, 10:30] = 2
    write_image(tmp_path / "images" / "a.png", _image((32, 32))[0])
    write_image(tmp_path / "masks" / "a.png", labels, palette=COLOURS)
    for stream in (False, True):  # read whole, and streamed region by region
        ds = load_dataset(tmp_path, stream=stream)
        assert ds.num_classes == 3 and np.array_equal(np.asarray(ds[0].mask), labels), stream


def test_evaluate_reads_a_palette_prediction_as_classes(tmp_path: Path, model_file: Path) -> None:
    image = _image()
    write_image(tmp_path / "in" / "x.png", image)
    pred = Predictor(load_model(model_file), device="cpu")
    predict_file(pred, tmp_path / "in" / "x.png", tmp_path / "pred")
    expected = pred.predict(image)
    assert len(np.unique(expected)) >= 2  # a test that the classes, not the colours, are compared
    write_image(tmp_path / "truth" / "x.png", expected)  # the same classes, as plain grey indices
    out = tmp_path / "eval"
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"), "--out", str(out)]
    result = runner.invoke(app, [*args, "--images", str(tmp_path / "in"), "--num-classes", "3", "--no-warping", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["dice"] == pytest.approx(1.0)


def _overlay_scene(tmp_path: Path) -> tuple[OverlayTarget, np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).random((1, 30, 40))
    colours = [(0, 0, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0)]
    target = OverlayTarget(tmp_path / "o.png", image, ["bg", "a", "b", "c"], colours, alpha=0.5)
    labels = np.zeros((30, 40), np.uint8)
    labels[5:15, 5:20] = 1
    labels[18:28, 22:38] = 2  # class 3 is absent
    target.write(0, labels[:16])
    target.write(16, labels[16:])
    return target, image, labels


def test_class_overlay_fills_outlines_and_leaves_the_background(tmp_path: Path) -> None:
    target, image, labels = _overlay_scene(tmp_path)
    picture = target.picture()
    grey = grey_preview(image, 1)
    colours = np.array(target.colours, np.uint8)
    edge = find_boundaries(labels, mode="inner") & (labels > 0)
    assert edge[5, 10] and edge[14, 19] and not edge[10, 12]
    assert np.array_equal(picture[edge], colours[labels[edge]])  # outlines: opaque, in the class colour
    inside = (labels > 0) & ~edge
    blend = 0.5 * grey[inside].astype(np.float32) + 0.5 * colours[labels[inside]]
    assert np.abs(picture[inside] - blend).max() <= 1  # filled at alpha
    assert np.array_equal(picture[labels == 0], grey[labels == 0])  # the background is not painted


def test_class_overlay_legend_matches_what_is_painted(tmp_path: Path) -> None:
    target, _, labels = _overlay_scene(tmp_path)
    legend = target.legend()
    assert legend[0] == ("0: bg (not painted)", None)
    assert legend[1] == (f"1: a, {100 * 150 / 1200:.3g}% of the image", (255, 0, 0))
    assert legend[2].colour == (0, 0, 255) and legend[3] == ("3: c (absent)", None)
    picture = target.picture()
    painted = {tuple(int(v) for v in rgb) for rgb in picture[find_boundaries(labels, mode="inner") & (labels > 0)]}
    assert {e.colour for e in legend if e.colour is not None} == painted
    target.commit()
    with Image.open(tmp_path / "o.png") as im:
        out = np.asarray(im.convert("RGB"))
    assert out.shape[0] == 30 + PAD + ROW * len(legend) and np.array_equal(out[:30, :40], picture)
    for k, entry in enumerate(legend):
        y = 30 + PAD + ROW * k
        box = out[y : y + SWATCH, PAD : PAD + SWATCH]
        if entry.colour is None:
            assert (box == 255).all()  # no swatch for what is not painted
        else:
            assert np.array_equal(box, swatch(entry.colour, 0.5)) and tuple(box[1, 1]) == entry.colour


def _touching_grid(n: int = 5, side: int = 6) -> np.ndarray:
    ids = np.zeros((n * side + 4, n * side + 4), np.int32)
    for i in range(n):
        for j in range(n):
            ids[2 + i * side : 2 + (i + 1) * side, 2 + j * side : 2 + (j + 1) * side] = i * n + j + 1
    return ids


def test_neighbouring_instances_get_different_colours() -> None:
    ids = _touching_grid()
    colours = instance_colours(ids)
    assert sorted(colours) == list(range(1, 26)) and set(colours.values()) <= set(INSTANCE_COLOURS)
    pairs = [(ids[:, :-1], ids[:, 1:]), (ids[:-1], ids[1:]), (ids[:-1, :-1], ids[1:, 1:]), (ids[:-1, 1:], ids[1:, :-1])]
    for left, right in pairs:  # side by side, one above the other, corner to corner
        for a, b in zip(left.ravel(), right.ravel(), strict=True):
            assert a == b or 0 in (a, b) or colours[a] != colours[b]
    gap = np.zeros((8, 20), np.int32)
    gap[2:6, 2:8], gap[2:6, 10:16] = 1, 2  # two pixels apart
    near = instance_colours(gap)
    assert near[1] != near[2]
    assert instance_colours(ids) == colours and len(set(colours.values())) > 4  # deterministic, and varied
    shuffled = np.where(ids > 0, ids * 1000 + 7, 0)  # any ids: colours per object, not per id range
    assert len(instance_colours(shuffled)) == 25


def test_instance_overlay_outlines_every_object() -> None:
    ids = _touching_grid()
    image = np.zeros(ids.shape)
    rgb = instance_overlay(image, ids)
    colours = instance_colours(ids)
    assert rgb.shape == (*ids.shape, 3) and rgb.dtype == np.uint8
    edge = find_boundaries(ids, mode="inner") & (ids > 0)
    assert all(tuple(int(v) for v in rgb[y, x]) == colours[ids[y, x]] for y, x in zip(*np.nonzero(edge), strict=True))
    inside = (ids > 0) & ~edge
    assert inside.any() and all(
        tuple(int(v) for v in rgb[y, x]) != colours[ids[y, x]] for y, x in zip(*np.nonzero(inside), strict=True)
    )  # filled at alpha, over the (black) image
    assert (rgb[ids == 0] == 0).all()
    with pytest.raises(DataError, match="2D"):
        instance_overlay(np.zeros((2, 3, 4)), np.zeros((2, 3, 4), np.int32))


def test_save_instance_overlay_downsamples_and_counts(tmp_path: Path) -> None:
    ids = np.kron(_touching_grid(), np.ones((3, 3), np.int32))  # 102 x 102
    image = np.random.default_rng(0).random((1, *ids.shape))
    save_instance_overlay(tmp_path / "i.png", image, ids, max_side=40, note="components")
    with Image.open(tmp_path / "i.png") as im:
        out = np.asarray(im.convert("RGB"))
    assert out.shape[0] == 34 + PAD + ROW  # 102 / 3 rows, one legend line
    with pytest.raises(DataError, match="shape"):
        save_instance_overlay(tmp_path / "j.png", image[:, :5], ids)
    assert not (tmp_path / "j.png").exists()


def test_output_paths_name_the_instance_overlay(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    plan = output_paths(png, tmp_path / "o", probabilities=False, overlay=True, instances=True)
    assert plan.instances_overlay == tmp_path / "o" / "x_instances_overlay.png"
    no_overlay = output_paths(png, tmp_path / "o", probabilities=False, overlay=False, instances=True)
    assert no_overlay.instances_overlay is None
    assert output_paths(png, tmp_path / "o", probabilities=False, overlay=True).instances_overlay is None


def test_predict_cli_writes_palette_labels_overlays_and_instance_overlay(tmp_path: Path, model_file: Path) -> None:
    image = _image((48, 40), seed=3)
    write_image(tmp_path / "in" / "cells.png", image)
    args = ["predict", str(model_file), str(tmp_path / "in" / "cells.png"), "--out", str(tmp_path / "o"), "--quiet"]
    result = runner.invoke(
        app, [*args, "--device", "cpu", "--instances", "components", "--overlay", "--postprocess", "remove-islands:2"]
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["cells.png", "cells_instances.tif", "cells_instances_overlay.png", "cells_overlay.png"]
    with Image.open(tmp_path / "o" / "cells.png") as im:  # rewritten by post-processing, still a palette PNG
        assert im.mode == "P" and (im.getpalette() or [])[:9] == [v for c in COLOURS for v in c]
    ids = tifffile.imread(tmp_path / "o" / "cells_instances.tif")
    assert ids.max() > 0
    with Image.open(tmp_path / "o" / "cells_instances_overlay.png") as im:
        out = np.asarray(im.convert("RGB"))
    assert out.shape[0] == 48 + PAD + ROW  # the picture and one legend line (the object count)
    edge = find_boundaries(ids, mode="inner") & (ids > 0)
    colours = instance_colours(ids)
    drawn = out[:48, :40][edge]
    assert np.array_equal(drawn, np.array([colours[i] for i in ids[edge]], np.uint8))
    plain = [*args[:4], str(tmp_path / "o2"), "--quiet", "--device", "cpu", "--instances", "components"]
    result = runner.invoke(app, plain)  # no --overlay: no pictures
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["cells.png", "cells_instances.tif"]
