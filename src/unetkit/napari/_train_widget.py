"""The napari training widget: train on an image layer and a labels layer painted over it, then predict.

The image and its labels become a four-tile dataset (:func:`~unetkit.napari._dataset.write_painted_dataset`)
in the run folder; :func:`unetkit.train.folder.train` plans and trains it within the time budget (as
``unetkit train DATA --budget``) in a worker thread, and the new model then segments the image (a labels
layer, as the segment widget adds). Cancel stops the training at the next step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.napari import require_napari

require_napari()

from napari.qt.threading import thread_worker  # noqa: E402  (after the check that says what to install)
from qtpy.QtCore import QTimer  # noqa: E402
from qtpy.QtWidgets import (  # noqa: E402
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from unetkit.train.callbacks import BaseCallback  # noqa: E402


class Cancelled(Exception):
    """Raised inside the training loop when the user pressed Cancel."""


class _Progress(BaseCallback):
    """Training progress shared with the widget (polled by a Qt timer on the main thread)."""

    def __init__(self) -> None:
        self.text, self.cancel = "planning", False

    def on_train_start(
        self, *, epochs: int, steps_per_epoch: int, start_epoch: int, start_step: int, budget_s: float | None = None
    ) -> None:
        self.text = f"training: {epochs} epochs of {steps_per_epoch} steps at most"

    def on_step(self, *, epoch: int, step: int, loss: float, images_per_s: float) -> None:
        if self.cancel:
            raise Cancelled
        self.text = f"epoch {epoch + 1}, step {step}: loss {loss:.3f}"


def train_and_segment(image: np.ndarray, labels: np.ndarray, out: Path, minutes: float, progress: Any,
                      **overrides: Any) -> tuple[Path, np.ndarray]:  # fmt: skip
    """Train on the painted image for at most ``minutes`` into ``out``; the model file and its labels of ``image``.

    Shape:
        ``image`` as a napari layer holds it (``(*S)``, ``(*S, C)`` RGB or ``(C, *S)``), ``labels`` ``(*S)``.
    """
    from unetkit.api import channels_first, predict
    from unetkit.napari._dataset import write_painted_dataset
    from unetkit.train.folder import train

    arr = np.asarray(image)
    chans = 1 if arr.ndim == labels.ndim else (arr.shape[-1] if arr.shape[:-1] == labels.shape else arr.shape[0])
    data = write_painted_dataset(channels_first(arr, labels.ndim, chans), np.asarray(labels), out / "painted")
    model = train(data, out / "run", budget=f"{minutes}m", callbacks=[progress],
                  **{"train__max_minutes": minutes, **overrides})  # fmt: skip
    progress.text = "segmenting with the new model"
    return model, predict(model, arr, channel_axis=None if chans == 1 or arr.shape[0] == chans else -1)


class TrainWidget(QWidget):
    """Image layer, painted labels layer, minutes, run folder, Train / Cancel, progress and status."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.progress_state: _Progress | None = None
        self.overrides: dict[str, Any] = {}  # extra training settings (``section__key=value``), e.g. for tests
        self.image, self.labels = QComboBox(), QComboBox()
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.1, 600.0)
        self.minutes.setValue(5.0)
        self.minutes.setSuffix(" min")
        self.out = QLineEdit(str(Path.cwd() / "runs" / "napari"))
        self.train_button, self.cancel_button = QPushButton("Train, then segment"), QPushButton("Cancel")
        self.train_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        box = QVBoxLayout(self)
        for text, widget in (("image layer", self.image), ("painted labels layer", self.labels),
                             ("time budget", self.minutes), ("run folder", self.out)):  # fmt: skip
            box.addWidget(QLabel(text))
            box.addWidget(widget)
        for widget in (self.train_button, self.cancel_button, self.bar, self.status):
            box.addWidget(widget)
        self.timer = QTimer(self)
        self.timer.setInterval(250)
        self.timer.timeout.connect(self._poll)
        self.viewer.layers.events.inserted.connect(self._reset_choices)
        self.viewer.layers.events.removed.connect(self._reset_choices)
        self._reset_choices()

    def _reset_choices(self, *_: Any) -> None:
        import napari.layers

        for combo, kind in ((self.image, napari.layers.Image), (self.labels, napari.layers.Labels)):
            current = combo.currentText()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)]
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)

    def run(self) -> Any:
        """Start training in a worker thread (returned; ``None`` when the layers are not usable)."""
        layers = self.viewer.layers
        image, labels = self.image.currentText(), self.labels.currentText()
        if image not in layers or labels not in layers:
            self.status.setText("choose an image layer and a labels layer painted over it")
            return None
        out = Path(self.out.text()).expanduser()
        if (out / "run" / "checkpoints" / "last.safetensors").exists():
            self.status.setText(f"{out} already holds a run: choose another run folder")
            return None
        self.progress_state = state = _Progress()
        minutes = float(self.minutes.value())
        worker = thread_worker(train_and_segment)(np.asarray(layers[image].data), np.asarray(layers[labels].data),
                                                  out, minutes, state, **self.overrides)  # fmt: skip
        worker.returned.connect(lambda result: self._done(layers[image], result))
        worker.errored.connect(self._failed)
        worker.finished.connect(self._finished)
        self.worker, self.started, self.budget = worker, time.monotonic(), minutes * 60
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.timer.start()
        worker.start()
        return worker

    def cancel(self) -> None:
        if self.progress_state is not None:
            self.progress_state.cancel = True

    def _poll(self) -> None:
        if self.progress_state is not None:
            self.status.setText(self.progress_state.text)
            self.bar.setValue(min(99, round(100 * (time.monotonic() - self.started) / self.budget)))

    def _failed(self, exc: BaseException) -> None:
        self.status.setText("cancelled" if isinstance(exc, Cancelled) else f"failed: {exc}")

    def _finished(self) -> None:
        self.timer.stop()
        self.worker = None
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _done(self, layer: Any, result: tuple[Path, np.ndarray]) -> None:
        from unetkit.modelfile import read_description
        from unetkit.napari._widget import label_colormap

        model, labels = result
        desc = read_description(model)
        scale = tuple(layer.scale)[-labels.ndim :]
        self.viewer.add_labels(labels, name=f"{layer.name} labels ({os.path.basename(model.parent)})", scale=scale,
                               colormap=label_colormap(list(desc.class_colours)))  # fmt: skip
        self.bar.setValue(100)
        self.status.setText(f"model: {model} (segment other images with it in Segment or restore (unetkit))")
