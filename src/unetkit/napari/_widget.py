"""The napari widget: pick a model file, segment (or restore) the selected image layer in a worker thread.

The image is predicted slab by slab (the predictor's tiling and blending, as ``unetkit predict``), in a
napari worker thread with a progress bar and a Cancel button. A segmentation model gives a labels layer
coloured with the model's class colours (its ``features`` table names each class), and, on request, one
probability image layer per class; a restoration model (``task: restore``: CARE, Noise2Void, pix2pix) gives
the restored image layer, in the targets' intensity range, one layer per output channel. A layer whose
channels are not the model's is refused before the worker starts, or converted as the channels box says
(grey, rgb, first: :mod:`unetkit.data.channels`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from typing import Any

import numpy as np

from unetkit.napari import require_napari

require_napari()

from napari.qt.threading import thread_worker  # noqa: E402  (after the check that says what to install)
from qtpy.QtWidgets import (  # noqa: E402
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)

CHANNEL_CHOICES: dict[str, str | None] = {
    "as they are (refuse a mismatch)": None,
    "grey: RGB(A) -> luma": "grey",
    "rgb: grey -> 3 channels, RGBA -> RGB": "rgb",
    "first: the first channels the model takes": "first",
}
"""The channels box of the segment widget: what it shows -> the conversion (:mod:`unetkit.data.channels`)."""


def label_colormap(colours: list[tuple[int, int, int]]) -> Any:
    """A napari label colormap: class ``v`` in the model's colour ``colours[v]``, the background transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    mapping: dict[int | None, Any] = {v: np.array([*c, 255], float) / 255 for v, c in enumerate(colours)}
    mapping[0] = np.zeros(4)
    mapping[None] = np.zeros(4)
    return DirectLabelColormap(color_dict=mapping)


def _slabs(predictor: Any, data: Any, channels: str | None) -> tuple[tuple[int, ...], Any]:
    """The layer's spatial shape, and its finished slabs with the image rows each covers; a stack through a 2D
    network (:func:`unetkit.api.is_stack`) goes one Z slice a slab, as ``unetkit predict`` takes it."""
    from unetkit.api import as_stack, channels_first, is_stack
    from unetkit.infer.inputs import slice_slabs

    sd, c = predictor.spatial_dims, predictor.in_channels
    if is_stack(np.shape(data), sd, c, channels=channels):
        image = as_stack(data, c, channels=channels)
        found = slice_slabs(predictor, image, None)
    else:
        image = channels_first(np.asarray(data), sd, c, channels=channels)
        found = predictor.iter_slabs(image)
    return tuple(image.shape[1:]), ((slice(s.start, s.start + s.proba.shape[1]), s) for s in found)


def segment(
    predictor: Any, data: Any, *, probabilities: bool, channels: str | None = None
) -> Generator[float, None, tuple[np.ndarray, np.ndarray | None]]:
    """Predict ``data`` (a layer's array) slab by slab: yields the fraction done, returns ``(labels, proba)``.

    ``channels`` (``rgb``, ``grey``, ``first``) converts a layer whose channels are not the model's
    (:mod:`unetkit.data.channels`).

    Shape:
        ``data`` as :func:`unetkit.api.channels_first` takes it -> labels ``(*S)``, proba ``(K, *S)`` or None.
    """
    spatial, slabs = _slabs(predictor, data, channels)
    labels = np.zeros(spatial, np.uint8 if predictor.num_classes <= 256 else np.uint16)
    proba = np.zeros((predictor.num_classes, *spatial), np.float32) if probabilities else None
    for rows, slab in slabs:
        labels[rows] = slab.labels()
        if proba is not None:
            proba[:, rows] = slab.proba
        yield rows.stop / spatial[0]
    return labels, proba


def restore(predictor: Any, data: Any, *, channels: str | None = None) -> Generator[float, None, np.ndarray]:
    """Restore ``data`` (a layer's array) with a restoration model, slab by slab: yields the fraction done,
    returns the restored image in the targets' intensity range (:meth:`unetkit.infer.Predictor.to_target_range`).

    Shape:
        ``data`` as :func:`unetkit.api.channels_first` takes it -> ``(C_out, *S)`` float32.
    """
    spatial, slabs = _slabs(predictor, data, channels)
    out = np.zeros((predictor.num_classes, *spatial), np.float32)
    for rows, slab in slabs:
        out[:, rows] = predictor.to_target_range(slab.proba)
        yield rows.stop / spatial[0]
    return out


def add_restored(viewer: Any, layer: Any, out: np.ndarray, name: str | None = None) -> str:
    """Add a restored image beside its input ``layer`` (at its scale; one layer per channel, additive,
    red/green/blue for three) as ``name`` (default ``<layer> restored``); returns the status line.

    Shape:
        ``out`` ``(C_out, *S)``.
    """
    scale = tuple(layer.scale)[-(out.ndim - 1) :]
    name = name or f"{layer.name} restored"
    if out.shape[0] == 1:
        viewer.add_image(out[0], name=name, scale=scale)
    else:
        colours = ["red", "green", "blue"] if out.shape[0] == 3 else None
        names = [f"{name} ({c})" for c in (colours or range(out.shape[0]))]
        viewer.add_image(out, channel_axis=0, name=names, scale=scale, colormap=colours, blending="additive")
    return f"{name}: {out.shape[0]} channel(s), values {float(out.min()):.4g} to {float(out.max()):.4g}"


class SegmentWidget(QWidget):
    """Model file, image layer, "probabilities too", Run / Cancel, a progress bar and a status line; a
    restoration model file restores the layer instead of segmenting it."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.model_path = QLineEdit()
        self.model_path.setPlaceholderText("model.safetensors, .onnx or bioimage.io .zip")
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.model_path)
        row.addWidget(browse)
        self.image = QComboBox()
        self.channels = QComboBox()
        self.channels.addItems(list(CHANNEL_CHOICES))
        self.probabilities = QCheckBox("probabilities too")
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        box = QVBoxLayout(self)
        box.addWidget(QLabel("model file"))
        box.addLayout(row)
        box.addWidget(QLabel("image layer"))
        box.addWidget(self.image)
        box.addWidget(QLabel("channels (when they are not the model's)"))
        box.addWidget(self.channels)
        box.addWidget(self.probabilities)
        box.addWidget(self.run_button)
        box.addWidget(self.cancel_button)
        box.addWidget(self.progress)
        box.addWidget(self.status)
        self.viewer.layers.events.inserted.connect(self._reset_choices)
        self.viewer.layers.events.removed.connect(self._reset_choices)
        self._reset_choices()

    def _reset_choices(self, *_: Any) -> None:
        """The image layers, the selected (active) one first chosen."""
        import napari.layers

        current = self.image.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]
        self.image.clear()
        self.image.addItems(names)
        active = self.viewer.layers.selection.active
        choice = active.name if active is not None and active.name in names else current
        if choice in names:
            self.image.setCurrentText(choice)

    def selected_layer(self) -> Any:
        name = self.image.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "unetkit model", "", "Models (*.safetensors *.onnx *.zip)")
        if path:
            self.model_path.setText(path)

    def run(self) -> Any:
        """Start the prediction in a worker thread (returned; ``None`` when the inputs are not usable)."""
        from unetkit.errors import DataError, UnetkitError
        from unetkit.infer.loading import load_predictor

        layer = self.selected_layer()
        path = self.model_path.text().strip()
        if layer is None or not path:
            self.status.setText("choose a model file and an image layer")
            return None
        if not os.path.isfile(path):
            self.status.setText(f"{path}: no such model file")
            return None
        try:
            predictor = load_predictor(path)
        except UnetkitError as exc:
            self.status.setText(str(exc))
            return None
        desc = predictor.description
        from unetkit.api import check_layout
        from unetkit.classes import Classes

        channels = CHANNEL_CHOICES[self.channels.currentText()]
        try:  # before the worker starts: a layer the model cannot take is said at once, with the fix
            check_layout(layer.data.shape, predictor.spatial_dims, predictor.in_channels, channels=channels)
        except DataError as exc:  # the channel rule's message, with this widget's fix
            fix = "choose a conversion in the channels box, or another model"
            self.status.setText(f"{layer.name}: {exc.problem}; {fix}")
            return None
        except UnetkitError as exc:
            self.status.setText(f"{layer.name}: {exc}")
            return None
        restoring = predictor.restores
        if restoring:
            worker = thread_worker(restore)(predictor, layer.data, channels=channels)
            worker.returned.connect(lambda result: self._add_restored(layer, result))
        else:
            k = predictor.num_classes
            classes = (
                Classes.from_model(desc.class_names, desc.class_colours) if desc is not None else Classes.default(k)
            )
            worker = thread_worker(segment)(
                predictor, layer.data, probabilities=self.probabilities.isChecked(), channels=channels
            )
            worker.returned.connect(lambda result: self._add_layers(layer, classes, result))
        worker.yielded.connect(lambda frac: self.progress.setValue(round(100 * frac)))
        worker.errored.connect(lambda exc: self.status.setText(f"failed: {exc}"))
        worker.aborted.connect(lambda: self.status.setText("cancelled"))
        worker.finished.connect(self._finished)
        self.worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText(f"{'restoring' if restoring else 'segmenting'} {layer.name} with {os.path.basename(path)}")
        worker.start()
        return worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()

    def _finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _add_restored(self, layer: Any, out: np.ndarray) -> None:
        note = "; probabilities: none for a restoration model" if self.probabilities.isChecked() else ""
        self.status.setText(add_restored(self.viewer, layer, out) + note)

    def _add_layers(self, layer: Any, classes: Any, result: tuple[np.ndarray, np.ndarray | None]) -> None:
        import pandas as pd

        labels, proba = result
        scale = tuple(layer.scale)[-labels.ndim :]
        features = pd.DataFrame({"index": range(len(classes.names)), "class": list(classes.names)})
        self.viewer.add_labels(
            labels,
            name=f"{layer.name} labels",
            scale=scale,
            colormap=label_colormap(list(classes.colours)),
            features=features,
        )
        if proba is not None:
            self.viewer.add_image(
                proba,
                channel_axis=0,
                name=[f"{layer.name} p({n})" for n in classes.names],
                scale=scale,
                contrast_limits=(0.0, 1.0),
                blending="additive",
            )
        counts = np.bincount(labels.ravel(), minlength=len(classes.names))
        self.status.setText(
            ", ".join(f"{n}: {c / labels.size:.1%}" for n, c in zip(classes.names, counts, strict=False))
        )
