"""benchmarks/gpu_check.py: the dry run on CPU goes through every section and writes its JSON and table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_check

BENCH = Path(gpu_check.__file__).resolve().parent


def test_kernel_union_counts_overlapping_kernels_once() -> None:
    from torch.autograd import DeviceType

    def event(a: float, b: float, device: DeviceType = DeviceType.CUDA) -> SimpleNamespace:
        return SimpleNamespace(time_range=SimpleNamespace(start=a, end=b), device_type=device)

    prof = SimpleNamespace(
        events=lambda: [event(0, 10), event(5, 12), event(20, 25), event(21, 22), event(0, 100, DeviceType.CPU)]
    )
    assert gpu_check._kernel_union_us(prof) == 17


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA this would run the full check")
def test_without_cuda_it_measures_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    assert "no CUDA device" in capsys.readouterr().out and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_dry_run_writes_every_section(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] is True and result["machine"]["cores"] >= 1
    steps = result["train_steps"]
    assert {(r["network"], r["config"]) for r in steps} == {
        (n, c) for n in ("unetkit", "monai") for c, *_ in gpu_check.MATRIX
    }
    assert all(r["images_per_s"] > 0 and r["gpu_busy_pct"] is None for r in steps)
    assert set(result["ratios_unetkit_vs_monai"]) == {c for c, *_ in gpu_check.MATRIX}
    loop = result["train_loop"]
    assert loop["augment_on"]["images_per_s"] > 0 and loop["augment_off"]["images_per_s"] > 0
    assert loop["augment_keeps_gpu_busy"] is None  # no CUDA: not measured, and the note says so
    assert result["predict"][0]["backend"] == "torch"
    assert all(r["mpx_s"] > 0 for r in result["predict"])
    assert any("dry run" in n for n in result["notes"])
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| bf16+channels_last+compile |" in table and "not measured (no CUDA)" in table
