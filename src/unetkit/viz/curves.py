"""Training curves from the ``metrics.csv`` a training run writes (one row per epoch)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from unetkit.errors import DataError
from unetkit.viz._save import figure, save_figure

__all__ = ["plot_curves", "read_metrics_csv"]


def read_metrics_csv(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """Read a metrics CSV into ``{column: values}``; empty cells become nan. Needs an ``epoch`` column.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
    >>> _ = p.write_text("epoch,train_loss,val_dice\\n1,0.9,\\n2,0.5,0.7\\n")
    >>> read_metrics_csv(p)["val_dice"]
    [nan, 0.7]
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such metrics file", file=path, fix="give the metrics.csv a training run wrote")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "epoch" not in rows[0]:
        raise DataError("expected a CSV with a header that has an 'epoch' column and one row per epoch", file=path)
    out: dict[str, list[float]] = {}
    for col in rows[0]:
        values = []
        for r in rows:
            cell = (r.get(col) or "").strip()
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                values.append(math.nan)
        if not all(math.isnan(v) for v in values):
            out[col] = values
    return out


def plot_curves(csv_path: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path:
    """Plot a training run's ``metrics.csv`` per epoch; write a PNG.

    Three panels: the losses (columns with ``loss`` in their name, log scale when all positive); the scores
    (every column whose values lie in [0, 1]: Dice, IoU, per class thinner and dashed); the rest
    (images/s, ...), with the learning rate on its own axis. Returns the written path.
    """
    data = read_metrics_csv(csv_path)
    epochs = data.pop("epoch")
    losses = {k: v for k, v in data.items() if "loss" in k}
    lr = {k: v for k, v in data.items() if k in ("lr", "learning_rate")}
    rest = {k: v for k, v in data.items() if k not in losses and k not in lr and k not in ("time", "seconds")}
    scores = {k: v for k, v in rest.items() if all(0.0 <= x <= 1.0 for x in v if not math.isnan(x))}
    others = {k: v for k, v in rest.items() if k not in scores}
    fig = figure(14, 3.8)
    ax_loss, ax_score, ax_other = fig.subplots(1, 3)

    def draw(ax: Any, series: dict[str, list[float]], title: str) -> None:
        for name, values in series.items():
            main = not name.startswith(("dice_", "iou_"))
            ax.plot(epochs, values, marker="o" if len(epochs) < 30 else None, ms=3 if main else 2, label=name,
                    lw=1.6 if main else 0.9, ls="-" if main else "--")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=7)

    draw(ax_loss, losses, "loss")
    if losses and all(v > 0 for vals in losses.values() for v in vals if not math.isnan(v)):
        ax_loss.set_yscale("log")
    draw(ax_score, scores, "scores")
    ax_score.set_ylim(0, 1)
    draw(ax_other, others, "throughput")
    if lr:
        ax_lr = ax_other.twinx()
        for name, values in lr.items():
            ax_lr.plot(epochs, values, color="grey", ls="--", lw=1, label=name)
        ax_lr.set_ylabel("learning rate", fontsize=8)
    out = Path(out_png)
    save_figure(fig, out)
    return out
