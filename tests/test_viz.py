from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.errors import DataError
from unetkit.viz import (
    colourise,
    error_map,
    max_projection,
    montage,
    orthogonal_slices,
    overlay,
    palette,
    panel_png,
    plot_curves,
    save_montage,
    save_panel,
    to_display,
    write_report,
)
from unetkit.viz.overlay import FN_COLOUR, FP_COLOUR


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:32, :40]
    truth = ((yy - 16) ** 2 + (xx - 20) ** 2 <= 81).astype(np.int64)
    pred = np.roll(truth, 3, axis=1)
    image = truth * 100.0 + np.random.default_rng(0).normal(0, 5, truth.shape)
    return image, truth, pred


def test_overlay_alpha_and_contours() -> None:
    image, truth, _ = _scene()
    out = overlay(image, truth, alpha=0.0, contours=True)
    colour = np.array(palette(2)[1])
    edge = (out == colour).all(-1)
    assert edge.any() and not edge[16, 20]  # the contour is drawn, the inside is not painted
    filled = overlay(image, truth, alpha=1.0, contours=False)
    assert (filled[16, 20] == colour).all() and (filled[0, 0] == to_display(image)[0, 0]).all()
    with pytest.raises(DataError, match="alpha"):
        overlay(image, truth, alpha=2)
    with pytest.raises(DataError, match="shape"):
        overlay(image, truth[:5])
    assert colourise(np.array([[2]]), colours=[(0, 0, 0), (1, 1, 1), (9, 9, 9)]).tolist() == [[[9, 9, 9]]]


def test_error_map_colours() -> None:
    _, truth, pred = _scene()
    em = error_map(pred, truth)
    fp = (pred == 1) & (truth == 0)
    fn = (pred == 0) & (truth == 1)
    assert (em[fp] == FP_COLOUR).all() and (em[fn] == FN_COLOUR).all()
    assert (em[(pred == truth)] == 0).all()


def test_panels_2d_and_3d(tmp_path: Path) -> None:
    image, truth, pred = _scene()
    save_panel(tmp_path / "p.png", image, truth, pred, title="case")
    with Image.open(tmp_path / "p.png") as im:
        assert im.size[0] > 3 * im.size[1] / 2  # four pictures side by side
    vol_t = np.stack([truth, truth, truth])
    vol_p = np.stack([truth, pred, truth])
    png = panel_png(np.stack([image] * 3), vol_t, vol_p)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == [tmp_path / "p.png"]  # no temporary files left behind


def test_montage(tmp_path: Path) -> None:
    tiles = [np.full((4, 5, 3), i * 40, np.uint8) for i in range(5)]
    m = montage(tiles, ncols=3, pad=1, fill=7)
    assert m.shape == (2 * 4 + 1, 3 * 5 + 2, 3)
    assert (m[0, 0] == 0).all() and (m[5, 0] == 120).all() and (m[0, 5] == 7).all()
    save_montage(tmp_path / "m.png", [np.zeros((3, 3)), np.ones((2, 2))])
    assert (tmp_path / "m.png").stat().st_size > 0
    with pytest.raises(DataError):
        montage([])


def test_volume_views() -> None:
    vol = np.zeros((6, 10, 12), np.float32)
    vol[3, 5, 6] = 1.0
    labels = (vol > 0).astype(int)
    ortho = orthogonal_slices(vol, labels, point=(3, 5, 6), pad=2)
    assert ortho.shape == (10 + 6 + 2, 12 + 6 + 2, 3)
    stretched = orthogonal_slices(vol, spacing=(2.0, 1.0, 1.0), pad=2)
    assert stretched.shape == (10 + 12 + 2, 12 + 12 + 2, 3)
    mip = max_projection(vol, axis=1)
    assert mip.shape == (6, 12, 3) and mip[3, 6].max() == 255
    with pytest.raises(DataError):
        max_projection(np.zeros((2, 2)))


def test_plot_curves(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,train_loss,val_loss,val_dice,lr\n1,0.9,0.95,0.3,1e-3\n2,0.6,0.7,0.5,1e-3\n3,0.4,,0.6,5e-4\n")
    out = plot_curves(csv, tmp_path / "curves.png")
    with Image.open(out) as im:
        assert im.size[0] > 400
    with pytest.raises(DataError, match="epoch"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        plot_curves(bad, tmp_path / "x.png")


def test_report_is_self_contained(tmp_path: Path) -> None:
    image, truth, pred = _scene()
    png = panel_png(image, truth, pred)
    out = write_report(
        tmp_path / "r.html",
        {"dice": 0.8, "dice_per_class": [0.9, 0.7]},
        [{"name": "a<b>", "dice": 0.7}],
        [("a", png)],
        notes=["note"],
    )
    text = out.read_text()
    assert "a&lt;b&gt;" in text and "http" not in text.replace("http-equiv", "")
    data = re.search(r"base64,([A-Za-z0-9+/=]+)", text)
    assert data is not None  # the panel, re-encoded as a JPEG thumbnail of the same size
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(data.group(1)))) as shown, Image.open(io.BytesIO(png)) as src:
        assert shown.format == "JPEG" and shown.size == src.size
