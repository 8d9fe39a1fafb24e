"""Training curves from the ``metrics.csv`` a training run writes (one row per epoch)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

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


_SKIP = ("epoch", "time", "seconds", "lr", "learning_rate", "images_per_s")


def _finite(epochs: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    """The (epoch, value) points with a value: validation runs every few epochs, and lines join them."""
    pts = [(e, v) for e, v in zip(epochs, values, strict=True) if math.isfinite(v)]
    return [e for e, _ in pts], [v for _, v in pts]


def plot_curves(csv_path: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path:
    """Plot a training run's ``metrics.csv`` per epoch; write a PNG.

    Three panels, whole-number epochs on every x axis, each series drawn once:

    * **loss**: the training and validation losses (log scale when all positive);
    * **validation**: the mean scores in [0, 1] (Dice, IoU, SSIM) bold, the per-class ones thin and dashed,
      other validation values (PSNR) on a second axis; the best epoch is marked on the panel of the metric
      it was judged by (:func:`unetkit.metrics.best.score_key`: Noise2Void's ``val_loss`` on the loss panel);
    * **learning rate** on its own (log) axis, with patches/s on a second axis.

    Returns the written path.
    """
    from matplotlib.ticker import MaxNLocator

    from unetkit.metrics.best import LOWER_IS_BETTER, score_key

    data = read_metrics_csv(csv_path)
    epochs = data.get("epoch", [])
    losses = {k: v for k, v in data.items() if "loss" in k}
    lr = next((data[k] for k in ("lr", "learning_rate") if k in data), None)
    rate = data.get("images_per_s")
    rest = {k: v for k, v in data.items() if k not in losses and k not in _SKIP}
    unit = {k: v for k, v in rest.items() if all(0.0 <= x <= 1.0 for x in v if math.isfinite(x))}
    other = {k: v for k, v in rest.items() if k not in unit}
    fig = figure(15, 4.2)
    ax_loss, ax_val, ax_lr = fig.subplots(1, 3)
    marker = "o" if len(epochs) <= 40 else None

    for name, values in losses.items():
        ax_loss.plot(*_finite(epochs, values), marker=marker, ms=3, lw=1.6, label=name)
    if losses and all(v > 0 for vals in losses.values() for v in vals if math.isfinite(v)):
        ax_loss.set_yscale("log")
    ax_loss.set_title("loss (lower is better)", fontsize=10)

    means = [k for k in unit if k.startswith("val_")]
    for name in [*means, *(k for k in unit if k not in means)]:
        main = name in means
        ax_val.plot(*_finite(epochs, unit[name]), marker=marker if main else None, ms=3, label=name,
                    lw=1.8 if main else 0.8, ls="-" if main else "--", alpha=1.0 if main else 0.7)  # fmt: skip
    judge = score_key(data)  # the metric training judged "best" by, marked where it is drawn
    if judge != "train_loss":
        xs, ys = _finite(epochs, data[judge])
        if ys:
            lower = judge in LOWER_IS_BETTER
            best = (min if lower else max)(range(len(ys)), key=ys.__getitem__)
            (ax_loss if lower else ax_val).axvline(
                xs[best], color="grey", lw=0.8, ls=":", label=f"best: epoch {int(xs[best])}, {ys[best]:.3g}"
            )
    if unit:
        ax_val.set_ylim(0, 1.02)
    if other:
        ax_other = ax_val.twinx()
        for name, values in other.items():
            ax_other.plot(*_finite(epochs, values), color="black", lw=1.2, ls="-.", label=name)
        ax_other.set_ylabel(", ".join(other), fontsize=8)
        ax_other.legend(fontsize=7, loc="lower left")
    ax_val.set_title("validation (higher is better)", fontsize=10)

    if lr is not None:
        ax_lr.plot(*_finite(epochs, lr), color="tab:green", lw=1.4, label="learning rate")
        if all(v > 0 for v in lr if math.isfinite(v)):
            ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate", fontsize=8)
    if rate is not None:
        ax_rate = ax_lr.twinx()
        ax_rate.plot(*_finite(epochs, rate), color="tab:grey", lw=1, ls="--", label="patches/s")
        ax_rate.set_ylabel("patches/s", fontsize=8)
        ax_rate.legend(fontsize=7, loc="lower right")
    ax_lr.set_title("learning rate and speed", fontsize=10)

    for ax in (ax_loss, ax_val, ax_lr):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out = Path(out_png)
    save_figure(fig, out)
    return out
