from __future__ import annotations

from pathlib import Path

from unetkit.demo import run_demo


def test_demo_end_to_end_small(tmp_path: Path) -> None:
    r = run_demo(tmp_path / "demo", epochs=2, iterations_per_epoch=3, n_train=3, size=96, test_size=160)
    assert r.model_path.is_file() and r.overlay_path.is_file() and r.curves_path.is_file()
    assert 0.0 <= r.dice <= 1.0 and r.image_shape == (160, 160)
