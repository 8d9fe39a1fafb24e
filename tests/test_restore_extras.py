"""Restoration: planning (``unetkit plan/train DATA --task restore``), run-folder panels, the report,
``unetkit predict --dtype``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unetkit.cli import app
from unetkit.data.io import read_image, write_image
from unetkit.errors import ConfigError
from unetkit.plan import DataFacts, Machine, StepCost, facts_of, load_plan, plan_training
from unetkit.synthetic import write_restore_dataset

runner = CliRunner()
CPU = Machine("cpu", "test cpu", 2, 24.0)


def _timer(args: dict, patch: tuple[int, ...], batch: int, channels_last: bool = False) -> StepCost:
    return StepCost(2.0 * batch * math.prod(patch) / 1e6, 0)


def _restore_facts(**kw: object) -> DataFacts:
    base: dict = dict(
        num_images=8, spatial_dims=2, in_channels=1, image_dtype="float32", shapes=((256, 256),) * 8,
        num_classes=3, mask_kind="none", intensity={"min": [0.0], "max": [1.0]}, task="restore",
        target_dtype="uint16",
    )  # fmt: skip
    base.update(kw)
    return DataFacts(**base)


def test_restore_plan_rules() -> None:
    plan = plan_training(_restore_facts(), CPU, _timer, budget_minutes=5)
    o = plan.overrides()
    assert o["task"] == "restore" and o["restore.self_supervised"] is False
    assert o["model.args.norm"] == "none"  # a restoration keeps each patch's intensity level
    assert o["model.args.init"] == "pytorch"  # a regression trains faster from PyTorch's init than from He's
    assert o["data.normalization"] == "percentile" and o["restore.target_normalization"] == "percentile"
    assert o["restore.loss"] == "mse"  # the PSNR-maximising estimate (measured above L1: docs/restoration.md)
    assert "train.loss" not in o and "data.foreground_fraction" not in o and "data.target_spacing" not in o
    assert "augment.rotate.degrees" not in o
    assert {"data.patch_size", "train.batch_size", "model.args.depth", "train.epochs"} <= o.keys()
    assert o["train.max_minutes"] == 5
    # restoration is local: a shallow, wide net on small patches, CARE's batch at most
    assert o["data.patch_size"] == [64, 64] and o["model.args.depth"] == 2 and o["model.args.width"] == 32
    # CARE's 16 patches per step, halved where the step is compute-bound (this timer: time proportional to the
    # batch, as on a CPU), kept where a step costs mostly its fixed overhead (a GPU's small steps)
    big = _restore_facts(shapes=((1024, 1024),) * 8)
    cpu = plan_training(big, CPU, _timer, budget_minutes=5)
    assert cpu.overrides()["train.batch_size"] == 8
    assert "shortens a step by 50%" in dict((c, w) for c, _, w in cpu.rows())["batch"]

    def overhead_bound(args: dict, patch: tuple[int, ...], batch: int, channels_last: bool = False) -> StepCost:
        return StepCost(0.01 + 1e-4 * batch, 0)

    gpu = plan_training(big, CPU, overhead_bound, budget_minutes=5)
    assert gpu.overrides()["train.batch_size"] == 16
    assert "CARE's batch" in dict((c, w) for c, _, w in gpu.rows())["batch"]
    # a step too slow for a batch of 8 (a 3D restoration on a CPU): the larger steps are not even timed
    slow_calls: list[int] = []

    def slow(args: dict, patch: tuple[int, ...], batch: int, channels_last: bool = False) -> StepCost:
        slow_calls.append(batch)
        return StepCost(5.0 * batch, 0)

    assert plan_training(big, CPU, slow, budget_minutes=5).overrides()["train.batch_size"] == 2
    assert set(slow_calls) == {2}
    mine_batch = plan_training(big, CPU, _timer, budget_minutes=5, fixed={"train.batch_size": 12})
    assert mine_batch.overrides()["train.batch_size"] == 12
    assert 2 <= o["train.batch_size"] <= 8  # a small dataset: at most 5% of its voxels per batch
    table = {choice: why for choice, _, why in plan.rows()}
    assert "local" in table["patch"] and "local" in table["depth"]
    assert "PSNR" in table["loss"] and "intensity level" in table["norm"] and "no resampling" in table["target spacing"]
    # the user's values win and the table says so
    mine = plan_training(_restore_facts(), CPU, _timer, budget_minutes=5, fixed={"restore.loss": "l1"})
    assert mine.overrides()["restore.loss"] == "l1"
    # pix2pix: L1 under the adversarial term (MSE's blur is what the discriminator removes), unless the user picks
    gan = plan_training(_restore_facts(), CPU, _timer, budget_minutes=5, fixed={"restore.gan": True})
    assert gan.overrides()["restore.loss"] == "l1" and "pix2pix" in dict((c, w) for c, _, w in gan.rows())["loss"]
    gan_mse = plan_training(
        _restore_facts(), CPU, _timer, budget_minutes=5, fixed={"restore.gan": True, "restore.loss": "mse"}
    )
    assert gan_mse.overrides()["restore.loss"] == "mse"
    # Noise2Void: MSE on the hidden pixels, unless the user picks another
    n2v = plan_training(_restore_facts(), CPU, _timer, budget_minutes=5, fixed={"restore.self_supervised": True})
    assert n2v.overrides()["restore.loss"] == "mse" and "blind-spot" in dict((c, w) for c, _, w in n2v.rows())["loss"]
    n2v_l1 = plan_training(
        _restore_facts(), CPU, _timer, budget_minutes=5, fixed={"restore.self_supervised": True, "restore.loss": "l1"}
    )
    assert n2v_l1.overrides()["restore.loss"] == "l1"
    # 3D, anisotropic: the coarse axis gets proportionally fewer voxels; a small image bounds the patch
    aniso = plan_training(
        _restore_facts(spatial_dims=3, shapes=((40, 200, 200),) * 8, spacings=((4.0, 1.0, 1.0),) * 8),
        CPU, _timer, budget_minutes=5,
    ).overrides()  # fmt: skip
    assert aniso["data.patch_size"] == [8, 32, 32] and aniso["model.args.depth"] <= 2
    tiny = plan_training(_restore_facts(shapes=((40, 52),) * 8), CPU, _timer, budget_minutes=5).overrides()
    assert all(p <= n for p, n in zip(tiny["data.patch_size"], (40, 52), strict=True))
    with pytest.raises(ConfigError, match="--dims"):  # (--dims 2 of 3D data: the slices test below)
        plan_training(_restore_facts(), CPU, _timer, dims=3)


def test_restore_facts_and_plan_cli(tmp_path: Path) -> None:
    data = tmp_path / "d"
    write_restore_dataset(str(data), n=3, shape=(48, 48), seed=1)
    facts = facts_of(data, task="restore")
    assert facts.task == "restore" and facts.num_images == 3 and facts.shapes[0] == (48, 48)
    assert facts.num_classes == 1 and facts.target_dtype == "float32"
    r = runner.invoke(
        app, ["plan", str(data), "--task", "restore", "--budget", "1m", "--out", str(tmp_path / "p.yaml")]
    )
    assert r.exit_code == 0, r.output
    plan = load_plan(tmp_path / "p.yaml")
    assert plan.overrides()["task"] == "restore" and plan.facts["task"] == "restore"
    r = runner.invoke(app, ["plan", str(data), "--task", "restore", "--self-supervised", "--budget", "1m",
                            "--out", str(tmp_path / "n2v.yaml")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert load_plan(tmp_path / "n2v.yaml").overrides()["restore.self_supervised"] is True


def test_planned_train_writes_panels_and_predicts_dtypes(tmp_path: Path) -> None:
    """``unetkit train DATA --task restore`` plans (no other flags needed); the run folder holds the panels;
    ``predict --dtype`` writes float32, uint8, uint16 or the targets' dtype (clipped)."""
    data = tmp_path / "d"
    write_restore_dataset(str(data), n=3, shape=(48, 48), seed=1)
    for p in sorted((data / "targets").iterdir()):  # uint16 targets in 0..1000
        write_image(p, np.rint(read_image(p).array * 1000).astype(np.uint16), spatial_dims=2)
    run = tmp_path / "run"
    r = runner.invoke(
        app,
        ["train", str(data), "--task", "restore", "--out", str(run), "--budget", "3s", "--device", "cpu",
         "--set", "model.args.width=4", "--set", "train.epochs=1", "--set", "train.iterations_per_epoch=2"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "CARE" in r.output  # the plan's table
    assert "validation inputs, scale-matched to their targets: PSNR" in (run / "train.log").read_text()  # the "before"
    assert (run / "plan.yaml").is_file() and load_plan(run / "plan.yaml").overrides()["task"] == "restore"
    panels = sorted((run / "panels").glob("*.png"))
    assert panels and panels[0].stat().st_size > 1000
    model = str(run / "model.safetensors")
    for dtype, expected in (("float32", np.float32), ("target", np.uint16), ("uint8", np.uint8)):
        out = tmp_path / f"pred_{dtype}"
        r = runner.invoke(app, ["predict", model, str(data / "inputs"), "--out", str(out), "--dtype", dtype])
        assert r.exit_code == 0, r.output
        arr = read_image(out / "00.tif").array
        assert arr.dtype == expected, dtype
        assert "values" in r.output and f"{arr.min():.4g} to {arr.max():.4g}" in r.output  # the values written
    # the float output is on the targets' scale (0..1000, not the normalised 0..1), and uint8 is it clipped
    full = read_image(tmp_path / "pred_float32" / "00.tif").array
    small = read_image(tmp_path / "pred_uint8" / "00.tif").array
    np.testing.assert_array_equal(small, np.clip(np.rint(full), 0, 255).astype(np.uint8))
    assert np.abs(full).max() > 10  # a normalised output (not inverted) would stay within a few units
    assert ((full < 0) | (full > 255)).any()  # so the uint8 output above was clipped somewhere
    # compression: integer outputs are deflated by default, float32 only when asked, and the values stay
    import tifffile

    assert tifffile.TiffFile(tmp_path / "pred_target" / "00.tif").pages[0].compression == 8  # deflate
    assert tifffile.TiffFile(tmp_path / "pred_float32" / "00.tif").pages[0].compression == 1  # none
    r = runner.invoke(app, ["predict", model, str(data / "inputs"), "--out", str(tmp_path / "z"), "--compression",
                            "zlib"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert tifffile.TiffFile(tmp_path / "z" / "00.tif").pages[0].compression == 8
    np.testing.assert_array_equal(read_image(tmp_path / "z" / "00.tif").array, full)
    r = runner.invoke(app, ["predict", model, str(data / "inputs"), "--out", str(tmp_path / "x"), "--dtype", "int8"])
    assert isinstance(r.exception, ConfigError) and "float32, uint8, uint16, target" in str(r.exception)
    # the evaluation report shows the restoration panels
    r = runner.invoke(
        app, ["evaluate", "--task", "restore", "--pred", str(tmp_path / "pred_float32"), "--truth",
              str(data / "targets"), "--images", str(data / "inputs"), "--out", str(tmp_path / "ev")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "input (scale-matched)" in r.output and "restored - input" in r.output  # the "before" beside it
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert set(summary["input"]) >= {"psnr", "ssim", "nrmse"}
    assert summary["psnr_gain"] == pytest.approx(summary["psnr"] - summary["input"]["psnr"])
    assert "input_psnr" in (tmp_path / "ev" / "metrics.csv").read_text().splitlines()[0]
    html = (tmp_path / "ev" / "report.html").read_text()
    # the report embeds its pictures as JPEG thumbnails (a bounded size)
    assert "input | output | target" in html and html.count("data:image/jpeg;base64") == 3


def test_restore_plan_for_slices_of_anisotropic_volumes() -> None:
    facts = _restore_facts(spatial_dims=3, shapes=((10, 128, 128),) * 8, spacings=((5.0, 1.0, 1.0),) * 8)
    o = plan_training(facts, CPU, _timer, budget_minutes=5, dims=2).overrides()
    assert o["model.name"] == "unet2d" and o["data.slice_axis"] == 0  # slices across the coarse axis
    assert o["data.patch_size"] == [64, 64] and o["model.args.norm"] == "none"  # the 2D restoration rules


def test_scale_matched_is_the_fair_before() -> None:
    """An input scored against its target after the best affine map per channel: an exact affine copy scores
    perfectly, a dimmer noisy exposure is not penalised for its scale, and it never scores below the raw input."""
    from unetkit.metrics import psnr, scale_matched

    rng = np.random.default_rng(0)
    target = rng.random((2, 32, 32))
    np.testing.assert_allclose(scale_matched(0.1 * target + 3.0, target), target, atol=1e-12)
    noisy = target + rng.normal(0, 0.1, target.shape)
    dim = 0.05 * noisy + np.array([0.0, 7.0])[:, None, None]  # a twentieth of the signal, offset in channel 1
    assert psnr(scale_matched(dim, target), target) > psnr(dim, target) + 20
    assert psnr(scale_matched(dim, target), target) == pytest.approx(psnr(scale_matched(noisy, target), target))
    assert psnr(scale_matched(noisy, target), target) >= psnr(noisy, target)
    assert np.all(scale_matched(np.ones((1, 4, 4)), target[:1, :4, :4]) == target[:1, :4, :4].mean())  # flat


def test_evaluate_follows_targets_that_hold_intensities(tmp_path: Path) -> None:
    """Without --task or --model, a --truth folder of non-integer floats (which no mask holds) is scored as
    restoration targets; integer masks stay a segmentation."""
    from unetkit.evaluate.restore import holds_intensities
    from unetkit.metrics import restore_scores

    data = tmp_path / "d"
    write_restore_dataset(str(data), n=2, shape=(32, 32), seed=3)
    assert holds_intensities(data / "targets") and not holds_intensities(tmp_path)  # no images: no
    r = runner.invoke(app, ["evaluate", "--pred", str(data / "inputs"), "--truth", str(data / "targets"), "--out",
                            str(tmp_path / "ev")])  # fmt: skip
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "ev" / "summary.json").read_text())["per_image"][0]
    want = restore_scores(read_image(data / "inputs" / "00.tif").array, read_image(data / "targets" / "00.tif").array)
    assert got["psnr"] == pytest.approx(want["psnr"]) and "input_psnr" not in got  # no --images: no "before"
    write_image(tmp_path / "m" / "00.tif", np.array([[0.0, 1.0], [1.0, 0.0]], np.float32), spatial_dims=2)
    assert not holds_intensities(tmp_path / "m")  # float masks of whole numbers are masks


def test_a_nan_input_pixel_is_said_not_restored_in_silence(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """NaN pixels spread over the network's receptive field: restore_file counts the NaN/Inf outputs and warns."""
    import logging

    from unetkit import create_model
    from unetkit.infer import load_predictor
    from unetkit.infer.files import restore_file
    from unetkit.modelfile import save_model

    net = create_model("unet2d_small", depth=2, width=4, norm=None, num_classes=1)
    model = save_model(tmp_path / "m.safetensors", net, task="restore")
    image = np.random.default_rng(0).random((48, 48)).astype(np.float32)
    write_image(tmp_path / "ok.tif", image, spatial_dims=2)
    image[10:12, 10:12] = np.nan
    write_image(tmp_path / "nan.tif", image, spatial_dims=2)
    predictor = load_predictor(str(model), device="cpu")
    with caplog.at_level(logging.WARNING, logger="unetkit.infer.files"):
        restore_file(predictor, tmp_path / "ok.tif", tmp_path / "o")
        assert "NaN/Inf" not in caplog.text
        restore_file(predictor, tmp_path / "nan.tif", tmp_path / "o")
    bad = int(np.isnan(read_image(tmp_path / "o" / "nan.tif").array).sum())
    assert bad >= 4 and f"nan.tif: {bad} restored values are NaN/Inf" in caplog.text


def test_cli_folds_of_a_restoration_train_then_predict_as_one(tmp_path: Path) -> None:
    """``unetkit train --task restore --folds 2`` writes RUN/fold_K, says what their ensemble is worth, and
    ``unetkit predict RUN/fold_*/model.safetensors`` writes the mean of the folds' own restorations."""
    from unetkit.infer import load_predictor

    data, run = tmp_path / "d", tmp_path / "run"
    write_restore_dataset(str(data), n=4, shape=(40, 40), seed=5)
    r = runner.invoke(
        app,
        ["train", str(data), "--task", "restore", "--folds", "2", "--out", str(run), "--budget", "3s", "--device",
         "cpu", "--quiet", "--set", "model.args.width=4", "--set", "train.epochs=1", "--set",
         "train.iterations_per_epoch=2"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    models = [str(run / f"fold_{k}" / "model.safetensors") for k in (1, 2)]
    said = " ".join(r.output.split())  # the console wraps lines
    assert "2 folds trained" in said and "one model trained with the folds' whole budget" in said
    r = runner.invoke(app, ["predict", *models, str(data / "inputs"), "--out", str(tmp_path / "p"), "--backend",
                            "torch"])  # fmt: skip
    assert r.exit_code == 0, r.output
    image = read_image(data / "inputs" / "00.tif").array
    mean = np.mean([load_predictor(m, device="cpu", backend="torch").restore(image) for m in models], axis=0)
    np.testing.assert_allclose(read_image(tmp_path / "p" / "00.tif").array.reshape(mean.shape), mean, atol=1e-4)


def test_check_warns_of_a_target_shifted_from_its_input(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A pair whose target is a few pixels off its input is named with the shift (a CARE network would learn the
    shift too); aligned noisy pairs raise no warning."""
    import logging

    from unetkit.data.restore import check_restore_dataset, misalignment

    data = tmp_path / "d"
    write_restore_dataset(str(data), n=3, shape=(96, 96), seed=4)
    with caplog.at_level(logging.WARNING, logger="unetkit.data.restore"):
        problems, _, _ = check_restore_dataset(data)
    assert not problems and "shifted" not in caplog.text  # the generated pairs are aligned
    target = read_image(data / "targets" / "01.tif").array
    write_image(data / "targets" / "01.tif", np.roll(target, (4, -3), axis=(1, 2)), spatial_dims=2)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unetkit.data.restore"):
        problems, _, _ = check_restore_dataset(data)
    assert not problems  # a warning, not a problem: training still runs
    assert "targets/01.tif: the target looks shifted by 4x-3 px from its input inputs/01.tif" in caplog.text
    assert caplog.text.count("shifted") == 1
    r = runner.invoke(app, ["check", str(data), "--task", "restore"])
    assert r.exit_code == 0 and "shifted by 4x-3" in " ".join(r.output.split())
    assert misalignment(np.zeros((1, 32, 32)), np.ones((1, 32, 32))) is None  # nothing to lock on
    assert misalignment(np.full((1, 32, 32), np.nan), target[:, :32, :32]) is None  # NaN: a check problem already
