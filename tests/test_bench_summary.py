"""benchmarks/run_all.py: the summary table of every ratio in benchmarks/results/*.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import run_all


def test_summary_lists_every_ratio_with_machine_and_date(tmp_path: Path) -> None:
    (tmp_path / "train_throughput.json").write_text(
        json.dumps({"machine": {"cpu": "CPU X", "cores": 2}, "quick": True, "results": {"2d": {"ratio": 1.25}}})
    )
    (tmp_path / "gpu_check.json").write_text(
        json.dumps(
            {
                "machine": {"cpu": "CPU X", "cuda": "GPU Y"},
                "date": "2026-12-01 10:00 UTC",
                "ratios_unetkit_vs_monai": {"fp32": 1.5, "bf16": 2.0},
                "predict": [{"backend": "torch", "mpx_s": 9.0}, {"backend": "ort", "ratio_vs_torch": 0.5}],
                "train_loop": {"augment_keeps_gpu_busy": True},
            }
        )
    )
    (tmp_path / "broken.json").write_text("{")
    out = run_all.write_summary(tmp_path)
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert "| train_throughput (quick) | results/2d/ratio | 1.25 | CPU X, 2 cores |" in text
    assert "| gpu_check | ratios_unetkit_vs_monai/bf16 | 2 | GPU Y | 2026-12-01 10:00 UTC |" in text
    assert "| gpu_check | predict/ort/ratio_vs_torch | 0.5 |" in text
    assert any(r.startswith("| broken | unreadable") for r in rows)
    assert len(rows) == 5  # mpx_s and the boolean are no ratios
