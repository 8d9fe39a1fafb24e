"""The napari plugin, headless (offscreen Qt): manifest, sample data, the segment widget end to end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

MANIFEST = Path(__file__).parents[1] / "src" / "unetkit" / "napari" / "napari.yaml"


def test_plugin_package_imports_without_napari_and_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from unetkit.errors import MissingExtraError
    from unetkit.napari import require_napari

    monkeypatch.setitem(sys.modules, "napari", None)  # as if napari were not installed
    with pytest.raises(MissingExtraError, match=r"unetkit\[napari\]"):
        require_napari()


def test_manifest_is_valid_and_points_at_real_callables() -> None:
    npe2 = pytest.importorskip("npe2")
    import importlib

    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "unetkit"
    for command in manifest.contributions.commands or []:
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), command.python_name


def test_sample_data_is_the_demo_cells() -> None:
    from unetkit.napari._sample import sample_cells

    (image, _, kind), (mask, _, mask_kind) = sample_cells()
    assert (kind, mask_kind) == ("image", "labels") and image.shape == mask.shape == (256, 256)
    assert set(np.unique(mask)) == {0, 1}


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    import unetkit

    net = unetkit.create_model("unet2d_small", in_channels=1, num_classes=3)
    return unetkit.save_model(
        tmp_path / "m.safetensors",
        net,
        class_names=["background", "cell", "edge"],
        class_colours=[(0, 0, 0), (255, 0, 0), (0, 0, 255)],
    )


def _viewer() -> Any:
    """napari's viewer model: layers and add_* without an OpenGL canvas (none offscreen)."""
    napari = pytest.importorskip("napari")
    return napari.components.ViewerModel()


def test_segment_widget_adds_labels_with_the_model_classes(qtbot: Any, model_file: Path) -> None:
    viewer = _viewer()
    from unetkit.napari._widget import SegmentWidget

    image = np.random.default_rng(0).random((70, 90)).astype(np.float32)
    viewer.add_image(image, name="img", scale=(0.5, 0.5))
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.selected_layer() is viewer.layers["img"]
    widget.model_path.setText(str(model_file))
    widget.probabilities.setChecked(True)
    worker = widget.run()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: "img labels" in viewer.layers, timeout=10_000)
    labels = viewer.layers["img labels"]
    assert labels.data.shape == (70, 90) and labels.data.max() < 3
    assert list(labels.features["class"]) == ["background", "cell", "edge"]
    assert np.allclose(labels.colormap.map(np.array([1]))[0][:3], [1.0, 0.0, 0.0])
    assert tuple(labels.scale) == (0.5, 0.5)
    assert "img p(cell)" in viewer.layers and widget.progress.value() == 100
    from unetkit.api import predict

    np.testing.assert_array_equal(labels.data, predict(str(model_file), image, device="cpu"))


def test_segment_widget_restores_with_a_restoration_model(qtbot: Any, tmp_path: Path) -> None:
    """A restoration model file (task: restore) restores the layer: an image layer per output channel, in the
    targets' intensity range, the values ``unetkit.predict`` returns."""
    import unetkit

    net = unetkit.create_model("unet2d_small", in_channels=1, num_classes=3, depth=2, width=4, norm=None)
    scaling = {"kind": "range", "params": {"min": [10.0, 0.0, -5.0], "max": [20.0, 255.0, 5.0]}}
    model = unetkit.save_model(tmp_path / "r.safetensors", net, task="restore", target_normalization=scaling)
    viewer = _viewer()
    from unetkit.napari._widget import SegmentWidget

    image = np.random.default_rng(2).random((40, 52)).astype(np.float32)
    viewer.add_image(image, name="noisy", scale=(2.0, 2.0))
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.model_path.setText(str(model))
    worker = widget.run()
    assert worker is not None and "restoring noisy" in widget.status.text()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    names = ["noisy restored (red)", "noisy restored (green)", "noisy restored (blue)"]
    qtbot.waitUntil(lambda: all(n in viewer.layers for n in names), timeout=10_000)
    expected = unetkit.predict(str(model), image, device="cpu")
    assert expected.shape == (3, 40, 52)
    for c, n in enumerate(names):
        layer = viewer.layers[n]
        assert tuple(layer.scale) == (2.0, 2.0)
        np.testing.assert_allclose(layer.data, expected[c], rtol=1e-5, atol=1e-4)
    assert "noisy labels" not in viewer.layers and "3 channel(s)" in widget.status.text()


@pytest.mark.parametrize("task", ["segment", "restore"])
def test_segment_widget_takes_a_stack_layer_slice_by_slice(qtbot: Any, tmp_path: Path, task: str) -> None:
    """A (Z, Y, X) layer through a 2D model (trained on slices, ``--dims 2``) goes one Z slice at a time, as
    ``unetkit predict`` and ``unetkit.predict`` take a stack: labels (or a restored image) of the layer's shape."""
    import unetkit

    restore = task == "restore"
    net = unetkit.create_model("unet2d_small", in_channels=1, num_classes=1 if restore else 2, depth=2, width=4)
    model = unetkit.save_model(tmp_path / "m.safetensors", net, **({"task": "restore"} if restore else {}))
    viewer = _viewer()
    from unetkit.napari._widget import SegmentWidget

    stack = np.random.default_rng(3).random((6, 40, 44)).astype(np.float32)
    viewer.add_image(stack, name="stack", scale=(3.0, 0.5, 0.5))
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.model_path.setText(str(model))
    worker = widget.run()
    assert worker is not None, widget.status.text()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    name = "stack restored" if restore else "stack labels"
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=10_000)
    out = viewer.layers[name]
    assert out.data.shape == (6, 40, 44) and tuple(out.scale) == (3.0, 0.5, 0.5)
    expected = unetkit.predict(str(model), stack, device="cpu")
    np.testing.assert_allclose(out.data, expected[0] if restore else expected, rtol=1e-5, atol=1e-5)
    assert widget.progress.value() == 100


def test_segment_widget_refuses_a_missing_model(qtbot: Any, tmp_path: Path) -> None:
    viewer = _viewer()
    from unetkit.napari._widget import SegmentWidget

    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.model_path.setText(str(tmp_path / "nope.safetensors"))
    assert widget.run() is None and "no such model file" in widget.status.text()


def test_segment_widget_refuses_an_rgb_layer_for_a_grey_model_then_converts(qtbot: Any, model_file: Path) -> None:
    viewer = _viewer()
    from unetkit.data.channels import convert_channels
    from unetkit.napari._widget import CHANNEL_CHOICES, SegmentWidget

    rgb = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    viewer.add_image(rgb, name="photo", rgb=True)
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.model_path.setText(str(model_file))
    assert widget.run() is None  # refused before a worker starts
    assert "3 channels" in widget.status.text() and "channels box" in widget.status.text()
    widget.channels.setCurrentText(next(k for k, v in CHANNEL_CHOICES.items() if v == "grey"))
    worker = widget.run()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: "photo labels" in viewer.layers, timeout=10_000)
    from unetkit.api import predict

    grey = convert_channels(np.moveaxis(rgb, -1, 0), 1, "grey")
    np.testing.assert_array_equal(viewer.layers["photo labels"].data, predict(str(model_file), grey, device="cpu"))


def test_painted_dataset_refuses_empty_or_mismatched_labels(tmp_path: Path) -> None:
    from unetkit.errors import DataError
    from unetkit.napari._dataset import write_painted_dataset

    with pytest.raises(DataError, match="empty"):
        write_painted_dataset(np.zeros((1, 64, 64)), np.zeros((64, 64), np.int32), tmp_path)
    with pytest.raises(DataError, match="does not match"):
        write_painted_dataset(np.zeros((1, 64, 64)), np.ones((64, 32), np.int32), tmp_path)


def test_train_widget_trains_on_painted_labels_then_segments(qtbot: Any, tmp_path: Path) -> None:
    viewer = _viewer()
    from unetkit.napari._train_widget import TrainWidget
    from unetkit.synthetic import synthetic_cells

    cells = synthetic_cells((128, 128), seed=3)
    viewer.add_image(cells.image, name="cells")
    viewer.add_labels(cells.mask.astype(np.int32), name="painted")
    widget = TrainWidget(viewer)
    qtbot.addWidget(widget)
    widget.labels.setCurrentText("painted")
    widget.minutes.setValue(0.2)
    widget.out.setText(str(tmp_path / "run"))
    widget.overrides = {"train__device": "cpu", "train__epochs": 1, "model__name": "unet2d_small"}
    worker = widget.run()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=180_000):
        pass
    qtbot.waitUntil(lambda: any(layer.name.startswith("cells labels") for layer in viewer.layers), timeout=10_000)
    assert (tmp_path / "run" / "run" / "model.safetensors").is_file(), widget.status.text()
    labels = next(layer for layer in viewer.layers if layer.name.startswith("cells labels"))
    assert labels.data.shape == (128, 128) and labels.data.max() <= 1


@pytest.mark.parametrize("with_target", [False, True])
def test_restore_train_widget_trains_then_restores(qtbot: Any, tmp_path: Path, with_target: bool) -> None:
    """Noise2Void from the noisy layer alone (no target chosen), or CARE with a clean target layer: the run is
    planned and trained as ``unetkit train --task restore``, then the layer is restored with the new model."""
    viewer = _viewer()
    from unetkit.modelfile import read_description
    from unetkit.napari._train_widget import RestoreTrainWidget
    from unetkit.synthetic import synthetic_texture

    clean = synthetic_texture((128, 128), seed=4).astype(np.float32)
    noisy = (clean + np.random.default_rng(5).normal(0, 0.1, clean.shape)).astype(np.float32)
    viewer.add_image(noisy, name="noisy")
    viewer.add_image(clean, name="clean")
    widget = RestoreTrainWidget(viewer)
    qtbot.addWidget(widget)
    widget.image.setCurrentText("noisy")
    assert widget.labels.itemText(0).startswith("none: Noise2Void")
    widget.labels.setCurrentText("clean" if with_target else widget.labels.itemText(0))
    widget.minutes.setValue(0.2)
    widget.out.setText(str(tmp_path / "run"))
    widget.overrides = {"train__device": "cpu", "train__epochs": 1, "train__iterations_per_epoch": 3}
    worker = widget.run()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=180_000):
        pass
    qtbot.waitUntil(lambda: any(layer.name.startswith("noisy restored") for layer in viewer.layers), timeout=10_000)
    model = tmp_path / "run" / "run" / "model.safetensors"
    assert model.is_file(), widget.status.text()
    desc = read_description(model)
    assert desc.task == "restore" and desc.provenance.get("self_supervised") is (not with_target)
    restored = next(layer for layer in viewer.layers if layer.name.startswith("noisy restored"))
    assert restored.data.shape == (128, 128) and np.isfinite(restored.data).all()
    assert (tmp_path / "run" / "pairs" / "targets").is_dir() is with_target
