from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unetkit import create_model, save_model
from unetkit.cli import app, main

runner = CliRunner()


def test_models_lists_parameter_counts() -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "unet_paper" in result.output and "31,030,658" in result.output


def test_info(tmp_path: Path) -> None:
    path = save_model(tmp_path / "m.safetensors", create_model("unet3d_small", width=2), tile_size=[32, 32, 32])
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "unet3d_small" in result.output and "[32, 32, 32]" in result.output
    result = runner.invoke(app, ["info", "--json", str(path)])
    assert '"format_version": 1' in result.output


def test_errors_are_one_line_not_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 4)
    with pytest.raises(SystemExit) as exc:
        main(["info", str(bad)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "bad.safetensors" in err and "Traceback" not in err


def test_console_script_help() -> None:
    out = subprocess.run([sys.executable, "-m", "unetkit", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("models", "info", "demo"):
        assert cmd in out
