"""Score restored images against their targets: PSNR, SSIM, NRMSE per file and their means.

Writes ``OUT/metrics.csv`` (one row per image), ``OUT/summary.json`` (the means), ``OUT/report.html`` (the
tables and, when the inputs are given, the panels worst PSNR first) and a panel per image
(``OUT/panels/<stem>.png``: input | output | target, with a zoomed crop) when the inputs are given.

Where the inputs are given and have their targets' shape, each input is scored too, as the "before":
:func:`~unetkit.metrics.scale_matched` to its target first, so a dimmer or offset input (a lower exposure,
CARE's usual case) is not penalised for its scale (``input_psnr``, ``input_ssim``, ``input_nrmse`` per image;
``input`` and ``psnr_gain`` in the summary).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io import is_image_file, read_image, strip_suffix
from unetkit.errors import DataError
from unetkit.metrics import restore_scores, scale_matched
from unetkit.utils import atomic_path, remove_temporaries

METRICS = ("psnr", "ssim", "nrmse")


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError("not a folder", file=folder, fix="give the folder of images")
    return {strip_suffix(p.name): p for p in sorted(folder.iterdir()) if is_image_file(p) and "_panel" not in p.name}


def holds_intensities(folder: str | Path) -> bool:
    """Whether ``folder``'s first image (by name) holds intensities, not labels: floating-point values that are
    not all whole numbers (read from a strided sample, not the whole file). Masks and label predictions never
    do; restored images (float32 by default) and most restoration targets do.

    >>> import tempfile; from unetkit.data.io import write_image
    >>> d = Path(tempfile.mkdtemp()); write_image(d / "a.tif", np.array([[0.5, 1.0]], np.float32), spatial_dims=2)
    >>> holds_intensities(d)
    True
    """
    from unetkit.data.io import open_image

    files = sorted(_by_stem(Path(folder)).values()) if Path(folder).is_dir() else []
    if not files:
        return False
    with open_image(files[0]) as img:
        if np.dtype(img.dtype).kind != "f":
            return False
        step = [max(1, int(n) // 64) for n in img.shape[1:]]
        sample = np.asarray(img[(slice(None), *(slice(None, None, k) for k in step))])
    finite = sample[np.isfinite(sample)]
    return bool(finite.size) and not np.array_equal(finite, np.round(finite))


def evaluate_restore(
    pred: str | Path, truth: str | Path, out: str | Path, *, images: str | Path | None = None, panels: int = 12
) -> dict[str, Any]:
    """Score every prediction in ``pred`` against the target of the same stem in ``truth``.

    The data range of PSNR and SSIM is each target's ``max - min``.

    Returns:
        ``{"images": n, "psnr": mean, "ssim": mean, "nrmse": mean, "per_image": [...]}`` (also in
        ``summary.json``), with ``"input": {"psnr", "ssim", "nrmse", "scaled"}`` (the scale-matched inputs'
        means) and ``"psnr_gain"`` (restored minus input, dB) where every input was scored.

    Raises:
        DataError: a prediction without a target, or sizes that differ (every such file named).
    """
    preds, truths = _by_stem(Path(pred)), _by_stem(Path(truth))
    inputs = _by_stem(Path(images)) if images is not None else {}
    problems = [f"{p}: no target {stem}.* in {truth}" for stem, p in preds.items() if stem not in truths]
    rows: list[dict[str, Any]] = []
    pictures: dict[str, bytes] = {}
    out = Path(out)
    for written in ("metrics.csv", "summary.json", "report.html", *(f"panels/{stem}.png" for stem in preds)):
        remove_temporaries(out / written)  # of a killed earlier run
    for stem, p in preds.items():
        if stem not in truths:
            continue
        a, b = read_image(p).array, read_image(truths[stem]).array
        if a.shape != b.shape:
            problems.append(f"{p}: shape {a.shape} differs from its target's {b.shape}")
            continue
        row: dict[str, Any] = {"image": stem, **restore_scores(a, b)}
        rows.append(row)
        x = read_image(inputs[stem]).array if stem in inputs else None
        if x is not None and x.shape == b.shape:
            row.update({f"input_{k}": v for k, v in restore_scores(scale_matched(x, b), b).items()})
        if x is not None and len(rows) <= panels:
            from unetkit.viz.restore import restore_panel_png

            (out / "panels").mkdir(parents=True, exist_ok=True)
            scores = {"PSNR": row["psnr"], "SSIM": row["ssim"]}
            png = restore_panel_png(x, a, b, scores=scores)
            with atomic_path(out / "panels" / f"{stem}.png") as tmp:
                tmp.write_bytes(png)
            pictures[stem] = png
    if problems:
        raise DataError(
            f"{len(problems)} problem(s) pairing predictions with targets:\n  " + "\n  ".join(problems),
            fix="name each prediction like its target (the same stem)",
        )
    if not rows:
        raise DataError(
            "no predictions found", file=pred, fix="predict first (unetkit predict MODEL IMAGES --out PRED)"
        )
    out.mkdir(parents=True, exist_ok=True)
    before = all("input_psnr" in r for r in rows)  # every input scored: the means compare like with like
    names = [*METRICS, *(f"input_{k}" for k in METRICS)] if before else list(METRICS)
    rows = [{k: r[k] for k in ("image", *names)} for r in rows]
    with atomic_path(out / "metrics.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", *names])
        w.writeheader()
        w.writerows(rows)
    summary: dict[str, Any] = {"images": len(rows), **_means(rows, "")}
    if before:
        summary["input"] = {**_means(rows, "input_"), "scaled": "least squares, per channel (scale_matched)"}
        summary["psnr_gain"] = summary["psnr"] - summary["input"]["psnr"]
    summary["per_image"] = rows
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    _write_html(out / "report.html", summary, rows, pictures)
    return summary


def _means(rows: list[dict[str, Any]], prefix: str) -> dict[str, float]:
    """The mean of each metric over the images where it is finite (NaN where it is nowhere)."""
    means = {}
    for k in METRICS:
        vals = [r[prefix + k] for r in rows if math.isfinite(r[prefix + k])]
        means[k] = float(np.mean(vals)) if vals else math.nan
    return means


def _write_html(path: Path, summary: dict[str, Any], rows: list[dict[str, Any]], pictures: dict[str, bytes]) -> None:
    """The report: the means, the images worst PSNR first, their panels (input | output | target)."""
    from unetkit.viz.report import write_report

    worst = sorted(rows, key=lambda r: (not math.isfinite(r["psnr"]), r["psnr"]))
    panels = [(f"{r['image']}: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}", pictures[r["image"]])
              for r in worst if r["image"] in pictures]  # fmt: skip
    scalars = {k: v for k, v in summary.items() if k not in ("per_image", "input")}
    scalars.update({f"input_{k} (scale-matched)": v for k, v in summary.get("input", {}).items() if k in METRICS})
    write_report(path, scalars, worst, panels, title="unetkit restoration evaluation",
                 panel_heading="Panels (worst PSNR first): input | output | target, zoomed crops below")  # fmt: skip
