"""Image-to-image restoration: losses and metrics against references, scaling round trip, the tiler on an
identity network, a tiny supervised run, the Noise2Void blind spot, and the CLI in 2D and 3D."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity
from typer.testing import CliRunner

from unetkit.cli import app
from unetkit.data.io import read_image, write_image
from unetkit.data.restore import cast_to, check_restore_dataset, fit_scaling, invert_scaling
from unetkit.losses import RESTORE_LOSS_TABLE, RestoreLoss, ssim_map
from unetkit.metrics import nrmse, psnr, restore_scores, ssim
from unetkit.synthetic import degrade, synthetic_texture, write_restore_dataset
from unetkit.train.n2v import blind_spot

runner = CliRunner()


@pytest.mark.parametrize("shape", [(40, 50), (12, 20, 18)])
def test_metrics_match_scikit_image(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    a = rng.random(shape)
    b = a + 0.1 * rng.standard_normal(shape)
    assert ssim(b, a, 1.0) == pytest.approx(structural_similarity(b, a, data_range=1.0), abs=1e-10)
    assert psnr(b, a, 1.0) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-10)
    assert nrmse(b, a) == pytest.approx(normalized_root_mse(a, b), abs=1e-10)
    scores = restore_scores(b[None], a[None])
    r = a.max() - a.min()
    assert scores["ssim"] == pytest.approx(structural_similarity(b, a, data_range=r), abs=1e-10)


@pytest.mark.parametrize("dims", [2, 3])
def test_losses_match_references(dims: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, *(16,) * dims, generator=g)
    y = torch.rand(2, 1, *(16,) * dims, generator=g)
    assert torch.allclose(RestoreLoss("l1")(x, y), F.l1_loss(x, y))
    assert torch.allclose(RestoreLoss("mse")(x, y), F.mse_loss(x, y))
    assert torch.allclose(RestoreLoss("charbonnier")(x, y), torch.sqrt((x - y) ** 2 + 1e-6).mean())
    # the SSIM loss's local map is scikit-image's (same window and covariance), averaged over valid windows
    ref = np.mean(
        [
            structural_similarity(a[0].numpy(), b[0].numpy(), data_range=1.0, full=True)[1]
            for a, b in zip(x, y, strict=True)
        ],
        axis=0,
    )
    pad = 3
    inner = ref[tuple(slice(pad, -pad) for _ in range(dims))].mean()
    assert float(ssim_map(x, y).mean()) == pytest.approx(inner, abs=1e-5)
    assert float(RestoreLoss("ssim")(x, x)) == pytest.approx(0.0, abs=1e-5)
    mixed = RestoreLoss("l1_ssim")(x, y)
    assert torch.allclose(mixed, 0.16 * F.l1_loss(x, y) + 0.84 * RestoreLoss("ssim")(x, y))
    # a mask (Noise2Void) restricts the pixel losses to the marked pixels
    w = torch.zeros(2, *(16,) * dims)
    w[0, 3] = 1
    assert torch.allclose(RestoreLoss("l1")(x, y, w), (x - y).abs()[0, 0, 3].mean())
    assert set(RESTORE_LOSS_TABLE) == {"l1", "mse", "charbonnier", "ssim", "l1_ssim"}


def test_scaling_round_trip_and_dtype() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.integers(100, 4000, (2, 20, 20)).astype(np.uint16) for _ in range(3)]
    scaling = fit_scaling(arrays, "percentile")
    x = arrays[0]
    back = cast_to(invert_scaling(scaling(x), scaling.to_dict()), "uint16")
    assert back.dtype == np.uint16 and np.array_equal(back, x)  # never clipped: exact up to rounding


def test_blind_spot_never_shows_the_hidden_pixel() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.rand(2, 2, 24, 24)
    masked, mask = blind_spot(a, 0.02, 2, torch.Generator().manual_seed(5))
    hidden = mask.bool()
    assert hidden.sum() > 0
    # another image that differs only at the hidden pixels gives exactly the same network input
    b = a.clone()
    noise = torch.rand(a.shape, generator=g) + 5.0
    b[hidden.unsqueeze(1).expand_as(a)] = noise[hidden.unsqueeze(1).expand_as(a)]
    masked_b, mask_b = blind_spot(b, 0.02, 2, torch.Generator().manual_seed(5))
    assert torch.equal(mask, mask_b) and torch.equal(masked, masked_b)
    # every other pixel is untouched, and no hidden pixel holds its own value
    assert torch.equal(masked[~hidden.unsqueeze(1).expand_as(a)], a[~hidden.unsqueeze(1).expand_as(a)])
    assert torch.all(masked_b[hidden.unsqueeze(1).expand_as(a)] < 5.0)


def test_blind_spot_validation_prefers_the_denoiser_to_the_identity() -> None:
    from scipy.ndimage import uniform_filter

    from unetkit.train.n2v import blind_spot_loss

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96] / 96.0
    clean = (0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy)).astype(np.float32)[None]
    noisy = (clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32)
    loss = RestoreLoss("l1")

    def smooth(x: np.ndarray) -> np.ndarray:  # a blind-spot-free denoiser: the 3x3 mean
        return uniform_filter(x, size=(1, 3, 3), mode="reflect").astype(np.float32)

    identity, _ = blind_spot_loss(lambda x: x, noisy, loss, 0.02, 2, seed=1)
    denoised, out = blind_spot_loss(smooth, noisy, loss, 0.02, 2, seed=1)
    assert out.shape == noisy.shape
    assert denoised < identity  # scoring the output against the noisy image would rank them the other way
    assert np.abs(smooth(noisy) - noisy).mean() > 0  # (the identity's unmasked error there is 0)
    # a fixed draw per seed: the same pixels are scored at every validation
    assert blind_spot_loss(smooth, noisy, loss, 0.02, 2, seed=1)[0] == denoised


def test_self_supervised_run_keeps_the_lowest_blind_spot_loss(tmp_path: Path) -> None:
    from unetkit.config import load_config
    from unetkit.train import train

    write_restore_dataset(str(tmp_path / "d"), n=3, shape=(48, 48), seed=0)
    cfg = load_config(
        overrides=[
            "task=restore", "restore.self_supervised=true", f"data.path={tmp_path / 'd'}", "data.val_fraction=0.34",
            "train.epochs=3", "train.iterations_per_epoch=3", "train.batch_size=2", "data.patch_size=32",
            "model.args.depth=2", "model.args.width=4", "train.device=cpu",
        ]
    )  # fmt: skip
    result = train(cfg, tmp_path / "run")
    rows = result.history
    assert all("val_loss" in r and "val_psnr" not in r for r in rows)  # no clean target: no PSNR against noise
    losses = [r["val_loss"] for r in rows]
    assert result.best_epoch == 1 + int(np.argmin(losses))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_tiler_reconstructs_an_identity_network(padding: str) -> None:
    from unetkit import create_model
    from unetkit.infer import Predictor

    net = create_model("unet2d_small", depth=2, width=4, padding=padding, norm=None, num_classes=1)
    p = Predictor(net, tile=44 if padding == "valid" else 32, head="identity", device="cpu")
    margin = net.contract.margin()

    def identity(batch: np.ndarray) -> np.ndarray:  # the identity regression network, with its halo
        if padding == "same":
            return batch
        return batch[
            (slice(None), slice(None), *(slice(m, s - m) for m, s in zip(margin, batch.shape[2:], strict=True)))
        ]

    p.backend = identity  # type: ignore[assignment]
    image = np.random.default_rng(0).random((1, 70, 53)).astype(np.float32)
    out = p.predict_proba(image)
    assert out.shape == (1, 70, 53)
    np.testing.assert_allclose(out, image, atol=1e-6 if padding == "same" else 0)


def test_check_names_size_and_channel_mismatches(tmp_path: Path) -> None:
    write_image(tmp_path / "inputs" / "a.tif", np.zeros((16, 16), np.float32))
    write_image(tmp_path / "targets" / "a.tif", np.zeros((16, 18), np.float32))
    write_image(tmp_path / "inputs" / "b.tif", np.zeros((16, 16), np.float32))
    write_image(tmp_path / "targets" / "b.png", np.zeros((3, 16, 16), np.uint8))
    write_image(tmp_path / "inputs" / "c.tif", np.zeros((16, 16), np.float32))
    write_image(tmp_path / "targets" / "c.tif", np.zeros((16, 16), np.float32))
    write_image(tmp_path / "inputs" / "d.tif", np.zeros((16, 16), np.float32))
    problems, _, _ = check_restore_dataset(tmp_path)
    text = "\n".join(map(str, problems))
    assert "targets/a.tif: size (16, 18) differs" in text
    assert "targets/b.png: target has 3 channel(s)" in text or "targets/c.tif: target has 1 channel(s)" in text
    assert "inputs/d: has no target" in text
    result = runner.invoke(app, ["check", str(tmp_path), "--task", "restore"])
    assert result.exit_code != 0  # (the CLI entry point turns the DataError into exit code 2)
    # without --task restore, the folder is named a restoration dataset and the flag is the fix
    from unetkit.errors import DataError

    result = runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run")])
    assert isinstance(result.exception, DataError) and "--task restore" in str(result.exception)
    assert "restoration dataset" in str(result.exception)


def _held_out(n: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(42)
    out = []
    for i in range(n):
        clean = synthetic_texture((size, size), seed=777 + i)
        out.append((degrade(clean, rng), clean))
    return out


def test_tiny_supervised_run_beats_the_noisy_input(tmp_path: Path) -> None:
    from unetkit.config import load_config
    from unetkit.infer import load_predictor
    from unetkit.train import train

    write_restore_dataset(str(tmp_path / "d"), n=4, shape=(64, 64), seed=0)
    cfg = load_config(
        overrides=[
            "task=restore", f"data.path={tmp_path / 'd'}", "train.epochs=3", "train.iterations_per_epoch=25",
            "train.batch_size=4", "data.patch_size=32", "model.args.depth=2", "model.args.width=8",
            "train.device=cpu", "train.lr=0.003",
        ]
    )  # fmt: skip
    result = train(cfg, tmp_path / "run")
    assert "val_psnr" in result.history[-1]
    import unetkit
    from unetkit.data.restore import invert_scaling
    from unetkit.errors import ConfigError

    predictor = load_predictor(str(result.model_path), device="cpu")
    scaling = predictor.description.target_normalization
    gains = []
    for noisy, clean in _held_out(2, 64):
        out = unetkit.predict(str(result.model_path), noisy, device="cpu")  # the API restores: (C_out, *S)
        assert out.shape == (1, 64, 64) and out.dtype == np.float32
        np.testing.assert_allclose(out, invert_scaling(predictor.predict_proba(noisy[None]), scaling), atol=1e-5)
        gains.append(psnr(out[0], clean, 1.0) - psnr(noisy, clean, 1.0))
    assert min(gains) > 1.0, gains
    # a restoration model has no labels or class probabilities, and says what to call instead
    with pytest.raises(ConfigError, match="restore"):
        predictor.predict(noisy[None])
    with pytest.raises(ConfigError, match=r"probabilities=True: segmentation outputs, but .* leave them out"):
        unetkit.predict(str(result.model_path), noisy, probabilities=True, device="cpu")


def test_model_file_task_defaults_to_segment(tmp_path: Path) -> None:
    from unetkit import create_model
    from unetkit.modelfile import read_description, save_model

    save_model(tmp_path / "m.safetensors", create_model("unet2d_small", depth=2, width=4))
    assert read_description(tmp_path / "m.safetensors").task == "segment"


@pytest.mark.parametrize("dims", [2, 3])
def test_cli_train_predict_evaluate(tmp_path: Path, dims: int) -> None:
    shape = (48, 48) if dims == 2 else (12, 24, 24)
    data = tmp_path / "d"
    write_restore_dataset(str(data), n=3, shape=shape, seed=1)
    # uint16 targets: prediction can come back in their dtype
    for p in sorted((data / "targets").iterdir()):
        write_image(p, np.rint(read_image(p).array * 1000).astype(np.uint16), spatial_dims=dims)
    model = "unet2d_small" if dims == 2 else "unet3d_small"
    patch = "32" if dims == 2 else "16"
    run = tmp_path / "run"
    r = runner.invoke(
        app,
        ["train", str(data), "--task", "restore", "--out", str(run), "--epochs", "1", "--model", model,
         "--patch", patch, "--batch", "2", "--device", "cpu", "--quiet", "--set", "train.iterations_per_epoch=3",
         "--set", "model.args.depth=2", "--set", "model.args.width=4"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    pred = tmp_path / "pred"
    r = runner.invoke(app, ["predict", str(run / "model.safetensors"), str(data / "inputs"), "--out", str(pred)])
    assert r.exit_code == 0, r.output
    out = read_image(pred / "00.tif").array
    assert out.dtype == np.float32 and out.shape == (1, *shape)
    import unetkit

    in_memory = unetkit.predict(str(run / "model.safetensors"), str(data / "inputs" / "00.tif"), device="cpu")
    np.testing.assert_allclose(in_memory, out, rtol=1e-4, atol=1e-4 * float(np.abs(out).max()))
    r = runner.invoke(
        app, ["evaluate", "--task", "restore", "--pred", str(pred), "--truth", str(data / "targets"),
              "--out", str(tmp_path / "ev"), "--images", str(data / "inputs")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ev" / "summary.json").is_file() and (tmp_path / "ev" / "metrics.csv").is_file()
    if dims == 2:
        assert (tmp_path / "ev" / "panels" / "00.png").is_file()
        # with --model and no --task, evaluate follows the model file's task: restore first, then PSNR/SSIM
        r = runner.invoke(
            app, ["evaluate", "--model", str(run / "model.safetensors"), "--images", str(data / "inputs"),
                  "--truth", str(data / "targets"), "--out", str(tmp_path / "ev2"), "--quiet"],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        import json

        assert "psnr" in json.loads((tmp_path / "ev2" / "summary.json").read_text())
        # segmentation outputs are refused with the fix, before anything is written
        r = runner.invoke(
            app, ["predict", str(run / "model.safetensors"), str(data / "inputs"), "--out", str(tmp_path / "p2"),
                  "--instances", "components"],
        )  # fmt: skip
        from unetkit.errors import ConfigError  # (main() turns it into exit code 2 and the one line)

        assert isinstance(r.exception, ConfigError) and "restoration model" in str(r.exception)
        assert "leave them out" in str(r.exception)
        assert not (tmp_path / "p2").exists()


def test_cli_self_supervised_and_onnx(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    data = tmp_path / "d"
    write_restore_dataset(str(data), n=2, shape=(40, 40), seed=2)
    run = tmp_path / "run"
    r = runner.invoke(
        app,
        ["train", str(data), "--task", "restore", "--self-supervised", "--out", str(run), "--epochs", "1",
         "--patch", "32", "--batch", "2", "--device", "cpu", "--quiet", "--set", "train.iterations_per_epoch=2",
         "--set", "model.args.depth=2", "--set", "model.args.width=4"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "validation inputs, scale-matched" not in (run / "train.log").read_text()  # no clean target: no "before"
    a, b = tmp_path / "a", tmp_path / "b"
    for backend, folder in (("torch", a), ("onnxruntime", b)):
        r = runner.invoke(
            app, ["predict", str(run / "model.safetensors"), str(data / "inputs"), "--out", str(folder),
                  "--backend", backend],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
    np.testing.assert_allclose(read_image(a / "00.tif").array, read_image(b / "00.tif").array, atol=1e-4)


def _restore_model(path: Path, seed: int, normalization: dict, low: float, high: float) -> str:
    """A tiny untrained restoration model file scaling its inputs by ``normalization`` and its targets by
    ``[low, high]`` (as a fold's own training images would)."""
    from unetkit import create_model
    from unetkit.modelfile import save_model

    torch.manual_seed(seed)
    net = create_model("unet2d_small", num_classes=1, depth=2, width=4, norm=None)
    scaling = {"kind": "range", "params": {"min": [low], "max": [high]}, "dtype": "float32"}
    return str(save_model(path, net, task="restore", normalization=normalization, target_normalization=scaling))


def _folds(tmp_path: Path) -> tuple[str, str]:
    """Two folds that scale inputs (a fixed range; per-image percentiles) and targets differently."""
    a = _restore_model(tmp_path / "a.safetensors", 0, {"kind": "range", "params": {"min": [0.0], "max": [2.0]}}, 0, 10)
    image_scope = {"kind": "percentile", "params": {"scope": "image", "lower": 1.0, "upper": 99.0}}
    b = _restore_model(tmp_path / "b.safetensors", 1, image_scope, -3.0, 40.0)
    return a, b


def test_an_ensemble_of_restoration_folds_is_the_mean_of_their_restorations(tmp_path: Path) -> None:
    """Folds scale inputs and targets by their own training images: each member normalises the input its own
    way and its outputs are mapped into the lead's space, so the ensemble restores to the mean of the members'
    own ``restore()`` outputs (in memory and through ``unetkit.predict``)."""
    import unetkit
    from unetkit.errors import ConfigError
    from unetkit.infer.ensemble import load_ensemble

    a, b = _folds(tmp_path)
    image = (np.random.default_rng(0).random((1, 40, 44)) * 3).astype(np.float32)
    options = {"device": "cpu", "backend": "torch", "tile": 32}
    one = [load_ensemble([p], **options).restore(image) for p in (a, b)]
    assert np.abs(one[0] - one[1]).mean() > 0.1  # the members do differ
    for paths in ([a, b], [b, a]):  # either lead
        both = load_ensemble(paths, **options).restore(image)
        np.testing.assert_allclose(both, (one[0] + one[1]) / 2, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(unetkit.predict([a, b], image, **options), (one[0] + one[1]) / 2, rtol=1e-5, atol=1e-4)
    # a target normalisation that clips cannot be undone: refused beside another scaling, naming the file
    clip = str(tmp_path / "clip.safetensors")
    from unetkit import create_model
    from unetkit.modelfile import save_model

    net = create_model("unet2d_small", num_classes=1, depth=2, width=4, norm=None)
    scaling = {"kind": "percentile", "params": {"low": [0.0], "high": [1.0]}, "dtype": "float32"}
    save_model(clip, net, task="restore", target_normalization=scaling)
    with pytest.raises(ConfigError, match=r"clip\.safetensors: its target normalization \(kind 'percentile'\) is not"):
        load_ensemble([a, clip], **options)


def test_cli_predicts_an_ensemble_of_restoration_folds_and_refuses_a_segmentation_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from unetkit import create_model
    from unetkit.cli import main
    from unetkit.infer.ensemble import load_ensemble
    from unetkit.modelfile import save_model

    a, b = _folds(tmp_path)
    image = (np.random.default_rng(1).random((1, 40, 44)) * 3).astype(np.float32)
    write_image(tmp_path / "in" / "x.tif", image)
    options = ["--backend", "torch", "--device", "cpu", "--tile", "32", "--quiet"]
    with pytest.raises(SystemExit) as exc:
        main(["predict", a, b, str(tmp_path / "in"), "--out", str(tmp_path / "out"), *options])
    assert exc.value.code in (0, None)
    one = [load_ensemble([p], device="cpu", backend="torch", tile=32).restore(image) for p in (a, b)]
    written = read_image(tmp_path / "out" / "x.tif").array
    np.testing.assert_allclose(written.reshape(image.shape), (one[0] + one[1]) / 2, rtol=1e-5, atol=1e-4)
    seg = str(save_model(tmp_path / "seg.safetensors", create_model("unet2d_small", depth=2, width=4, norm=None)))
    with pytest.raises(SystemExit) as exc:
        main(["predict", a, seg, str(tmp_path / "in"), "--out", str(tmp_path / "mixed"), *options])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "seg.safetensors" in err and "task" in err and "--folds" in err, err
    assert not (tmp_path / "mixed").exists() or not any((tmp_path / "mixed").iterdir())


def test_dims_2_restores_a_stack_slice_by_slice(tmp_path: Path) -> None:
    """``--task restore --dims 2``: a 2D network trains on the slices of 3D volumes (split by volume) and
    restores a whole stack slice by slice."""
    data = tmp_path / "d"
    write_restore_dataset(str(data), n=3, shape=(6, 40, 40), seed=2)
    run = tmp_path / "run"
    r = runner.invoke(
        app,
        ["train", str(data), "--task", "restore", "--dims", "2", "--out", str(run), "--budget", "3s", "--device",
         "cpu", "--quiet", "--set", "model.args.width=4", "--set", "train.epochs=1", "--set",
         "train.iterations_per_epoch=2"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    from unetkit.modelfile import read_description
    from unetkit.plan import load_plan

    assert read_description(run / "model.safetensors").spatial_dims == 2
    assert load_plan(run / "plan.yaml").get("data.slice_axis") == 0
    import json

    split = json.loads((run / "split.json").read_text())
    volumes = {name.split("_slice")[0] for name in split["train"] + split["val"]}
    assert volumes == {"00", "01", "02"} and not {n.split("_slice")[0] for n in split["train"]} & {
        n.split("_slice")[0] for n in split["val"]
    }  # slices of one volume never straddle the split
    pred = tmp_path / "pred"
    r = runner.invoke(app, ["predict", str(run / "model.safetensors"), str(data / "inputs" / "00.tif"), "--out",
                            str(pred)])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = read_image(pred / "00.tif", spatial_dims=3).array
    assert out.shape[-3:] == (6, 40, 40) and out.dtype == np.float32
    import unetkit  # in memory, a stack file or array, slice by slice: what the CLI wrote

    model = run / "model.safetensors"
    for stack in (data / "inputs" / "00.tif", read_image(data / "inputs" / "00.tif", spatial_dims=3).array[0]):
        mem = unetkit.predict(model, stack, device="cpu")
        assert mem.shape == (1, 6, 40, 40)
        np.testing.assert_allclose(mem, out.reshape(mem.shape), rtol=1e-5, atol=1e-5)
