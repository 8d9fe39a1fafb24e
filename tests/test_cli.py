from __future__ import annotations

import gc
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
    assert "segment" in runner.invoke(app, ["info", str(path)]).output


def test_info_of_a_restoration_model_names_its_outputs_not_classes(tmp_path: Path) -> None:
    scaling = {"kind": "range", "params": {"min": [5.0], "max": [900.0]}, "dtype": "uint16"}
    net = create_model("unet2d_small", in_channels=3, num_classes=1, width=2)
    path = save_model(tmp_path / "r.safetensors", net, task="restore", target_normalization=scaling)
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "restore" in result.output and "3 in, 1 out" in result.output and "■" not in result.output  # no classes
    assert "900.0" in result.output and "uint16" in result.output  # how outputs come back to the targets' range


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


def test_the_command_process_skips_the_final_collection(tmp_path: Path) -> None:
    """Run as a command (no argv), main freezes the collector's objects on the way out, error exits included;
    called from Python with argv (as here and in the tests) it leaves the collector alone."""
    code = (
        "import gc, sys\n"
        "from unetkit.cli import main\n"
        "sys.argv = ['unetkit', 'info', sys.argv[1]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    print(e.code, gc.get_freeze_count() > 0)\n"
    )
    missing = str(tmp_path / "missing.safetensors")
    res = subprocess.run([sys.executable, "-c", code, missing], capture_output=True, text=True, check=False)
    assert res.stdout.split() == ["2", "True"], res.stdout + res.stderr
    with pytest.raises(SystemExit):
        main(["info", missing])
    assert gc.get_freeze_count() == 0
