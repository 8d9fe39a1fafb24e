"""The channel rule: conversions (grey, rgb, first), region by region, and every entry point that predicts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import unetkit
from unetkit.cli import main
from unetkit.data.channels import ChannelView, check_channels, convert_channels, fits
from unetkit.data.io import open_image, read_image, read_mask, write_image
from unetkit.errors import ConfigError, DataError
from unetkit.modelfile import save_model
from unetkit.models import UNet

RNG = np.random.default_rng(0)


def _model(tmp_path: Path, in_channels: int) -> Path:
    return save_model(tmp_path / f"m{in_channels}.safetensors", UNet(2, in_channels, 2, depth=2, width=4).eval())


def test_grey_is_the_luma_of_rgb_and_drops_alpha() -> None:
    rgba = RNG.integers(0, 256, (4, 5, 6), dtype=np.uint8)
    grey = convert_channels(rgba, 1, "grey")
    want = np.rint(0.299 * rgba[0].astype(np.float64) + 0.587 * rgba[1] + 0.114 * rgba[2])
    assert grey.shape == (1, 5, 6) and grey.dtype == np.uint8
    assert np.abs(grey[0].astype(int) - want).max() <= 1  # float32 arithmetic: rounding may differ by one
    floats = rgba[:3].astype(np.float32) / 255
    assert np.allclose(convert_channels(floats, 1, "grey")[0], want / 255, atol=1 / 255)
    one = rgba[:1]
    assert convert_channels(one, 1, "grey") is one  # one channel stays


def test_rgb_repeats_grey_and_drops_alpha_first_keeps_the_first() -> None:
    grey = RNG.integers(0, 256, (1, 4, 4), dtype=np.uint16)
    assert np.array_equal(convert_channels(grey, 3, "rgb"), np.repeat(grey, 3, axis=0))
    rgba = RNG.random((4, 4, 4)).astype(np.float32)
    assert np.array_equal(convert_channels(rgba, 3, "rgb"), rgba[:3])
    five = RNG.random((5, 3, 3))
    assert np.array_equal(convert_channels(five, 2, "first"), five[:2])
    assert not fits(1, 3, "first") and not fits(3, 1, "rgb") and not fits(1, 3, "grey") and not fits(3, 1, None)


def test_the_message_names_the_file_the_channels_and_the_fix() -> None:
    with pytest.raises(DataError) as exc:
        check_channels("a.png", 3, 1, None, "m.safetensors")
    text = str(exc.value)
    assert text.startswith("a.png: the image has 3 channels but the model m.safetensors expects 1 channel")
    assert "--channels grey" in text and "--channels first" in text and "channels='grey'" in text
    with pytest.raises(DataError, match="--channels first needs at least 3"):
        check_channels("g.png", 1, 3, "first")
    with pytest.raises(DataError, match="use a model trained on 1-channel images") as exc:
        check_channels("g.png", 1, 2, None)
    assert "--channels" not in str(exc.value.fix)  # no conversion makes 2 channels of 1
    with pytest.raises(ConfigError, match="rgb, grey or first"):
        check_channels("g.png", 1, 1, "gray")


def test_a_view_converts_each_region_read_as_the_whole_image(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 256, (4, 40, 30), dtype=np.uint8)
    write_image(tmp_path / "a.tif", rgba)
    with open_image(tmp_path / "a.tif") as img:
        view = ChannelView(img, 1, "grey")
        whole = convert_channels(rgba, 1, "grey")
        assert view.shape == (1, 40, 30) and view.dtype == np.uint8 and view.path == tmp_path / "a.tif"
        assert np.array_equal(view[:, 5:17, 3:29], whole[:, 5:17, 3:29])
        assert np.array_equal(view[0, ::3], whole[0, ::3]) and np.array_equal(view.read(), whole)
        assert np.array_equal(ChannelView(img, 3, "rgb")[..., 2:4], rgba[:3, :, 2:4])


def test_predict_refuses_before_the_first_file_then_converts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(tmp_path, 1)
    rgb = RNG.integers(0, 256, (3, 48, 40), dtype=np.uint8)
    write_image(tmp_path / "imgs" / "a.png", rgb[:1])  # predictable ...
    write_image(tmp_path / "imgs" / "z.png", rgb)  # ... but the last one is RGB
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(model), str(tmp_path / "imgs"), "--out", str(out), "--tile", "32", "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "z.png" in err and "3 channels" in err and "--channels grey" in err, err
    assert not out.exists() or not any(out.iterdir())  # nothing was predicted, not even a.png
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(model), str(tmp_path / "imgs"), "--out", str(out), "--tile", "32", "--quiet",
              "--channels", "grey", "--backend", "torch"])  # fmt: skip
    assert exc.value.code in (0, None)
    grey = convert_channels(rgb, 1, "grey")
    expected = unetkit.predict(model, grey, tile=32, device="cpu", backend="torch")
    assert np.array_equal(read_mask(out / "z.png"), expected)
    assert read_image(tmp_path / "imgs" / "z.png").array.shape[0] == 3  # the input is not changed


def test_python_api_converts_arrays_and_files(tmp_path: Path) -> None:
    model = _model(tmp_path, 3)
    grey = RNG.random((40, 48)).astype(np.float32)
    expected = unetkit.predict(model, np.repeat(grey[None], 3, axis=0), device="cpu")
    assert np.array_equal(unetkit.predict(model, grey, channels="rgb", device="cpu"), expected)
    rgba = np.concatenate([np.repeat(grey[None], 3, axis=0), np.ones((1, 40, 48), np.float32)])
    assert np.array_equal(unetkit.predict(model, np.moveaxis(rgba, 0, -1), channels="rgb", device="cpu"), expected)
    write_image(tmp_path / "g.tif", grey[None])
    with pytest.raises(DataError, match=r"g.tif: the image has 1 channel .* --channels rgb"):
        unetkit.predict(model, tmp_path / "g.tif", device="cpu")
    assert np.array_equal(unetkit.predict(model, tmp_path / "g.tif", channels="rgb", device="cpu"), expected)
    res = unetkit.predict(model, tmp_path / "g.tif", out=tmp_path / "o", channels="rgb", device="cpu")
    assert np.array_equal(read_mask(res.outputs.labels), expected)


def test_evaluate_converts_with_channels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model(tmp_path, 1)
    write_image(tmp_path / "images" / "a.png", RNG.integers(0, 256, (3, 32, 32), dtype=np.uint8))
    write_image(tmp_path / "masks" / "a.png", (RNG.random((32, 32)) > 0.5).astype(np.uint8))
    args = ["evaluate", "--model", str(model), "--images", str(tmp_path / "images"), "--truth",
            str(tmp_path / "masks"), "--out", str(tmp_path / "e"), "--quiet", "--no-isbi", "--no-surface"]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and "--channels grey" in capsys.readouterr().err
    assert not (tmp_path / "e" / "predictions").exists()  # refused before the first prediction
    with pytest.raises(SystemExit) as exc:
        main([*args, "--channels", "grey"])
    assert exc.value.code in (0, None)
    assert np.load(tmp_path / "e" / "predictions" / "a.npy").shape == (2, 32, 32)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--pred", str(tmp_path / "e" / "predictions"), "--truth", str(tmp_path / "masks"),
              "--out", str(tmp_path / "e2"), "--channels", "grey"])  # fmt: skip
    assert exc.value.code == 2 and "--model" in capsys.readouterr().err


def test_the_help_tells_channels_from_channels_last() -> None:
    from typer.testing import CliRunner

    from unetkit.cli import app

    output = CliRunner().invoke(app, ["predict", "--help"], terminal_width=200).output
    text = " ".join(re.sub(r"[\u2500-\u257f]", " ", output).split())  # without the boxes rich draws
    assert "--channels " in text and "--channels-last" in text and "luma" in text and "Not --channels-last" in text
