from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from unetkit.config import Config, apply_overrides, default_config_text, load_config, save_config
from unetkit.errors import ConfigError
from unetkit.train.checkpoint import load_checkpoint, save_checkpoint
from unetkit.train.schedule import lr_factor


def test_defaults_and_overrides() -> None:
    cfg = load_config(overrides=["train.lr=0.01", "model.args.depth=3", "data.patch_size=[64, 96]"])
    assert cfg.train.lr == 0.01 and cfg.model.args == {"depth": 3} and cfg.data.patch_size == [64, 96]


def test_unknown_key_and_bad_value_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochz: 3\n  lr: -1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert "train.epochz: unknown key" in text and "train.lr" in text and str(path) in text
    with pytest.raises(ConfigError, match=r"train\.optimizer"):
        load_config(overrides=["train.optimizer=adam"])
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="device"):
        load_config(overrides=["train.device=tpu"])


def test_commented_default_round_trips(tmp_path: Path) -> None:
    text = default_config_text()
    assert "# amplitude of the border term" in text
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_config(path) == Config()
    save_config(load_config(path, ["train.epochs=7"]), tmp_path / "saved.yaml")
    assert yaml.safe_load((tmp_path / "saved.yaml").read_text())["train"]["epochs"] == 7
    assert load_config(tmp_path / "saved.yaml").train.epochs == 7


def test_checkpoint_round_trip_without_pickle(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "gen": gen.get_state(),
        "epoch": 2,
        "history": [{"loss": 0.5}],
        "pair": (1, "a"),
    }
    path = save_checkpoint(tmp_path / "c.safetensors", state)
    assert b"\x80\x04" not in path.read_bytes()[:200]
    back = load_checkpoint(path)
    opt2 = torch.optim.AdamW(model.parameters())
    opt2.load_state_dict(back["optimizer"])
    assert back["epoch"] == 2 and back["history"] == [{"loss": 0.5}] and back["pair"] == (1, "a")
    g2 = torch.Generator()
    g2.set_state(back["gen"])
    assert torch.equal(torch.rand(3, generator=g2), torch.rand(3, generator=gen))
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_schedules() -> None:
    assert lr_factor(0, 10, "poly") == 1.0 and lr_factor(10, 10, "poly") == 0.0
    assert lr_factor(10, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(0, 100, "cosine", warmup=4) == 0.25
