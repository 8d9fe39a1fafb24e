"""The napari training widgets: train on an image layer, then predict it with the new model.

:class:`TrainWidget` takes a labels layer painted over the image; :class:`RestoreTrainWidget` a clean target
image layer (CARE), or none: Noise2Void, from the noisy image alone. The layers become a four-tile dataset
(:mod:`unetkit.napari._dataset`) in the run folder; :func:`unetkit.train.folder.train` plans and trains it
within the time budget (as ``unetkit train DATA --budget``, ``--task restore`` for a restoration) in a worker
thread, and the new model then segments the image (a labels layer, as the segment widget adds) or restores it
(an image layer). Cancel stops the training at the next step.
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


def _layer_channels_first(data: Any, rgb: bool) -> np.ndarray:
    """A napari image layer's array as ``(C, *S)``: an RGB(A) layer's last axis is its channels."""
    arr = np.asarray(data)
    return np.moveaxis(arr, -1, 0) if rgb else arr[None]


def train_and_restore(image: np.ndarray, target: np.ndarray | None, out: Path, minutes: float, progress: Any,
                      **overrides: Any) -> tuple[Path, np.ndarray]:  # fmt: skip
    """Train a restoration on ``image`` and its clean ``target`` (CARE; ``None``: Noise2Void from ``image``
    alone) for at most ``minutes`` into ``out``; the model file and ``image`` restored by it.

    Shape:
        ``image`` ``(C, *S)``, ``target`` ``(C_out, *S)`` or None -> restored ``(C_out, *S)``.
    """
    from unetkit.api import predict
    from unetkit.napari._dataset import write_restore_layers
    from unetkit.train.folder import train

    data = write_restore_layers(image, target, out / "pairs")
    settings = {"task": "restore", "restore__self_supervised": target is None, "train__max_minutes": minutes}
    model = train(data, out / "run", budget=f"{minutes}m", callbacks=[progress], **{**settings, **overrides})
    progress.text = "restoring with the new model"
    return model, predict(model, image, channel_axis=0)


class TrainWidget(QWidget):
    """Image layer, painted labels layer, minutes, run folder, Train / Cancel, progress and status."""

    #: the second layer: its label, its napari kind and the entry for "none" (``None``: one must be chosen)
    SECOND: tuple[str, str, str | None] = ("painted labels layer", "Labels", None)
    BUTTON = "Train, then segment"
    FOLDER = "napari"

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
        self.out = QLineEdit(str(Path.cwd() / "runs" / self.FOLDER))
        self.train_button, self.cancel_button = QPushButton(self.BUTTON), QPushButton("Cancel")
        self.train_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        box = QVBoxLayout(self)
        for text, widget in (("image layer", self.image), (self.SECOND[0], self.labels),
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

        none = self.SECOND[2]
        for combo, kind, first in ((self.image, napari.layers.Image, None),
                                   (self.labels, getattr(napari.layers, self.SECOND[1]), none)):  # fmt: skip
            current = combo.currentText()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)]
            names = [first, *names] if first is not None else names
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)

    def job(self, image: Any, second: Any, out: Path, minutes: float, state: _Progress) -> Any:
        """The worker's work: train on the layers, then predict the image (:func:`train_and_segment`)."""
        return train_and_segment(np.asarray(image.data), np.asarray(second.data), out, minutes, state,
                                 **self.overrides)  # fmt: skip

    def run(self) -> Any:
        """Start training in a worker thread (returned; ``None`` when the layers are not usable)."""
        layers = self.viewer.layers
        image, labels = self.image.currentText(), self.labels.currentText()
        none = self.SECOND[2] is not None and labels == self.SECOND[2]
        if image not in layers or (labels not in layers and not none):
            self.status.setText(f"choose an image layer and the {self.SECOND[0]}")
            return None
        out = Path(self.out.text()).expanduser()
        if (out / "run" / "checkpoints" / "last.safetensors").exists():
            self.status.setText(f"{out} already holds a run: choose another run folder")
            return None
        self.progress_state = state = _Progress()
        minutes = float(self.minutes.value())
        worker = thread_worker(self.job)(layers[image], None if none else layers[labels], out, minutes, state)
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


class RestoreTrainWidget(TrainWidget):
    """Train a restoration on an image layer: with a clean target image layer (CARE), or with none
    (Noise2Void, the noisy image alone); then restore the image with the new model (an image layer)."""

    SECOND = ("clean target layer", "Image", "none: Noise2Void (the image alone)")
    BUTTON = "Train, then restore"
    FOLDER = "napari-restore"

    def job(self, image: Any, second: Any, out: Path, minutes: float, state: _Progress) -> Any:
        """Train a restoration (:func:`train_and_restore`) on the layers as ``(C, *S)`` arrays."""
        target = None if second is None else _layer_channels_first(second.data, bool(second.rgb))
        return train_and_restore(_layer_channels_first(image.data, bool(image.rgb)), target, out, minutes, state,
                                 **self.overrides)  # fmt: skip

    def _done(self, layer: Any, result: tuple[Path, np.ndarray]) -> None:
        from unetkit.napari._widget import add_restored

        model, restored = result
        status = add_restored(self.viewer, layer, restored, f"{layer.name} restored ({os.path.basename(model.parent)})")
        self.bar.setValue(100)
        self.status.setText(f"{status}; model: {model} (restore other images with it in Segment or restore (unetkit))")
