"""Hostile input: every case ends with exit code 2 and one message naming the file or field, no traceback.

The inputs come from the generators in ``inputs.py``; ``{}`` in a command line is the generated input,
``{model}`` a tiny one-channel 2D model file (``{model3}``: three channels), ``{tmp}`` the case's folder.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from unetkit.cli import main

sys.path.insert(0, str(Path(__file__).parent))
import inputs  # the generators beside this file


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _model(tmp: Path, header: bytes) -> Path:
    (tmp / "m.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    return tmp / "m.safetensors"


def _dataset_with(image: Callable[[Path], Path], name: str) -> Callable[[Path], Path]:
    """A dataset folder whose one image ``name`` comes from ``image`` (with a plain mask of the same stem)."""

    def make(tmp: Path) -> Path:
        from unetkit.data.io import write_image

        root = tmp / "ds"
        image(root / "images" / name)
        write_image(root / "masks" / (name.split(".")[0] + ".png"), np.zeros((64, 64), np.uint8))
        return root

    return make


def _folder_with_image(tmp: Path) -> Path:
    from unetkit.data.io import write_image

    write_image(tmp / "imgs" / "a.png", np.full((32, 32), 7, np.uint8))
    return tmp / "imgs"


def _restore_pairs(size: int, nan_target: bool = False) -> Callable[[Path], Path]:
    """A restoration folder of two ``size`` x ``size`` pairs (``nan_target``: one NaN in the first target)."""

    def make(tmp: Path) -> Path:
        from unetkit.data.io import write_image

        rng = np.random.default_rng(0)
        for name in ("a", "b"):
            target = rng.random((size, size)).astype(np.float32)
            if nan_target and name == "a":
                target[1, 1] = np.nan
            write_image(tmp / "r" / "inputs" / f"{name}.tif", target + 0.1, spatial_dims=2)
            write_image(tmp / "r" / "targets" / f"{name}.tif", target, spatial_dims=2)
        return tmp / "r"

    return make


def _tiny_model(tmp: Path, in_channels: int = 1) -> Path:
    from unetkit.modelfile import save_model
    from unetkit.models import create_model

    path = tmp / f"tiny{in_channels}.safetensors"
    if not path.exists():
        net = create_model("unet2d_small", in_channels=in_channels, num_classes=2, width=4, depth=2)
        save_model(path, net)
    return path


#: The command most cases run: predict the generated input with the test model.
PREDICT = ["predict", "{model}", "{}", "--out", "{tmp}/o"]

# (id, input generator, argv with {} for the input, a word the message must hold)
CASES: list[tuple[str, Callable[[Path], Path], list[str], str]] = [
    (
        "yaml-alias-bomb",
        _write("c.yaml", b"a: &a [1,1]\nb: &b [*a,*a]\nc: [*b,*b]\n"),
        ["config", "show", "{}"],
        "alias",
    ),
    ("yaml-deep", _write("c.yaml", b"a: " + b"[" * 200 + b"]" * 200 + b"\n"), ["config", "show", "{}"], "nested"),
    ("yaml-binary", _write("c.yaml", b"\xff\xfe\x00\x01\x80"), ["config", "show", "{}"], "UTF-8"),
    (
        "yaml-python-tag",
        _write("c.yaml", b"a: !!python/object/apply:os.system ['true']\n"),
        ["config", "show", "{}"],
        "YAML",
    ),
    (
        "set-wrong-type",
        _write("c.yaml", b"{}\n"),
        ["config", "show", "{}", "--set", "train.epochs=many"],
        "train.epochs",
    ),
    ("model-pickle", _write("m.safetensors", b"\x80\x04\x95" + b"\x00" * 40), ["info", "{}"], "pickle"),
    ("model-empty", _write("m.safetensors", b""), ["info", "{}"], "truncated"),
    ("model-huge-header", _write("m.safetensors", (2**60).to_bytes(8, "little") + b"{}"), ["info", "{}"], "header"),
    ("model-not-unetkit", lambda t: _model(t, b'{"__metadata__": {}}'), ["info", "{}"], "unetkit"),
    ("latin1-list", _write("l.csv", "image,mask\ncaf\xe9.png,m.png\n".encode("latin-1")), ["check", "{}"], "UTF-8"),
    ("no-dataset", lambda t: t / "missing", ["check", "{}"], "not found"),
    ("png-bomb-check", _dataset_with(inputs.png_bomb, "b.png"), ["check", "{}"], "decompression bomb"),
    (
        "png-bomb-predict",
        lambda t: inputs.png_bomb(t / "b.png"),
        PREDICT,
        "decompression bomb",
    ),
    (
        "tiff-bomb-predict",
        lambda t: inputs.tiff_bomb(t / "b.tif"),
        PREDICT,
        "decompression bomb",
    ),
    ("tiff-bomb-check", _dataset_with(inputs.tiff_bomb, "b.tif"), ["check", "{}"], "decompression bomb"),
    (
        "tiff-huge-tag",
        lambda t: inputs.tiff_huge_tag(t / "h.tif"),
        PREDICT,
        "h.tif",
    ),
    (
        "nan-train",
        _dataset_with(inputs.nan_image, "n.tif"),
        ["train", "{}", "--no-plan", "--out", "{tmp}/run", "--epochs", "1", "--quiet"],
        "NaN",
    ),
    (
        "nan-restore-target",
        _restore_pairs(32, nan_target=True),
        ["train", "{}", "--task", "restore", "--budget", "5s", "--out", "{tmp}/run", "--quiet"],
        "targets/a.tif: target holds 1 NaN",
    ),
    (
        "restore-images-too-small",
        _restore_pairs(5),
        ["train", "{}", "--task", "restore", "--budget", "5s", "--out", "{tmp}/run", "--quiet"],
        "too small",
    ),
    (
        "masks-of-one-class",
        _dataset_with(inputs.grey_image, "g.png"),  # its mask is all background
        ["train", "{}", "--budget", "5s", "--out", "{tmp}/run", "--quiet"],
        "one class only",
    ),
    (
        "wrong-channels",
        lambda t: inputs.rgb_image(t / "rgb.png"),
        PREDICT,
        "--channels grey",
    ),
    (
        "wrong-channels-evaluate",
        _dataset_with(inputs.rgb_image, "a.png"),
        ["evaluate", "--model", "{model}", "--images", "{}/images", "--truth", "{}/masks", "--out", "{tmp}/e"],
        "--channels grey",
    ),
    (
        "grey-image-for-an-rgb-model",
        lambda t: inputs.grey_image(t / "g.png"),
        ["predict", "{model3}", "{}", "--out", "{tmp}/o"],
        "--channels rgb",
    ),
    (
        "channels-rgb-for-a-grey-model",
        lambda t: inputs.rgb_image(t / "rgb.png"),
        ["predict", "{model}", "{}", "--out", "{tmp}/o", "--channels", "rgb"],
        "makes 3 channels",
    ),
    (
        "channels-first-too-few",
        lambda t: inputs.grey_image(t / "g.png"),
        ["predict", "{model3}", "{}", "--out", "{tmp}/o", "--channels", "first"],
        "needs at least 3",
    ),
    (
        "channels-unknown",
        lambda t: inputs.rgb_image(t / "rgb.png"),
        ["predict", "{model}", "{}", "--out", "{tmp}/o", "--channels", "purple"],
        "--channels 'purple'",
    ),
    (
        "zarr-v2-bomb-predict",
        lambda t: inputs.zarr_bomb(t / "b.zarr", version=2),
        PREDICT,
        "decompression bomb",
    ),
    (
        "zarr-v3-bomb-predict",
        lambda t: inputs.zarr_bomb(t / "b.zarr", version=3),
        PREDICT,
        "decompression bomb",
    ),
    (
        "npy-bomb-predict",
        lambda t: inputs.npy_bomb(t / "b.npy"),
        PREDICT,
        "decompression bomb",
    ),
    ("npy-bomb-check", _dataset_with(inputs.npy_bomb, "b.npy"), ["check", "{}"], "decompression bomb"),
    (
        "nifti-bomb-predict",
        lambda t: inputs.nifti_bomb(t / "b.nii"),
        PREDICT,
        "decompression bomb",
    ),
    (
        "nifti-gz-bomb-predict",
        lambda t: inputs.nifti_bomb(t / "b.nii.gz"),
        PREDICT,
        "decompression bomb",
    ),
    (
        "out-is-a-file",
        lambda t: inputs.rgb_image(t / "rgb.png"),
        ["predict", "{model}", "{}", "--out", "{}"],
        "is a file",
    ),
    ("out-is-the-input-folder", _folder_with_image, ["predict", "{model}", "{}", "--out", "{}"], "overwrite"),
    (
        "train-out-in-the-dataset",
        _dataset_with(inputs.rgb_image, "a.png"),
        ["train", "{}", "--no-plan", "--out", "{}/run", "--quiet"],
        "inside the dataset",
    ),
    (
        "train-out-is-a-file",
        _dataset_with(inputs.rgb_image, "a.png"),
        ["train", "{}", "--no-plan", "--out", "{}/images/a.png", "--quiet"],
        "is a file",
    ),
]


@pytest.mark.parametrize(("make", "argv", "word"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_exits_2_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Path], argv: list[str], word: str
) -> None:
    path = make(tmp_path)
    model = os.fspath(_tiny_model(tmp_path)) if any("{model}" in a for a in argv) else ""
    model3 = os.fspath(_tiny_model(tmp_path, 3)) if any("{model3}" in a for a in argv) else ""
    before = path.read_bytes() if path.is_file() else None
    listing = sorted(p.relative_to(path) for p in path.rglob("*")) if path.is_dir() else None
    with pytest.raises(SystemExit) as exc:
        main(
            [
                a.replace("{}", os.fspath(path))
                .replace("{model}", model)
                .replace("{model3}", model3)
                .replace("{tmp}", os.fspath(tmp_path))
                for a in argv
            ]
        )
    captured = capsys.readouterr()
    err = captured.err
    assert exc.value.code == 2, err
    # the message on stderr; `check` lists the problems it found on stdout above it
    assert "Traceback" not in err + captured.out and word.lower() in (err + captured.out).lower(), err
    assert before is None or path.read_bytes() == before  # an input is never changed
    assert listing is None or sorted(p.relative_to(path) for p in path.rglob("*")) == listing  # nor added to
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err  # one message


def test_nan_image_prediction_warns_instead_of_a_silent_background(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = inputs.nan_image(tmp_path / "n.tif", everywhere=True)
    with pytest.raises(SystemExit) as exc:
        main(["predict", os.fspath(_tiny_model(tmp_path)), os.fspath(image), "--out", os.fspath(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exc.value.code in (0, None)
    assert "every pixel was predicted background" in err and "NaN/Inf" in err and "n.tif" in err, err
