"""Compute backends: turn a batch of normalised tiles into class probabilities.

A backend is a callable ``(B, C, *T) float32 numpy -> (B, K, *T_out) float32 numpy`` probabilities
(softmax over classes; a one-logit sigmoid head gives two channels: background, foreground). The
compute device is the backend's business; what it returns is always on the host. An :class:`ImageBackend`
(an ensemble whose models normalise their inputs differently) takes the raw tiles instead and normalises
them itself.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from unetkit.errors import ConfigError, UnetkitError, require
from unetkit.infer.tta import flip_average, flip_sets
from unetkit.models.base import memory_format

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
#: The backends that run an exported graph (and so an INT8 one).
GRAPH_BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "int8")


class Backend(Protocol):
    """What the predictor needs from a backend."""

    name: str
    device: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


#: Raw tiles of one image to outputs: ``B x (C, *T)`` tiles, as read -> ``(B, K, *T_out)`` float32.
TileFunction = Callable[[Sequence[np.ndarray]], np.ndarray]


class ImageBackend(abc.ABC):
    """A backend that normalises the tiles itself, bound to one image at a time: the predictor asks it for
    each image's :data:`TileFunction` (:meth:`~unetkit.infer.Predictor.tile_function`) and hands it the raw
    tiles, instead of normalising them by its own normalisation and calling the backend. An ensemble whose
    models normalise their inputs differently is one (:class:`unetkit.infer.ensemble.EnsembleBackend`).
    """

    name: str
    device: str

    @abc.abstractmethod
    def for_image(self, image: Any) -> TileFunction:
        """The tile function for ``image`` (``(C, *S)`` array-like, whose statistics per-image normalisations
        take)."""

    @abc.abstractmethod
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """A batch already normalised (where that is meaningful), as a :class:`Backend` takes it."""


#: Input pixels (voxels) per network call per CPU stream for the default batch: one 512² tile, or four 256²
#: ones. A call's threads share each layer of its tiles, and past about this size a call gains nothing from
#: more tiles while its activations keep growing (benchmarks/tile_choice.py: torch 0.71 Mpx/s with one 512²
#: tile a call against 0.53 with four; onnxruntime 1.39 against 1.34; 256² tiles: four a call).
CALL_PIXELS = 512 * 512
#: Tiles per call on CUDA, where a larger batch keeps the device busy (not yet measured: benchmarks/gpu_check.py).
CUDA_TILES_PER_CALL = 4


def tiles_per_call(backend: Backend, tile: Sequence[int], channels: int = 1) -> int:
    """The default batch: how many ``tile``-sized inputs (``channels`` each) one call of ``backend`` gets.

    On the CPU :data:`CALL_PIXELS` worth of tiles (at least one) per stream; a backend that runs a batch as
    one sub-batch per stream (OpenVINO's throughput streams: it has a ``streams`` method) gets that many per
    stream, so that no stream idles (OpenVINO: 0.77 Mpx/s with one 512² tile a call, 1.25 with four). On CUDA
    at least :data:`CUDA_TILES_PER_CALL`.

    >>> class Cpu:
    ...     name, device = "torch", "cpu"
    >>> tiles_per_call(Cpu(), (512, 512)), tiles_per_call(Cpu(), (256, 256)), tiles_per_call(Cpu(), (96, 96, 96))
    (1, 4, 1)
    """
    per_stream = max(1, CALL_PIXELS // math.prod(int(t) for t in tile))
    if str(getattr(backend, "device", "cpu")).startswith("cuda"):
        return max(CUDA_TILES_PER_CALL, per_stream)
    streams = getattr(backend, "streams", None)
    return per_stream * (max(1, int(streams((channels, *tile)))) if callable(streams) else 1)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` (or None) picks CUDA when present; otherwise the named device, checked.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    from unetkit.utils import check_device

    if isinstance(device, torch.device):
        device = str(device)
    return torch.device(check_device("auto" if device is None else device))


def check_backend(backend: str, precision: str = "fp32") -> None:
    """Refuse an unknown backend or precision, INT8 on torch, or a graph backend whose extra is missing.

    >>> check_backend("tensorrt")
    Traceback (most recent call last):
    ...
    unetkit.errors.ConfigError: backend: unknown 'tensorrt'; choose one of auto, torch, onnxruntime, openvino
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend: unknown {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: unknown {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "int8" and backend == "torch":
        raise ConfigError(
            "--precision int8 runs on an exported graph; use --backend onnxruntime, openvino or auto, or "
            "--precision fp32 with torch"
        )
    require_backend(backend)


def resolve_backend(backend: str, device: str | torch.device | None, precision: str = "fp32") -> str:
    """The one backend rule. ``auto``: PyTorch on CUDA (AMP, no export step); on CPU the fastest backend
    installed on this machine, measured once and cached (:func:`unetkit.infer.select.fastest_backend`).
    INT8 runs on an exported graph: ``auto`` then picks the faster of onnxruntime and openvino, and torch is
    refused.

    >>> resolve_backend("torch", "cpu")
    'torch'
    """
    check_backend(backend, precision)
    int8 = precision == "int8"
    if backend != "auto":
        return backend
    if resolve_device(device).type == "cuda":
        if int8:
            raise ConfigError("--precision int8 is for CPUs; on CUDA use --precision fp32 (AMP is on by default)")
        return "torch"
    from unetkit.infer.select import fastest_backend

    return fastest_backend(candidates=GRAPH_BACKENDS if int8 else None)


def probabilities(logits: Any, xp: Any) -> Any:
    """Softmax over axis 1, or ``[1 - sigmoid, sigmoid]`` for a single logit; ``xp`` is torch or numpy."""
    if logits.shape[1] == 1:
        if xp is np:
            fg = 1.0 / (1.0 + np.exp(-logits))
            return np.concatenate([1.0 - fg, fg], axis=1)
        fg = torch.sigmoid(logits)
        return torch.cat([1.0 - fg, fg], dim=1)
    if xp is np:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return torch.softmax(logits, dim=1)


HEADS = ("softmax", "identity")


def activate(logits: Any, xp: Any, head: str = "softmax") -> Any:
    """The network's output activation: :func:`probabilities` for ``softmax`` (segmentation), the raw
    outputs for ``identity`` (restoration's linear head)."""
    return logits if head == "identity" else probabilities(logits, xp)


def _torch_flip(x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    return torch.flip(x, axes) if axes else x


def _np_flip(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.flip(x, axes)) if axes else x


class TorchBackend:
    """PyTorch on CPU or CUDA: inference mode, optional channels-last memory, AMP (CUDA), ``torch.compile``.

    Args:
        model: a unetkit network (put in eval mode; a copy is not made).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision; default on for CUDA (float16 autocast), off on CPU (no native bf16 here).
        channels_last: NHWC/NDHWC memory layout (often faster on GPUs and recent CPUs).
        compile: wrap the network in ``torch.compile`` (slow first call, faster afterwards).
        tta: average all ``2**spatial_dims`` flips.
        head: ``softmax`` (class probabilities) or ``identity`` (restoration outputs as they are).
    """

    name = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str | torch.device | None = "auto",
        amp: bool | None = None,
        channels_last: bool = False,
        compile: bool = False,
        tta: bool = False,
        head: str = "softmax",
    ) -> None:
        dev = resolve_device(device)
        self.head = head
        self.device = str(dev)
        self.spatial_dims = int(model.spatial_dims)  # type: ignore[arg-type]
        self.amp = (dev.type == "cuda") if amp is None else bool(amp)
        if self.amp and dev.type != "cuda":
            log.warning("AMP on %s is emulated and usually slower; consider amp=False", dev)
        self.memory_format = memory_format(self.spatial_dims, channels_last)
        self.model = model.to(dev).eval()
        if channels_last:
            self.model = self.model.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.net: Any = torch.compile(self.model) if compile else self.model
        self.tta = tta
        self._dev = dev

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        amp_ctx: Any = (
            torch.autocast(self._dev.type, dtype=torch.float16) if self.amp else contextlib.nullcontext()
        )  # fmt: skip
        with amp_ctx:
            logits = self.net(x)
        return activate(logits.float(), torch, self.head)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            x = x.to(self._dev, non_blocking=True).contiguous(memory_format=self.memory_format)
            if self.tta:
                p = flip_average(self._forward, x, self.spatial_dims, _torch_flip)
            else:
                p = self._forward(x)
            return p.to("cpu").numpy()


class OnnxBackend:
    """ONNX Runtime on CPU (or CUDA when the GPU build of onnxruntime is installed).

    Args:
        model: an ONNX model (path or serialised bytes), e.g. from :func:`unetkit.infer.export.onnx_bytes`.
        spatial_dims: 2 or 3 (for TTA).
        device: ``cpu``, or ``cuda``/``cuda:N`` (needs ``onnxruntime-gpu``; untested here).
        threads: intra-op threads; default: as many as torch uses.
        tta: average all ``2**spatial_dims`` flips.
        head: ``softmax`` or ``identity``.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model: bytes | str,
        *,
        spatial_dims: int,
        device: str | torch.device | None = "auto",
        threads: int | None = None,
        tta: bool = False,
        head: str = "softmax",
    ) -> None:
        self.head = head
        ort: Any = require("onnxruntime", "onnx", "the onnxruntime backend")
        dev = resolve_device(device)
        providers = ["CPUExecutionProvider"]
        if dev.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(
                    "backend onnxruntime on CUDA needs the GPU build: pip install onnxruntime-gpu; "
                    "or use --backend torch"
                )
            providers = [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]  # type: ignore[list-item]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(model, sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            what = model if isinstance(model, str) else "the exported network"
            raise UnetkitError(f"{what}: onnxruntime cannot load it ({exc})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.device = str(dev)
        self.spatial_dims = spatial_dims
        self.tta = tta

    def _forward(self, x: np.ndarray) -> np.ndarray:
        try:
            (logits,) = self.session.run(None, {self.input_name: x})
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise UnetkitError(
                f"onnxruntime cannot run the network on a batch of shape {tuple(x.shape)} ({exc}); "
                "fix: use a tile size legal for the network, or --backend torch"
            ) from None
        return activate(logits, np, self.head)  # type: ignore[no-any-return]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.tta:
            return flip_average(self._forward, x, self.spatial_dims, _np_flip)
        return self._forward(x)


class OpenVinoBackend:
    """OpenVINO on the CPU: the exported ONNX graph, compiled per batch shape with a throughput configuration.

    The graph is compiled for the exact input shape it is given (static shapes let OpenVINO pick the best
    kernels; a run has one or two batch shapes, each compiled once, in about 0.1 s). With the ``THROUGHPUT``
    hint OpenVINO runs several CPU streams (about one per two cores, ``threads`` in all); a batch is split
    into one sub-batch per stream, each started asynchronously on its own infer request, so every core works on
    its own tiles instead of all cores synchronising on every layer (no Python callbacks: waiting releases the
    GIL). Inference precision is pinned to f32 (OpenVINO
    would otherwise run bf16 on CPUs with AMX/AVX512-BF16); an INT8 (QDQ) graph runs its quantised layers in
    int8.

    Args:
        model: an ONNX model (path or serialised bytes), e.g. from :func:`unetkit.infer.cache.cached_onnx`.
        spatial_dims: 2 or 3 (for TTA).
        device: ``cpu`` (or ``auto`` resolving to it); CUDA is refused.
        threads: CPU threads in all; default: as many as torch uses.
        tta: average all ``2**spatial_dims`` flips.
        head: ``softmax`` or ``identity``.
        hint: ``throughput`` (several streams, default) or ``latency`` (one stream on all threads).
    """

    name = "openvino"

    def __init__(
        self,
        model: bytes | str,
        *,
        spatial_dims: int,
        device: str | torch.device | None = "auto",
        threads: int | None = None,
        tta: bool = False,
        head: str = "softmax",
        hint: str = "throughput",
    ) -> None:
        ov: Any = require("openvino", "openvino", "the openvino backend")
        dev = resolve_device(device)
        if dev.type != "cpu":
            raise ConfigError(f"backend openvino runs on the CPU here, not {dev}; use --device cpu or --backend torch")
        if hint not in ("throughput", "latency"):
            raise ConfigError(f"hint: unknown {hint!r}; choose throughput or latency")
        self.core = ov.Core()
        try:
            self.graph = self.core.read_model(model, b"") if isinstance(model, bytes) else self.core.read_model(model)
        except Exception as exc:  # openvino raises its own untyped errors for bad files
            what = model if isinstance(model, str) else "the exported network"
            raise UnetkitError(f"{what}: openvino cannot read it ({exc})") from None
        self.config = {
            "PERFORMANCE_HINT": hint.upper(),
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "INFERENCE_PRECISION_HINT": "f32",
        }
        self._compiled: dict[tuple[int, ...], list[Any]] = {}
        self.device = str(dev)
        self.spatial_dims = spatial_dims
        self.tta = tta
        self.head = head

    def _requests(self, shape: tuple[int, ...]) -> list[Any]:
        """One infer request per stream of the network compiled for a sub-batch shape (compiled on first use)."""
        if shape not in self._compiled:
            graph = self.graph.clone()
            try:
                graph.reshape({graph.inputs[0].get_any_name(): list(shape)})
                compiled = self.core.compile_model(graph, "CPU", self.config)
            except Exception as exc:  # openvino raises its own untyped errors
                raise UnetkitError(
                    f"openvino cannot compile the network for a batch of shape {shape} ({exc}); "
                    "fix: use a tile size legal for the network, or --backend onnxruntime"
                ) from None
            streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            if len(self._compiled) >= 4:  # a run needs one or two shapes
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[shape] = [compiled.create_infer_request() for _ in range(streams)]
        return self._compiled[shape]

    def streams(self, sample: Sequence[int]) -> int:
        """How many streams run batches of ``sample``-shaped (``(C, *tile)``) inputs (compiles that shape once)."""
        return len(self._requests((1, *(int(n) for n in sample))))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        parts = min(n, self.streams(x.shape[1:]))  # the stream count does not depend on the batch
        bounds = [round(i * n / parts) for i in range(parts + 1)]
        running = []
        used: dict[tuple[int, ...], int] = {}
        for i in range(parts):
            sub = np.ascontiguousarray(x[bounds[i] : bounds[i + 1]])
            requests = self._requests(tuple(sub.shape))
            request = requests[used.get(sub.shape, 0) % len(requests)]
            used[sub.shape] = used.get(sub.shape, 0) + 1
            request.start_async({0: sub})
            running.append(request)
        outputs = []
        for request in running:
            request.wait()
            outputs.append(np.array(request.get_output_tensor(0).data, copy=True))
        return activate(np.concatenate(outputs, axis=0), np, self.head)  # type: ignore[no-any-return]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.tta:
            return flip_average(self._forward, x, self.spatial_dims, _np_flip)
        return self._forward(x)


def require_backend(name: str) -> None:
    """Fail early, before any export, when the package a graph backend needs is missing."""
    if name in GRAPH_BACKENDS:
        require(name, "onnx" if name == "onnxruntime" else "openvino", f"the {name} backend")


def graph_backend(
    name: str, model: bytes | str, *, spatial_dims: int, device: str | torch.device | None, tta: bool, head: str
) -> Backend:
    """An :class:`OnnxBackend` or :class:`OpenVinoBackend` (``name``) on an exported graph."""
    if name == "onnxruntime":
        return OnnxBackend(model, spatial_dims=spatial_dims, device=device, tta=tta, head=head)
    if name == "openvino":
        return OpenVinoBackend(model, spatial_dims=spatial_dims, device=device, tta=tta, head=head)
    raise ConfigError(f"backend {name!r} does not run an exported graph; choose one of {', '.join(GRAPH_BACKENDS)}")


def passes_per_tile(spatial_dims: int, tta: bool) -> int:
    """Network passes per tile: 1, or ``2**spatial_dims`` with flip TTA."""
    return len(flip_sets(spatial_dims)) if tta else 1
