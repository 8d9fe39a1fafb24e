"""``--backend auto`` on a CPU (measured once, cached per machine) and the exported-graph cache."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unetkit.cli import app
from unetkit.data.io import write_image
from unetkit.infer import Predictor, select
from unetkit.infer import export as export_module
from unetkit.infer.backends import resolve_backend
from unetkit.infer.cache import cache_dir, graph_path, network_digest
from unetkit.modelfile import load_model, save_model
from unetkit.models import UNet

runner = CliRunner()


class FakeMeasure:
    """A measurement that returns given timings and counts its calls."""

    def __init__(self, timings: Mapping[str, float]) -> None:
        self.timings, self.calls = dict(timings), 0

    def __call__(self, backends: Sequence[str], threads: int) -> dict[str, float]:
        self.calls += 1
        return {b: t for b, t in self.timings.items() if b in backends}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UNETKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_selector_picks_the_fastest_and_caches_per_machine(cache: Path) -> None:
    fake = FakeMeasure({"torch": 0.30, "onnxruntime": 0.20, "openvino": 0.10})
    installed = select.installed_backends()
    expected = min((b for b in installed), key=lambda b: fake.timings[b])
    assert select.fastest_backend(threads=2, measure=fake) == expected
    assert fake.calls == 1
    entry = json.loads((cache / "backend-choice.json").read_text())["machines"][select.machine_key(2)]
    assert entry["choice"] == expected
    # a hit: the same answer, nothing measured
    assert select.fastest_backend(threads=2, measure=fake) == expected
    assert select.fastest_backend(["torch", "onnxruntime"], threads=2, measure=fake) in ("torch", "onnxruntime")
    assert fake.calls == 1
    # another thread count is another machine key: measured again, both kept
    slow_ov = FakeMeasure({"torch": 0.1, "onnxruntime": 0.2, "openvino": 0.3})
    assert select.fastest_backend(threads=1, measure=slow_ov) == "torch"
    assert slow_ov.calls == 1
    assert len(json.loads((cache / "backend-choice.json").read_text())["machines"]) == 2


@pytest.mark.parametrize(
    "content", ["{not json", '{"machines": [1, 2]}', '{"machines": {"KEY": {"seconds_per_tile": {"torch": "fast"}}}}']
)
def test_a_corrupt_cache_is_ignored_and_rewritten(cache: Path, content: str) -> None:
    cache.mkdir(parents=True)
    (cache / "backend-choice.json").write_text(content.replace("KEY", select.machine_key(2)))
    fake = FakeMeasure({"torch": 0.1, "onnxruntime": 0.2, "openvino": 0.3})
    assert select.fastest_backend(threads=2, measure=fake) == "torch"
    assert fake.calls == 1
    assert (
        json.loads((cache / "backend-choice.json").read_text())["machines"][select.machine_key(2)]["choice"] == "torch"
    )


def test_auto_follows_the_cached_choice_and_int8_excludes_torch(cache: Path) -> None:
    pytest.importorskip("onnxruntime")
    import torch

    key = select.machine_key(torch.get_num_threads())
    cache.mkdir(parents=True)
    timings = {"torch": 0.01, "onnxruntime": 0.02}
    (cache / "backend-choice.json").write_text(json.dumps({"machines": {key: {"seconds_per_tile": timings}}}))
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("auto", "cpu", "int8") == "onnxruntime"  # INT8 runs on an exported graph


def test_measure_backends_times_the_probe_with_the_given_clock() -> None:
    ticks = iter(range(1000))
    timings = select.measure_backends(["torch"], 1, timer=lambda: float(next(ticks)), repeats=2)
    assert timings == {"torch": 1.0 / select.PROBE_BATCH}  # every timed call spans one tick


def test_fastest_refuses_an_empty_choice() -> None:
    from unetkit.errors import ConfigError

    with pytest.raises(ConfigError):
        select.fastest({"torch": 0.1}, ["openvino"])


# ---- the exported-graph cache -----------------------------------------------------------------------
def test_digest_follows_the_weights(tmp_path: Path) -> None:
    net = UNet(2, 1, 2, depth=2, width=4).eval()
    path = save_model(tmp_path / "m.safetensors", net)
    assert network_digest(load_model(path)) == network_digest(load_model(path))
    other = load_model(path)
    with __import__("torch").no_grad():
        next(other.parameters()).add_(1e-3)
    assert network_digest(other) != network_digest(load_model(path))


def test_second_predict_reuses_the_exported_graph(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    net = UNet(2, 1, 2, depth=2, width=4).eval()
    model = save_model(tmp_path / "m.safetensors", net)
    write_image(tmp_path / "x.png", (np.random.default_rng(0).random((1, 40, 40)) * 255).astype(np.uint8))
    calls: list[Path] = []
    real = export_module.export_onnx

    def counting(model: object, path: Path, opset: int = 17) -> Path:
        calls.append(Path(path))
        return real(model, path, opset)  # type: ignore[arg-type]

    monkeypatch.setattr(export_module, "export_onnx", counting)
    args = ["predict", str(model), str(tmp_path / "x.png"), "--tile", "32", "--backend", "onnxruntime"]
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "a")]).exit_code == 0
    graph = graph_path(load_model(model))
    assert calls == [graph] and graph.is_file() and graph.parent.parent == cache_dir()
    mtime = graph.stat().st_mtime_ns
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "b")]).exit_code == 0
    assert len(calls) == 1 and graph.stat().st_mtime_ns == mtime  # the second run did not export
    Predictor(load_model(model), backend="onnxruntime", device="cpu")
    assert len(calls) == 1
