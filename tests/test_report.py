"""The HTML report: self-contained, bounded in size, sortable, with provenance and the run's pictures; and,
when a Chromium is installed, loaded in a real headless browser (no console errors, every image loads, no
horizontal overflow at 1280 px, the table sorts, a screenshot saved)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from unetkit.cli import main
from unetkit.data.io import write_image
from unetkit.viz import save_panel
from unetkit.viz._save import png_bytes
from unetkit.viz.curves import plot_curves
from unetkit.viz.panels import panel_png
from unetkit.viz.report import IMAGE_BUDGET_BYTES, metric_direction, render_report, run_pictures, write_report

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def _browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def _report(tmp_path: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    rows = [
        {"name": f"im{i:02d}", "dice": float(rng.random()), "hd95": float(rng.random() * 9), "dice_c1": 0.5}
        for i in range(n)
    ]
    rows[3]["dice"] = float("nan")
    panels = []
    for i in range(n):  # noisy panels compress badly: the size bound has to hold anyway
        truth = (rng.random((200, 300)) > 0.5).astype(int)
        panels.append((f"im{i:02d}", panel_png(rng.random((200, 300)), truth, 1 - truth)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,train_loss,val_dice,lr\n1,0.9,0.5,0.001\n2,0.6,0.7,0.0005\n")
    plot_curves(run / "metrics.csv", run / "curves.png")
    (run / "val_pictures").mkdir()
    save_panel(run / "val_pictures" / "latest.png", None, np.eye(64, dtype=int), np.eye(64, dtype=int))
    summary = {"dice": 0.5, "hd95": 3.0, "dice_per_class": [0.9, 0.5]}
    return write_report(tmp_path / "report.html", summary, rows, panels, run=run_pictures(run))


def test_metric_directions() -> None:
    assert [metric_direction(m) for m in ("dice", "iou_c2", "psnr", "rand_error", "hd95", "assd", "name")] == [
        "higher", "higher", "higher", "lower", "lower", "lower", "",
    ]  # fmt: skip


def test_report_is_self_contained_bounded_and_has_provenance(tmp_path: Path) -> None:
    path = _report(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 1.5e6 and path.stat().st_size < IMAGE_BUDGET_BYTES * 4 / 3 + 100_000
    assert not re.search(r"(src|href)=['\"](https?:|//)", text)  # nothing fetched from anywhere
    assert text.count("<img") == 14  # 12 panels, the curves and the validation picture
    for word in ("Provenance", "unetkit", "command", "machine", "training curves", "validation pictures"):
        assert word in text
    assert "class='sortable'" in text and "↑" in text and "↓" in text  # directions shown


def test_report_table_cells_are_escaped() -> None:
    text = render_report({}, [{"name": "<script>alert(1)</script>", "dice": 0.5}], info={})
    assert "<script>alert(1)" not in text


def test_evaluate_report_names_data_digest_and_command(tmp_path: Path) -> None:
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    for i in range(2):
        m = np.zeros((32, 32), np.uint8)
        m[4 + i : 20, 4:20] = 255
        write_image(truth / f"s{i}.png", m)
        write_image(pred / f"s{i}.png", np.roll(m, 2, axis=1))
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(tmp_path / "ev"), "--no-warping"])
    assert exc.value.code in (0, None)
    text = (tmp_path / "ev" / "report.html").read_text(encoding="utf-8")
    assert "sha256:" in text and str(truth) in text and "evaluate" in text


def test_thumbnails_keep_small_pictures_small() -> None:
    from unetkit.viz.report import thumbnail

    tiny = png_bytes(np.zeros((10, 10, 3), np.uint8))
    assert len(thumbnail(tiny, 50_000)) < 5_000


def test_report_in_a_headless_browser(tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)}); .ci/run installs one")
    path = _report(tmp_path)
    url = path.resolve().as_uri() + "#sort=dice:asc"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    consoles = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert consoles == [], consoles  # the page logs nothing: no errors, no warnings
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body is not None
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-ready") == "1", attrs  # the script ran to its end
    assert "data-js-error" not in attrs, attrs
    assert attrs.get("data-images") == "14/14", attrs  # every embedded picture decoded
    assert attrs.get("data-overflow") == "false", attrs  # nothing wider than a 1280 px window
    table = dom.stdout[dom.stdout.index('id="per-image"') :]
    assert 'data-sorted="dice:asc"' in table[:200]
    values = re.findall(r'<td data-v="([^"]*)">im\d\d</td><td data-v="([^"]*)"', table)
    dice = [float(v) for _, v in values if v]
    assert len(dice) == 11 and dice == sorted(dice)  # ascending, the nan row last
    assert values[-1][1] == ""
    shot = tmp_path / "report.png"
    artefacts = os.environ.get("UNETKIT_TEST_ARTEFACTS")
    subprocess.run([*flags, f"--screenshot={shot}", path.resolve().as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    if artefacts:
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artefacts) / "report.png")
