"""GPU readiness in one run (under 8 minutes on one GPU): training and prediction speed, and how busy the GPU is.

1. **Training steps, side by side**: unetkit's ``unet2d_small`` (4 poolings, widths 16-256, batch norm) and
   MONAI's ``BasicUNet`` with the same widths, one optimizer step (forward, cross-entropy, backward, AdamW)
   on a synthetic batch already on the GPU, in a small matrix: fp32; bf16 autocast; bf16 + channels_last;
   bf16 + channels_last + ``torch.compile``. Images/s and GPU busy %.
2. **unetkit's training loop**: the real ``unetkit.train.train`` on a synthetic dataset (patches drawn on the CPU,
   augmented on the GPU, bf16), with the default augmentation and with none. Images/s and GPU busy % over
   the second half of the steps (the first half warms up); the question is whether augmentation on the
   GPU keeps it >= 90% busy.
3. **Prediction**: megapixels/s of ``unetkit.Predictor`` on a large image with the model trained in 2., on
   torch (CUDA, float16 autocast; and with channels_last + compile), and on ONNX Runtime's
   CUDAExecutionProvider when the installed onnxruntime has it.

GPU busy % is the union of the CUDA kernels' time spans (``torch.profiler``) over the wall time of a profiled
window; with ``pynvml`` installed also NVML's utilisation, sampled at 20 Hz over the timed window. Rates come
from windows without the profiler.

    python benchmarks/gpu_check.py              # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run    # CPU, tiny sizes, < 1 minute: every code path but the CUDA-only

Writes ``benchmarks/results/gpu_check.json`` and ``gpu_check.md`` (``--out DIR`` elsewhere). Without CUDA and
without ``--dry-run`` it says so and writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine

import unetkit
from unetkit.augment import AugmentConfig
from unetkit.data.io import write_image
from unetkit.synthetic import synthetic_cells
from unetkit.train import train
from unetkit.train.callbacks import BaseCallback

BUSY_GOAL = 90.0
MATRIX = [  # name, bf16 autocast, channels_last, torch.compile
    ("fp32", False, False, False),
    ("bf16", True, False, False),
    ("bf16+channels_last", True, True, False),
    ("bf16+channels_last+compile", True, True, True),
]


@dataclass
class Sizes:
    patch: int
    batch: int
    warmup: int
    steps: int
    train_image: int
    train_images: int
    train_steps: int
    predict_image: int
    width: int = 16


FULL = Sizes(
    patch=256, batch=32, warmup=5, steps=30, train_image=512, train_images=8, train_steps=40, predict_image=4096
)
DRY = Sizes(
    patch=32, batch=2, warmup=1, steps=1, train_image=64, train_images=2, train_steps=4, predict_image=96, width=4
)


@dataclass
class Check:
    """The run's settings and what it has found so far."""

    device: torch.device
    sizes: Sizes
    dry_run: bool
    notes: list[str] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


class _NvmlSampler:
    """NVML's GPU utilisation, sampled at 20 Hz in a thread (``None`` without pynvml)."""

    def __init__(self, device: torch.device) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            self._nvml: Any = pynvml
        except Exception:  # not installed, or no NVML: the profiler's figure stands alone
            self._nvml = None

    def start(self) -> None:
        if self._nvml is None:
            return

        def run() -> None:
            while not self._stop.is_set():
                self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
                time.sleep(0.05)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> float | None:
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        return float(np.mean(self.samples)) if self.samples else None


def _kernel_union_us(prof: Any) -> float:
    """The union of the CUDA kernels' time spans, in microseconds (overlapping kernels count once)."""
    from torch.autograd import DeviceType

    spans = sorted(
        (e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA
    )  # fmt: skip
    if not spans:
        raise RuntimeError("the profiler recorded no CUDA kernels")
    total, end = 0.0, -float("inf")
    for a, b in spans:
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


class BusyMeter:
    """GPU busy over windows, each :meth:`start` ... :meth:`stop` (synchronised at both ends).

    A plain window (``profile=False``) times the work and samples NVML (``gpu_busy_nvml_pct``); a profiled
    one also records the CUDA kernels (``gpu_busy_pct``), at some cost in speed, so rates come from plain
    windows and the kernel figure from a profiled one. On CPU both figures stay ``None``.
    """

    def __init__(self, check: Check) -> None:
        self.check = check
        self.result: dict[str, float | None] = {"gpu_busy_pct": None, "gpu_busy_nvml_pct": None}
        self._prof: Any = None
        self._nvml: _NvmlSampler | None = None

    def start(self, profile: bool = False) -> None:
        self.check.sync()
        if self.check.cuda and profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as profiler

            self._prof = profiler(activities=[ProfilerActivity.CUDA])
            self._prof.__enter__()
        elif self.check.cuda:
            self._nvml = _NvmlSampler(self.check.device)
            self._nvml.start()
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Stop; return the window's wall seconds (the busy figures land in :attr:`result`)."""
        self.check.sync()
        wall = time.perf_counter() - self._t0
        if self._nvml is not None:
            self.result["gpu_busy_nvml_pct"] = self._nvml.stop()
            self._nvml = None
        if self._prof is not None:
            self._prof.__exit__(None, None, None)
            try:
                self.result["gpu_busy_pct"] = min(100.0, 100 * _kernel_union_us(self._prof) / (wall * 1e6))
            except Exception as exc:  # a profiler without kernel events: say so, keep NVML's figure
                self.check.notes.append(f"profiler kernel times unavailable: {type(exc).__name__}: {exc}")
            self._prof = None
        return wall


# 1. training steps, unetkit and MONAI side by side


def _networks(width: int) -> dict[str, Callable[[], torch.nn.Module]]:
    from monai.networks.nets import BasicUNet

    return {
        "unetkit": lambda: unetkit.create_model(
            "unet2d_small", in_channels=1, num_classes=2, depth=4, width=width, norm="batch"
        ),
        "monai": lambda: BasicUNet(
            spatial_dims=2, in_channels=1, out_channels=2, features=(*(width * 2**i for i in range(5)), width),
            norm="batch", dropout=0.0,
        ),
    }  # fmt: skip


def train_steps(check: Check) -> list[dict[str, Any]]:
    """Images/s and GPU busy % of plain optimizer steps, per network and configuration of :data:`MATRIX`."""
    s, dev = check.sizes, check.device
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((s.batch, 1, s.patch, s.patch), generator=gen).to(dev)
    y = (torch.rand((s.batch, s.patch, s.patch), generator=gen) > 0.5).long().to(dev)
    if not check.cuda:
        check.notes.append("dry run: torch.compile with the 'eager' backend (no code generation on CPU)")
    rows = []
    for config, bf16, channels_last, compiled in MATRIX:
        for name, build in _networks(s.width).items():
            torch.manual_seed(0)
            net = build().to(dev)
            inputs = x
            if channels_last:
                net, inputs = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
            model: Any = net
            if compiled:
                model = torch.compile(net, backend="inductor" if check.cuda else "eager")
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)

            def step(model: Any = model, opt: Any = opt, inputs: Any = inputs, bf16: bool = bf16) -> None:
                autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
                with autocast:
                    loss = torch.nn.functional.cross_entropy(model(inputs), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            net.train()
            for _ in range(s.warmup + (2 if compiled else 0)):
                step()
            meter = BusyMeter(check)
            meter.start()
            for _ in range(s.steps):
                step()
            wall = meter.stop()
            if check.cuda:  # the kernel busy % (no kernels on CPU)
                meter.start(profile=True)
                for _ in range(max(1, s.steps // 3)):
                    step()
                meter.stop()
            rows.append(
                {
                    "network": name, "config": config, "bf16": bf16, "channels_last": channels_last,
                    "compile": compiled, "images_per_s": s.batch * s.steps / wall, **meter.result,
                }
            )  # fmt: skip
            print(f"  steps {name:8s} {config:28s} {rows[-1]['images_per_s']:9.1f} img/s  busy {_pct(meter.result)}")
            del model, net, opt
            if check.cuda:
                torch.cuda.empty_cache()
    return rows


# 2. unetkit's own training loop


class _WindowCallback(BaseCallback):
    """Measures the second half of a run's steps (the first half warms up): its first half timed (and NVML),
    its second half profiled (kernel busy %)."""

    def __init__(self, check: Check, steps: int) -> None:
        self.meter = BusyMeter(check)
        self.start, self.profiled, self.stop = steps // 2, (3 * steps) // 4, steps
        self.wall: float | None = None

    def on_step(self, *, epoch: int, step: int, loss: float, images_per_s: float) -> None:
        done = step + 1
        if done == self.start:
            self.meter.start()
        if done == self.profiled:
            self.wall = self.meter.stop()
            self.meter.start(profile=True)
        if done == self.stop:
            self.meter.stop()


def _dataset(root: Path, s: Sizes) -> Path:
    for i in range(s.train_images):
        c = synthetic_cells((s.train_image, s.train_image), seed=i, cell_radius=12 if s.train_image >= 256 else 6)
        write_image(root / "images" / f"c{i}.tif", c.image)
        write_image(root / "masks" / f"c{i}.tif", c.instances.astype(np.uint16))
    return root


def train_loop(check: Check, work: Path) -> tuple[dict[str, Any], Path]:
    """``unetkit.train`` with the default augmentation and with none: images/s and GPU busy %.

    Returns the results and the model file of the augmented run.
    """
    s = check.sizes
    data = _dataset(work / "data", s)
    precision = "bf16-mixed" if check.cuda and torch.cuda.is_bf16_supported() else "32"
    if not check.cuda:
        check.notes.append("dry run: unetkit.train on CPU in fp32 (bf16-mixed is for CUDA)")
    results: dict[str, Any] = {"precision": precision, "patch": s.patch, "batch": s.batch, "steps": s.train_steps}
    model_path = work / "augment_on" / "model.safetensors"
    for label, augment in (("augment_on", AugmentConfig()), ("augment_off", AugmentConfig.none())):
        cfg = unetkit.load_config(
            overrides=[
                f"data.path={data}", "data.mask_kind=instances", f"data.patch_size={s.patch}", "data.val_fraction=0",
                "model.name=unet2d_small", "model.args.depth=4", f"model.args.width={s.width}", "model.args.norm=batch",
                "train.loss=dice_ce", "train.epochs=1", f"train.iterations_per_epoch={s.train_steps}",
                f"train.batch_size={s.batch}", f"train.device={'cuda' if check.cuda else 'cpu'}",
                f"train.precision='{precision}'",
            ]
        )  # fmt: skip
        cfg.augment = augment
        window = _WindowCallback(check, s.train_steps)
        train(cfg, work / label, callbacks=[window])  # unetkit.train (the attribute is shadowed by the package)
        assert window.wall is not None
        timed = window.profiled - window.start
        results[label] = {"images_per_s": s.batch * timed / window.wall, **window.meter.result}
        print(f"  loop  {label:12s} {results[label]['images_per_s']:9.1f} img/s  busy {_pct(window.meter.result)}")
    busy = results["augment_on"]["gpu_busy_pct"]
    results["augment_keeps_gpu_busy"] = None if busy is None else bool(busy >= BUSY_GOAL)
    off = results["augment_off"]["images_per_s"]
    results["ratio_augment_on_vs_off"] = results["augment_on"]["images_per_s"] / off
    return results, model_path


# 3. prediction


def predict(check: Check, model_path: Path) -> list[dict[str, Any]]:
    """Megapixels/s of ``unetkit.Predictor`` per backend after a warm-up (and GPU busy % of a second run)."""
    s = check.sizes
    image = np.asarray(synthetic_cells((s.predict_image, s.predict_image), seed=9, cell_radius=12).image)[None]
    model = unetkit.load_model(model_path)
    device = "cuda" if check.cuda else "cpu"
    variants: list[tuple[str, dict[str, Any]]] = [("torch", {"backend": "torch"})]
    if check.cuda:
        variants.append(("torch channels_last+compile", {"backend": "torch", "channels_last": True, "compile": True}))
    else:
        check.notes.append("dry run: prediction with torch.compile skipped (minutes of code generation on CPU)")
    ort = _onnxruntime_providers()
    if ort is None:
        check.notes.append("onnxruntime is not installed: no ONNX Runtime prediction")
    elif not check.cuda:
        variants.append(("onnxruntime (CPU, dry run)", {"backend": "onnxruntime"}))
    elif "CUDAExecutionProvider" in ort:
        variants.append(("onnxruntime CUDA", {"backend": "onnxruntime"}))
    else:
        check.notes.append(
            f"onnxruntime has no CUDAExecutionProvider (only {', '.join(ort)}): pip install onnxruntime-gpu"
        )
    rows = []
    mpx = s.predict_image**2 / 1e6
    for name, options in variants:
        predictor = unetkit.Predictor(model, device=device, batch_size=8 if check.cuda else 2, **options)
        predictor.predict(image[:, : s.predict_image // 4, : s.predict_image // 4])  # warm-up, compile
        best = float("inf")
        meter = BusyMeter(check)
        for profile in (False, True) if check.cuda else (False,):  # rate: plain run; kernel busy %: profiled
            meter.start(profile=profile)
            t0 = time.perf_counter()
            predictor.predict(image)
            if not profile:
                best = time.perf_counter() - t0
            meter.stop()
        rows.append({"backend": name, "image": s.predict_image, "mpx_s": mpx / best, **meter.result})
        print(f"  predict {name:28s} {mpx / best:9.2f} Mpx/s  busy {_pct(meter.result)}")
    base = rows[0]["mpx_s"]
    for row in rows[1:]:
        row["ratio_vs_torch"] = row["mpx_s"] / base
    return rows


def _onnxruntime_providers() -> list[str] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())


def _pct(result: dict[str, Any]) -> str:
    busy, nvml = result.get("gpu_busy_pct"), result.get("gpu_busy_nvml_pct")
    text = "-" if busy is None else f"{busy:.0f}%"
    return text + ("" if nvml is None else f" (NVML {nvml:.0f}%)")


def unetkit_vs_monai(steps: list[dict[str, Any]]) -> dict[str, float]:
    """``{config: unetkit images/s / MONAI images/s}`` per configuration of the step matrix."""
    rate = {(r["network"], r["config"]): r["images_per_s"] for r in steps}
    return {c: rate[("unetkit", c)] / rate[("monai", c)] for c, *_ in MATRIX}


def markdown(result: dict[str, Any]) -> str:
    """The results as markdown tables (``gpu_check.md``)."""

    def num(v: Any, fmt: str = ".1f") -> str:
        return "-" if v is None else format(v, fmt)

    m = result["machine"]
    lines = [
        f"# GPU check{' (dry run, CPU)' if result['dry_run'] else ''}",
        "",
        f"{result['date']}, {m.get('cuda') or m['cpu']}, torch {m['torch']}. Command: `{result['command']}`.",
        "",
        "## Training steps (synthetic batch on the device)",
        "",
        "| config | unetkit img/s | busy % | MONAI img/s | busy % | unetkit / MONAI |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = {(r["network"], r["config"]): r for r in result["train_steps"]}
    for config, *_ in MATRIX:
        u, mo = rows[("unetkit", config)], rows[("monai", config)]
        lines.append(
            f"| {config} | {num(u['images_per_s'])} | {num(u['gpu_busy_pct'], '.0f')} | {num(mo['images_per_s'])} | "
            f"{num(mo['gpu_busy_pct'], '.0f')} | {result['ratios_unetkit_vs_monai'][config]:.2f}x |"
        )
    loop = result["train_loop"]
    keeps = loop["augment_keeps_gpu_busy"]
    lines += [
        "",
        f"## unetkit.train ({loop['precision']}, patch {loop['patch']}, batch {loop['batch']})",
        "",
        "| augmentation | img/s | GPU busy % | NVML % |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {k.removeprefix('augment_')} | {num(loop[k]['images_per_s'])} | {num(loop[k]['gpu_busy_pct'], '.0f')} "
            f"| {num(loop[k]['gpu_busy_nvml_pct'], '.0f')} |"
            for k in ("augment_on", "augment_off")
        ),
        "",
        f"GPU augmentation keeps the GPU >= {BUSY_GOAL:.0f}% busy: "
        + ("not measured (no CUDA)" if keeps is None else ("yes" if keeps else "no")),
        "",
        "## Prediction",
        "",
        "| backend | image | Mpx/s | GPU busy % |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {r['backend']} | {r['image']}² | {r['mpx_s']:.2f} | {num(r['gpu_busy_pct'], '.0f')} |"
            for r in result["predict"]
        ),
    ]
    if result["notes"]:
        lines += ["", "Notes:", "", *(f"- {n}" for n in result["notes"])]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="unetkit-gpu-check-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the script itself")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing measured (run it on a GPU machine, or --dry-run)")
        return 0
    check = Check(torch.device("cpu" if args.dry_run else "cuda"), DRY if args.dry_run else FULL, args.dry_run)
    if args.dry_run:
        torch.set_num_threads(min(2, torch.get_num_threads()))
        check.notes.append("dry run on CPU: no GPU busy % (CUDA kernels are what it measures)")
    else:
        torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    print(f"machine: {machine()}")
    sections: dict[str, float] = {}
    print("1. training steps")
    steps = train_steps(check)
    sections["train_steps"] = time.perf_counter() - t0
    with _workdir() as work:
        print("2. unetkit.train")
        loop, model_path = train_loop(check, work)
        sections["train_loop"] = time.perf_counter() - t0 - sections["train_steps"]
        print("3. prediction")
        preds = predict(check, model_path)
        sections["predict"] = time.perf_counter() - t0 - sections["train_steps"] - sections["train_loop"]
    result = {
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "dry_run": args.dry_run,
        "seconds": time.perf_counter() - t0,
        "section_seconds": sections,
        "train_steps": steps,
        "ratios_unetkit_vs_monai": unetkit_vs_monai(steps),
        "train_loop": loop,
        "predict": preds,
        "notes": check.notes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (args.out / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out / 'gpu_check.json'} and gpu_check.md ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
