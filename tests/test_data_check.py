from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unetkit.cli import app
from unetkit.data.check import check_dataset
from unetkit.data.io import write_image
from unetkit.errors import DataError

RNG = np.random.default_rng(1)


def _pair(root: Path, name: str, image: np.ndarray, mask: np.ndarray, img_ext: str = ".png", msk_ext: str = ".png"):
    write_image(root / "images" / f"{name}{img_ext}", image)
    write_image(root / "masks" / f"{name}{msk_ext}", mask)


def _good(root: Path, n: int = 3) -> None:
    for i in range(n):
        img = RNG.integers(0, 255, (16, 16)).astype(np.uint8)
        _pair(root, f"s{i}", img, (img > 128).astype(np.uint8) * 255)


def _problems(report) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in report.problems:
        out[p.file] = out.get(p.file, "") + p.problem + " | "
    return out


def test_good_dataset_passes_with_fingerprint(tmp_path: Path) -> None:
    _good(tmp_path)
    report = check_dataset(tmp_path, num_classes=2)
    assert report.ok, report.lines()
    fp = report.fingerprint
    assert (fp.num_samples, fp.spatial_dims, fp.in_channels, fp.image_dtype) == (3, 2, 1, "uint8")
    assert fp.size_min == [16, 16] and fp.label_mapping == "classes: 0->0, 255->1"
    assert sum(fp.class_counts) == 3 * 256 and fp.class_frequencies[0] == pytest.approx(fp.class_counts[0] / 768)
    assert set(fp.intensity) == {"mean", "std", "min", "max", "p0.5", "p50", "p99.5"}
    report.raise_for_problems()  # no-op


def test_digest_is_stable_and_content_sensitive(tmp_path: Path) -> None:
    _good(tmp_path)
    d1 = check_dataset(tmp_path).fingerprint.digest
    assert check_dataset(tmp_path).fingerprint.digest == d1
    (tmp_path / "masks" / "s0.png").touch()  # mtimes do not count
    assert check_dataset(tmp_path).fingerprint.digest == d1
    write_image(tmp_path / "masks" / "s0.png", np.zeros((16, 16), np.uint8))
    assert check_dataset(tmp_path).fingerprint.digest != d1


def test_every_bad_input_is_reported_together(tmp_path: Path) -> None:
    _good(tmp_path, 2)
    img = RNG.integers(0, 255, (16, 16)).astype(np.uint8)
    write_image(tmp_path / "images" / "nomask.png", img)  # image without mask
    write_image(tmp_path / "masks" / "noimage.png", img)  # mask without image
    _pair(tmp_path, "size", img, np.zeros((8, 16), np.uint8))  # size mismatch
    _pair(tmp_path, "labels", img, np.full((16, 16), 7, np.uint8))  # labels outside classes
    _pair(tmp_path, "dtype", img.astype(np.uint16), np.zeros((16, 16), np.uint8), img_ext=".tif")
    _pair(tmp_path, "rgb", np.stack([img] * 3), np.zeros((16, 16), np.uint8))  # channel count
    _pair(tmp_path, "vol", np.zeros((5, 16, 16), np.uint8), np.zeros((5, 16, 16), np.uint8), ".tif", ".tif")
    nan = np.zeros((1, 16, 16), np.float32)
    nan[0, 3, 3] = np.nan
    nan[0, 4, 4] = np.inf
    _pair(tmp_path, "nan", nan, np.zeros((16, 16), np.uint8), img_ext=".tif")
    (tmp_path / "images" / "empty.png").write_bytes(b"")
    write_image(tmp_path / "masks" / "empty.png", np.zeros((16, 16), np.uint8))
    _pair(tmp_path, "trunc", img, np.zeros((16, 16), np.uint8))
    data = (tmp_path / "masks" / "trunc.png").read_bytes()
    (tmp_path / "masks" / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "images" / "notes.txt").write_text("hi")

    report = check_dataset(tmp_path, num_classes=2)
    probs = _problems(report)
    assert "image has no mask" in probs["images/nomask.png"]
    assert "mask has no image" in probs["masks/noimage.png"]
    assert "size (8, 16) differs from image size (16, 16)" in probs["masks/size.png"]
    assert "values {7: 256 px} are outside the 2 classes" in probs["masks/labels.png"]
    assert "dtype uint16 differs" in probs["images/dtype.tif"]
    assert "channel count 3 differs" in probs["images/rgb.png"]
    assert "dimensionality 3D differs" in probs["images/vol.tif"]
    assert "2 NaN/Inf" in probs["images/nan.tif"]
    assert "0 bytes" in probs["images/empty.png"]
    assert "unreadable" in probs["masks/trunc.png"] or "truncated" in probs["masks/trunc.png"]
    assert "not an image format" in probs["images/notes.txt"]
    assert all(p.fix for p in report.problems)
    with pytest.raises(DataError) as exc:
        report.raise_for_problems()
    lines = str(exc.value).splitlines()
    assert len(lines) == 1 + len(report.problems) and "(fix: " in lines[1]


def test_check_shows_each_reader_fix_once(tmp_path: Path) -> None:
    _good(tmp_path, 1)
    (tmp_path / "images" / "empty.png").write_bytes(b"")
    write_image(tmp_path / "masks" / "empty.png", np.zeros((16, 16), np.uint8))
    _pair(tmp_path, "trunc", np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8), msk_ext=".tif")
    data = (tmp_path / "masks" / "trunc.tif").read_bytes()
    (tmp_path / "masks" / "trunc.tif").write_bytes(data[: len(data) // 2])
    report = check_dataset(tmp_path)
    probs = {p.file: p for p in report.problems}
    empty = probs["images/empty.png"]
    assert (empty.problem, empty.fix) == ("file is empty (0 bytes)", "re-export it or remove it from the dataset")
    for p in report.problems:
        assert "fix:" not in p.problem and str(tmp_path) not in p.problem, p
        assert str(p).count("fix") == 1, p
    res = CliRunner().invoke(app, ["check", str(tmp_path)])
    line = next(ln for ln in res.output.splitlines() if "images/empty.png" in ln)
    assert line.count("re-export") == 1 and line.count("fix") == 1, line


def test_float_mask_and_unknown_dataset(tmp_path: Path) -> None:
    img = np.zeros((8, 8), np.uint8)
    write_image(tmp_path / "images" / "a.png", img)
    write_image(tmp_path / "masks" / "a.tif", np.full((1, 8, 8), 0.5, np.float32))
    assert "non-integer" in _problems(check_dataset(tmp_path))["masks/a.tif"]
    with pytest.raises(DataError, match="not a dataset"):
        check_dataset(tmp_path / "images")


def test_list_files_csv_and_yaml(tmp_path: Path) -> None:
    img = RNG.integers(0, 255, (12, 12)).astype(np.uint8)
    write_image(tmp_path / "raw" / "x.tif", img)
    write_image(tmp_path / "lab" / "x_mask.png", (img > 100).astype(np.uint8))
    write_image(tmp_path / "raw" / "y.tif", img)
    write_image(tmp_path / "lab" / "y_mask.png", (img > 50).astype(np.uint8))
    (tmp_path / "pairs.csv").write_text("image,mask\nraw/x.tif,lab/x_mask.png\nraw/y.tif,lab/y_mask.png\n")
    (tmp_path / "pairs.yaml").write_text(
        "samples:\n  - {image: raw/x.tif, mask: lab/x_mask.png}\n  - [raw/y.tif, lab/y_mask.png]\n"
    )
    (tmp_path / "bad.csv").write_text("raw/x.tif,lab/missing.png\n")
    for f in ("pairs.csv", "pairs.yaml"):
        report = check_dataset(tmp_path / f, num_classes=2)
        assert report.ok and report.fingerprint.num_samples == 2, report.lines()
    bad = check_dataset(tmp_path / "bad.csv")
    assert any("missing.png does not exist" in p.problem for p in bad.problems)


def test_cli_check_ok_problems_and_json(tmp_path: Path) -> None:
    _good(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["check", str(tmp_path), "--num-classes", "2"])
    assert res.exit_code == 0, res.output
    assert "no problems" in res.output and "class frequencies" in res.output
    res = runner.invoke(app, ["check", str(tmp_path), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["fingerprint"]["num_samples"] == 3
    write_image(tmp_path / "images" / "orphan.png", np.zeros((16, 16), np.uint8))
    res = runner.invoke(app, ["check", str(tmp_path), "--json"])
    assert res.exit_code == 2
    assert json.loads(res.output)["problems"][0]["file"] == "images/orphan.png"
    res = runner.invoke(app, ["check", str(tmp_path)])
    assert res.exit_code != 0 and "images/orphan.png" in res.output and "image has no mask" in res.output


def test_cli_main_exit_code_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    _good(tmp_path, 1)
    write_image(tmp_path / "masks" / "orphan.png", np.zeros((16, 16), np.uint8))
    proc = subprocess.run(
        [sys.executable, "-m", "unetkit", "check", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and "mask has no image" in proc.stdout and "1 problem found" in proc.stderr
