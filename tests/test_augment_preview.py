from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from unetkit.augment import AugmentConfig
from unetkit.augment.preview import render_preview
from unetkit.cli import app, main

runner = CliRunner()


def sample(shape: tuple[int, ...], seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    image = rng.random((1, *shape), dtype=np.float32)
    mask = (image[0] > 0.7).astype(np.int64) + (image[0] > 0.9)
    return SimpleNamespace(image=image, mask=mask, weight=None, name=f"s{seed}")


@pytest.mark.parametrize("shape", [(40, 48), (10, 24, 24)])
def test_render_preview_writes_a_grid(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = render_preview([sample(shape), sample(shape, 1)], tmp_path / "p.png", n=4, seed=0)
    with Image.open(path) as png:
        width, height = png.size
    assert height == pytest.approx(width * 4 / 3, rel=0.01)  # one row of three panels per patch
    again = render_preview([sample(shape), sample(shape, 1)], tmp_path / "q.png", n=4, seed=0)
    assert again.read_bytes() == path.read_bytes()  # the seed replays
    other = render_preview([sample(shape), sample(shape, 1)], tmp_path / "r.png", n=4, seed=1)
    assert other.read_bytes() != path.read_bytes()
    plain = render_preview(
        [sample(shape), sample(shape, 1)], tmp_path / "s.png", n=4, seed=0, config=AugmentConfig.none()
    )
    assert plain.read_bytes() != path.read_bytes()


def test_cli_help_and_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = runner.invoke(app, ["augment-preview", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output
    cfg = tmp_path / "aug.yaml"
    cfg.write_text("elastic:\n  sigmaa: 3\n")
    with pytest.raises(SystemExit) as exc:
        main(["augment-preview", str(tmp_path), "--config", str(cfg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "elastic.sigmaa" in err and "Traceback" not in err


def test_a_restoration_folder_is_named_with_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unetkit.synthetic import write_restore_dataset

    write_restore_dataset(str(tmp_path / "d"), n=1, shape=(32, 32), seed=0)
    with pytest.raises(SystemExit) as exc:
        main(["augment-preview", str(tmp_path / "d"), "--out", str(tmp_path / "p.png")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "restoration dataset" in err and "--task restore" in err and "Traceback" not in err
    assert not (tmp_path / "p.png").exists()


def test_cli_writes_preview_from_a_dataset_folder(tmp_path: Path) -> None:
    pytest.importorskip("unetkit.data.datasets", reason="load_dataset comes with the data branch")
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(2):
        image = (rng.random((64, 64)) * 255).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / "data" / "images" / f"{i}.png")
        Image.fromarray(((image > 128) * 255).astype(np.uint8)).save(tmp_path / "data" / "masks" / f"{i}.png")
    out = tmp_path / "preview.png"
    result = runner.invoke(app, ["augment-preview", str(tmp_path / "data"), "--out", str(out), "--n", "2"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000 and "wrote" in result.output


def test_real_data_preview(shared_data: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("unetkit.data.datasets", reason="load_dataset comes with the data branch")
    dataset = datasets.load_dataset(shared_data / "isbi2012")
    path = render_preview(dataset.samples[:2], tmp_path / "isbi.png", n=2, patch_size=128)
    assert path.stat().st_size > 10_000
