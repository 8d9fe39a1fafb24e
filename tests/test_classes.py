"""Class names and colours in one place (unetkit.classes), and how they and the label mapping reach the model
file, the overlay legend and the evaluation report."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unetkit.classes import Classes, ClassSpec, default_class_names, palette, parse_classes, parse_colour
from unetkit.cli import app
from unetkit.config import load_config
from unetkit.data.io import write_image
from unetkit.data.masks import LabelMapping
from unetkit.errors import ConfigError, DataError

runner = CliRunner()


def test_defaults_and_palette() -> None:
    assert default_class_names(2) == ["background", "foreground"]
    assert default_class_names(4) == ["background", "class_1", "class_2", "class_3"]
    assert palette(5)[:3] == palette(3) and palette(1) == [(0, 0, 0)] and len(set(palette(40))) == 40
    assert Classes.default(3).colours == tuple(palette(3))
    from unetkit.viz import palette as viz_palette

    assert viz_palette is palette  # the viz package re-exports the one palette


def test_parse_names_and_colours() -> None:
    specs = parse_classes("membrane:#ff0000, cell:0,255,0,debris")
    assert specs == [ClassSpec("membrane", (255, 0, 0)), ClassSpec("cell", (0, 255, 0)), ClassSpec("debris")]
    assert parse_classes(["bg", {"name": "cell", "colour": [1, 2, 3]}, "x:#00ff00"])[1:] == [
        ClassSpec("cell", (1, 2, 3)),
        ClassSpec("x", (0, 255, 0)),
    ]
    for bad, match in (("a,a", "twice"), ("a:#12", "not a colour"), ("a:1,2,300", "not a colour"), ("", "no class")):
        with pytest.raises(ConfigError, match=match):
            parse_classes(bad)
    assert parse_colour("#FFa000") == (255, 160, 0)


def test_resolve_colours_user_then_masks_then_palette() -> None:
    specs = parse_classes("bg,a,b:#0000ff")
    classes = Classes.resolve(3, specs, mask_colours=[(0, 0, 0), (9, 9, 9)])
    assert classes.names == ("bg", "a", "b") and classes.colours == ((0, 0, 0), (9, 9, 9), (0, 0, 255))
    assert Classes.resolve(3).colours == tuple(palette(3))
    with pytest.raises(ConfigError, match="2 class name"):
        Classes.resolve(3, parse_classes("bg,a"))
    assert Classes.from_model(["cell"], [[0, 255, 0]]).names == ("background", "cell")  # one-logit network


def test_config_classes_and_num_classes() -> None:
    cfg = load_config(overrides=["data.classes=membrane:#ff0000,cell"])
    assert cfg.data.class_specs() == [ClassSpec("membrane", (255, 0, 0)), ClassSpec("cell")]
    cfg = load_config(overrides=['data.classes=[bg, {name: cell, colour: "#00ff00"}]', "data.num_classes=2"])
    assert cfg.data.class_specs() == [ClassSpec("bg"), ClassSpec("cell", (0, 255, 0))]
    with pytest.raises(ConfigError, match=r"data\.classes names 2 classes but data\.num_classes=3"):
        load_config(overrides=["data.classes=a,b", "data.num_classes=3"])
    with pytest.raises(ConfigError, match=r"data\.num_classes"):
        load_config(overrides=["data.num_classes=1"])


def test_data_error_fields_compose_one_line() -> None:
    exc = DataError("mask is empty", file=Path("masks/a.png"), fix="re-export it")
    assert (exc.file, exc.problem, exc.fix) == ("masks/a.png", "mask is empty", "re-export it")
    assert str(exc) == "masks/a.png: mask is empty; fix: re-export it" and str(DataError("plain")) == "plain"
    again = pickle.loads(pickle.dumps(exc))
    assert (again.file, again.fix, str(again)) == (exc.file, exc.fix, str(exc))


def test_label_mapping_round_trips() -> None:
    for m in (
        LabelMapping("classes", {0: 0, 50: 1, 100: 2}, ignore_index=255),
        LabelMapping("colours", {(0, 0, 0): 0, (0, 255, 0): 1}, num_classes=3),
        LabelMapping("instances"),
    ):
        assert LabelMapping.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    with pytest.raises(DataError, match="malformed label mapping"):
        LabelMapping.from_dict({"kind": "classes", "mapping": {"x": 1}})


def _model_file(tmp_path: Path, **info) -> Path:
    from unetkit import create_model, save_model

    net = create_model("unet2d_small", depth=2, width=2, num_classes=3).eval()
    return save_model(tmp_path / "m.safetensors", net, **info)


def test_model_file_keeps_the_label_mapping_and_old_files_load(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from unetkit import load_model, read_description
    from unetkit.errors import UnetkitError
    from unetkit.modelfile import METADATA_KEY

    mapping = LabelMapping("classes", {0: 0, 50: 1, 100: 2})
    path = _model_file(tmp_path, label_mapping=mapping.to_dict())
    desc = read_description(path)
    assert LabelMapping.from_dict(desc.label_mapping) == mapping
    assert desc.class_names == ["background", "class_1", "class_2"]  # the one default rule
    with pytest.raises(UnetkitError, match="label_mapping gives 2 classes"):
        _model_file(tmp_path, label_mapping=LabelMapping("classes", {0: 0, 255: 1}).to_dict())
    # a file written before label_mapping existed
    raw = json.loads(desc.model_dump_json(by_alias=True))
    del raw["label_mapping"]
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={METADATA_KEY: json.dumps(raw), "format": "pt"})
    assert load_model(old).description.label_mapping is None


def test_evaluate_with_a_model_uses_its_mapping_and_names(tmp_path: Path) -> None:
    from unetkit import read_description
    from unetkit.evaluate import EvaluateOptions, evaluate_folders

    mapping = LabelMapping("classes", {0: 0, 50: 1, 100: 2})
    model = _model_file(tmp_path, label_mapping=mapping.to_dict(), class_names=["bg", "nucleus", "cell"])
    truth = np.zeros((16, 16), np.uint8)
    truth[:, 8:] = 100  # class 2 of the model; inferred over these truths alone it would be class 1
    write_image(tmp_path / "t" / "a.png", truth)
    write_image(tmp_path / "p" / "a.png", (truth // 50).astype(np.uint8))  # class indices
    options = EvaluateOptions(isbi=False, surface=False, instances="none", panels=0)
    result = evaluate_folders(
        tmp_path / "p", tmp_path / "t", tmp_path / "o", options.for_model(read_description(model))
    )
    assert result.summary["label_mapping"] == mapping.describe() and result.summary["num_classes"] == 3
    assert result.rows[0]["dice_per_class"][2] == 1.0 and result.summary["class_names"] == ["bg", "nucleus", "cell"]
    assert "2: cell" in (tmp_path / "o" / "report.html").read_text()
    write_image(tmp_path / "t" / "a.png", np.full((16, 16), 200, np.uint8))  # not a value the model knows
    with pytest.raises(DataError, match=r"a\.png.*200: 256 px"):
        evaluate_folders(tmp_path / "p", tmp_path / "t", tmp_path / "o", options.for_model(read_description(model)))


def test_validation_set_maps_like_the_training_set(tmp_path: Path) -> None:
    from unetkit.train.data import prepare_data

    img = np.arange(144, dtype=np.uint8).reshape(12, 12)
    full = np.zeros((12, 12), np.uint8)
    full[:, 4:8], full[:, 8:] = 50, 100
    for root, mask in ((tmp_path / "train", full), (tmp_path / "val", np.where(full == 50, 0, full))):
        write_image(root / "images" / "a.png", img)
        write_image(root / "masks" / "a.png", mask.astype(np.uint8))
    cfg = load_config(overrides=[f"data.path={tmp_path / 'train'}", f"data.val_path={tmp_path / 'val'}"]).data
    data = prepare_data(cfg, seed=0, use_weight_map=False)
    assert data.val[0].mask.max() == 2  # 100 is class 2, though the validation masks hold only {0, 100}
    assert data.label_mapping is not None and data.label_mapping.mapping == {0: 0, 50: 1, 100: 2}


def _binary_dataset(root: Path, n: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (48, 48)).astype(np.uint8)
        write_image(root / "images" / f"im{i}.png", img)
        write_image(root / "masks" / f"im{i}.png", ((img > 120) * 255).astype(np.uint8))
    return root


def test_classes_flow_from_train_to_model_file_overlay_and_report(tmp_path: Path, monkeypatch) -> None:
    from unetkit import read_description
    from unetkit.infer import files as infer_files

    data = _binary_dataset(tmp_path / "data")
    args = ["train", str(data), "--out", str(tmp_path / "run"), "--model", "unet2d_small", "--patch", "32",
            "--batch", "2", "--device", "cpu", "--quiet", "--epochs", "1", "--classes", "membrane,cell:#00ff00",
            "--set", "model.args.width=2", "--set", "model.args.depth=2",
            "--set", "train.iterations_per_epoch=1"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = tmp_path / "run" / "model.safetensors"
    desc = read_description(model)
    assert desc.class_names == ["membrane", "cell"] and tuple(desc.class_colours[1]) == (0, 255, 0)
    assert LabelMapping.from_dict(desc.label_mapping).mapping == {0: 0, 255: 1}

    legends = []
    original = infer_files.OverlayTarget.commit

    def spy(self):  # the overlay's legend entries, as drawn
        legends.append(self.legend())
        return original(self)

    monkeypatch.setattr(infer_files.OverlayTarget, "commit", spy)
    result = runner.invoke(app, ["predict", str(model), str(data / "images" / "im0.png"), "--out", str(tmp_path / "p"),
                                 "--overlay", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    [[background, cell]] = legends  # class 0 is not painted; the cell class is, in its colour, where present
    assert background == ("0: membrane (not painted)", None)
    assert cell.text.startswith("1: cell") and cell.colour in ((0, 255, 0), None)
    assert (cell.colour is None) == cell.text.endswith("(absent)")

    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--model", str(model), "--images", str(data / "images"),
                                 "--truth", str(data / "masks"), "--out", str(out), "--device", "cpu", "-q",
                                 "--no-warping"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["class_names"] == ["membrane", "cell"]
    html = (out / "report.html").read_text()
    assert "1: cell" in html and "0: membrane" in html


def test_classes_must_fit_the_masks(tmp_path: Path) -> None:
    from unetkit.data.check import check_dataset

    data = _binary_dataset(tmp_path)
    report = check_dataset(data, classes=parse_classes("a,b,c"))
    assert report.ok and report.mapping is not None and report.mapping.num_classes == 3  # pinned to 3
    with pytest.raises(ConfigError, match="num_classes=2"):
        check_dataset(data, 2, classes=parse_classes("a,b,c"))
    res = runner.invoke(app, ["check", str(data), "--classes", "membrane,cell"])
    assert res.exit_code == 0, res.output


def test_user_colours_define_the_classes_of_colour_masks(tmp_path: Path) -> None:
    from unetkit.data.datasets import load_dataset

    mask = np.zeros((3, 8, 8), np.uint8)
    mask[0, :, :4] = 255  # red
    mask[1, :, 4:] = 255  # green
    write_image(tmp_path / "images" / "a.png", np.zeros((8, 8), np.uint8))
    write_image(tmp_path / "masks" / "a.png", mask)
    ds = load_dataset(tmp_path, classes=parse_classes("bg:0,0,0,red:#ff0000,green:#00ff00"))
    assert ds.class_names == ["bg", "red", "green"] and ds.class_colours[1] == (255, 0, 0)
    assert (ds[0].mask[:, :4] == 1).all() and (ds[0].mask[:, 4:] == 2).all()  # red is class 1 as the user said
