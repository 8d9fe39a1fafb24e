"""pix2pix adversarial restoration (``--gan``): the PatchGAN, the GAN step, its checkpoint, a short stable run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from unetkit.cli import app
from unetkit.config import load_config
from unetkit.errors import ConfigError, UnetkitError
from unetkit.metrics import psnr
from unetkit.models.patchgan import PatchGAN, patchgan_layers
from unetkit.synthetic import degrade, synthetic_texture, write_restore_dataset
from unetkit.train import BaseCallback, train
from unetkit.train.checkpoint import load_checkpoint

runner = CliRunner()


@pytest.mark.parametrize(("shape", "layers"), [((64, 64), 3), ((32, 32), 2), ((16, 24, 24), 1)])
def test_patchgan_shapes(shape: tuple[int, ...], layers: int) -> None:
    assert patchgan_layers(shape) == layers
    d = PatchGAN(2, spatial_dims=len(shape), width=4, layers=layers)
    out = d(torch.randn(2, 2, *shape))
    assert out.shape == (2, 1, *[s // 2**layers - 2 for s in shape])
    # spectral norm: every convolution's weight is parametrised
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)


def _cfg(data: Path, *extra: str) -> object:
    return load_config(
        overrides=[
            "task=restore", f"data.path={data}", "restore.gan=true", "train.device=cpu", "data.patch_size=32",
            "train.batch_size=4", "model.args.depth=2", "model.args.width=8", "restore.gan_width=8",
            "train.lr=0.003", *extra,
        ]
    )  # fmt: skip


def test_gan_step_updates_both_networks_and_the_model_file_holds_the_generator(tmp_path: Path) -> None:
    write_restore_dataset(str(tmp_path / "d"), n=3, shape=(48, 48), seed=3)
    cfg = _cfg(tmp_path / "d", "train.epochs=1", "train.iterations_per_epoch=3", "restore.gan_warmup=0")
    from unetkit.train.gan import make_adversary  # seeded: the run builds this same discriminator

    class _NoFabric:
        def setup(self, *objs: object) -> tuple[object, ...]:
            return objs

    initial = make_adversary(cfg, 1, 1, 2, [32, 32], _NoFabric(), 3).raw.state_dict()  # type: ignore[arg-type]
    result = train(cfg, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert {"discriminator", "d_optimizer", "adversary"} <= ckpt.keys()
    trained = ckpt["discriminator"]
    assert any(not torch.equal(initial[k], trained[k]) for k in initial), "the discriminator never stepped"
    assert ckpt["d_optimizer"]["state"], "the discriminator's optimizer holds no state"
    weights = load_file(str(result.model_path))
    generator = ckpt["model"]
    assert set(weights) == set(generator)  # the generator's weights and nothing else
    assert not any("disc" in k for k in weights)
    row = result.history[-1]
    assert math.isfinite(row["d_loss"]) and math.isfinite(row["g_adv"]) and row["g_adv"] > 0


def _held_out(n: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(42)
    return [(degrade(clean, rng), clean) for clean in (synthetic_texture((size, size), seed=777 + i) for i in range(n))]


def test_short_gan_run_is_stable_and_beats_the_noisy_input(tmp_path: Path) -> None:
    from unetkit.data.restore import invert_scaling
    from unetkit.infer import load_predictor

    write_restore_dataset(str(tmp_path / "d"), n=4, shape=(64, 64), seed=0)
    cfg = _cfg(tmp_path / "d", "train.epochs=3", "train.iterations_per_epoch=25", "restore.gan_warmup=0.1")
    result = train(cfg, tmp_path / "run")
    for row in result.history:
        assert all(math.isfinite(row[k]) for k in ("train_loss", "d_loss", "g_adv")), row
    predictor = load_predictor(str(result.model_path), device="cpu")
    scaling = predictor.description.target_normalization
    gains = []
    for noisy, clean in _held_out(2, 64):
        out = invert_scaling(predictor.predict_proba(noisy[None]), scaling)[0]
        gains.append(psnr(out, clean, 1.0) - psnr(noisy, clean, 1.0))
    assert min(gains) > 1.0, gains


class _Crash(Exception):
    pass


class _CrashAt(BaseCallback):
    def on_step(self, *, epoch: int, step: int, loss: float, images_per_s: float) -> None:
        if epoch == 1 and step == 2:  # mid-epoch 2, after the step-2 checkpoint
            raise _Crash


def test_gan_run_resumes_exactly(tmp_path: Path) -> None:
    write_restore_dataset(str(tmp_path / "d"), n=3, shape=(48, 48), seed=4)
    cfg = _cfg(
        tmp_path / "d", "train.epochs=2", "train.iterations_per_epoch=4", "train.checkpoint_every=2",
        "restore.gan_warmup=0.1",
    )  # fmt: skip
    with pytest.raises(_Crash):
        train(cfg, tmp_path / "crashed", callbacks=[_CrashAt()])
    resumed = train(cfg, tmp_path / "crashed", resume=True)
    straight = train(cfg, tmp_path / "straight")
    a = load_checkpoint(tmp_path / "crashed" / "checkpoints" / "last.safetensors")
    b = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    for key in ("model", "discriminator"):
        assert a[key].keys() == b[key].keys() and all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    sa, sb = a["d_optimizer"]["state"], b["d_optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    for k in ("train_loss", "d_loss", "g_adv"):
        assert resumed.history[1][k] == pytest.approx(straight.history[1][k], rel=1e-6), k


def test_gan_refusals(tmp_path: Path) -> None:
    from unetkit.train.task import make_task

    with pytest.raises(ConfigError, match="clean targets"):
        make_task(load_config(overrides=["task=restore", "restore.gan=true", "restore.self_supervised=true"]))
    r = runner.invoke(app, ["train", str(tmp_path), "--gan", "--quiet"])
    assert isinstance(r.exception, UnetkitError) and "--task restore" in str(r.exception)
    # a checkpoint without a discriminator does not resume as a GAN run
    write_restore_dataset(str(tmp_path / "d"), n=2, shape=(40, 40), seed=5)
    plain = _cfg(tmp_path / "d", "restore.gan=false", "train.epochs=1", "train.iterations_per_epoch=1")
    train(plain, tmp_path / "run")
    gan = _cfg(tmp_path / "d", "train.epochs=2", "train.iterations_per_epoch=1")
    with pytest.raises(UnetkitError, match="no discriminator"):
        train(gan, tmp_path / "run", resume=True)


def test_cli_gan_3d(tmp_path: Path) -> None:
    data = tmp_path / "d"
    write_restore_dataset(str(data), n=2, shape=(16, 24, 24), seed=6)
    run = tmp_path / "run"
    r = runner.invoke(
        app,
        ["train", str(data), "--task", "restore", "--gan", "--out", str(run), "--epochs", "1", "--model",
         "unet3d_small", "--patch", "16", "--batch", "2", "--device", "cpu", "--quiet", "--set",
         "train.iterations_per_epoch=2", "--set", "model.args.depth=2", "--set", "model.args.width=4",
         "--set", "restore.gan_width=4", "--set", "restore.gan_warmup=0"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "discriminator" in load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert "d_loss" in (run / "metrics.csv").read_text().splitlines()[0]
