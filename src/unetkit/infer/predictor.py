"""The predictor: tiles in, probabilities out, one slab of finished rows at a time.

The image is only ever touched through ``.shape``, ``.dtype`` and slicing, so numpy arrays, memory maps,
zarr arrays and unetkit's lazy readers all work, and only the tiles being computed are read. Output is
produced as *slabs*: runs of finished rows along the first spatial axis, covering the whole of the other
axes. ``valid`` nets need no accumulation at all (their output tiles abut); blended ``same`` nets keep at
most one row of tiles plus its overlap, so memory grows with the image's width, never its height.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unetkit.data.windows import read_window
from unetkit.errors import ConfigError, InputShapeError
from unetkit.infer.backends import (
    BACKENDS,
    GRAPH_BACKENDS,
    HEADS,
    Backend,
    ImageBackend,
    TileFunction,
    TorchBackend,
    graph_backend,
    passes_per_tile,
    resolve_backend,
    tiles_per_call,
)
from unetkit.infer.bands import BandPrefetcher
from unetkit.infer.tiling import Span, TilePlan, choose_tile, plan_tiles
from unetkit.shapes import ShapeContract

log = logging.getLogger(__name__)

Region = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class Slab:
    """Finished output: probabilities ``(K, rows, *rest)`` for image rows ``[start, start + rows)``.

    ``origin`` is the image coordinate of ``proba[:, 0, 0, ...]`` (all axes), so a slab of a sub-region
    (see :meth:`Predictor.iter_slabs`) knows where it belongs.
    """

    origin: tuple[int, ...]
    proba: np.ndarray

    @property
    def start(self) -> int:
        return self.origin[0]

    def labels(self) -> np.ndarray:
        """The arg-max class per pixel (uint8, or uint16 beyond 256 classes)."""
        return class_labels(self.proba)


def class_labels(proba: np.ndarray) -> np.ndarray:
    """Arg-max over axis 0 as the smallest unsigned type that holds every class.

    Shape:
        ``(K, *S) -> (*S)``
    """
    dtype = np.uint8 if proba.shape[0] <= 256 else np.uint16
    return np.argmax(proba, axis=0).astype(dtype, copy=False)


class _WithChannel:
    """A view adding a leading channel axis to a ``(*S)`` array-like."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = (1, *tuple(array.shape))
        self.dtype = array.dtype

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.array[key[1:]])[None]


@dataclass(frozen=True)
class DescribedNetwork:
    """A network known from its description only (an exported ONNX file): channels, classes, shape contract.

    Nothing is built from it: the legal tile sizes come from
    :func:`unetkit.modelfile.shape_contract`, the computation from an onnxruntime backend.
    """

    description: Any  # a unetkit.modelfile.ModelDescription
    contract: ShapeContract

    @classmethod
    def from_description(cls, description: Any, what: str = "model description") -> DescribedNetwork:
        from unetkit.modelfile import shape_contract

        return cls(description, shape_contract(description, what))

    @property
    def spatial_dims(self) -> int:
        return self.contract.spatial_dims

    @property
    def padding(self) -> str:
        return self.contract.padding

    @property
    def in_channels(self) -> int:
        return int(self.description.in_channels)

    @property
    def num_classes(self) -> int:
        return int(self.description.num_classes)


def head_for(description: Any) -> str:
    """The output head a model file's description asks for: ``identity`` for a restoration (``task: restore``,
    its outputs as they are), ``softmax`` otherwise (class probabilities; also without a description)."""
    return "identity" if getattr(description, "task", "segment") == "restore" else "softmax"


def tile_normaliser(normalization: dict[str, Any], image: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The per-tile normalisation function for ``image`` (image-level statistics from a strided subsample):
    built once per image, by the predictor and by each member of an ensemble alike.

    Shape:
        ``(C, *T) -> (C, *T)`` float32.
    """
    from unetkit.data.normalize import Normalizer

    fn = Normalizer.from_dict(normalization).for_image(image)
    return lambda t: np.asarray(fn(t), dtype=np.float32)


class Predictor:
    """Segment images of any size with a unetkit network, tile by tile.

    Args:
        model: a unetkit network (in memory or from :func:`unetkit.load_model`), or a
            :class:`DescribedNetwork` together with an onnxruntime backend
            (see :func:`~unetkit.infer.loading.load_predictor`).
        normalization: ``{"kind": ..., "params": {...}}``; default: the model file's, else none.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        tile: the network input window (int or one per axis); default: the model file's ``tile_size``,
            else :func:`~unetkit.infer.tiling.default_tile` (512 in 2D, 96 in 3D). Rounded to a legal size
            (docs/design.md).
        overlap: fraction of the tile shared by neighbours, ``same`` nets only.
        blend: ``gaussian``, ``hann``, ``linear``, ``constant`` or ``center`` (``same`` nets only).
        batch_size: tiles per network call; default: the backend's for the tile
            (:func:`~unetkit.infer.backends.tiles_per_call`: one 512² tile, four 256² ones on the CPU; OpenVINO
            that many per stream; at least 4 on CUDA).
        tta: average all ``2**spatial_dims`` flips (costs that many passes per tile).
        backend: ``torch``, ``onnxruntime``, ``openvino`` or ``auto`` (torch on CUDA; on CPU the fastest one
            installed, measured once per machine: :func:`unetkit.infer.select.fastest_backend`). The graph
            backends run the network's ONNX export from the cache (:func:`unetkit.infer.cache.cached_onnx`).
        precision: ``fp32``, or ``int8``: the INT8 graph ``unetkit export --int8`` made and checked
            (:func:`unetkit.infer.quantize.export_int8`), from the cache; onnxruntime or openvino only.
        amp: mixed precision (default: on for CUDA only).
        channels_last: channels-last memory layout (torch).
        compile: ``torch.compile`` the network (torch).
        head: ``softmax`` (segmentation: probabilities) or ``identity`` (restoration: the outputs as they are,
            one channel per target channel); default: from the model file's ``task``.

    Shape:
        ``predict_proba``: ``(C, *S) -> (K, *S)`` float32; ``predict``: ``(C, *S) -> (*S)`` labels;
        ``restore`` (a restoration model): ``(C, *S) -> (C_out, *S)`` float32 in the targets' range.

    Examples:
        >>> import numpy as np
        >>> from unetkit import create_model
        >>> net = create_model("unet2d_small", depth=2, width=4).eval()
        >>> Predictor(net, tile=32).predict(np.zeros((1, 50, 70), np.uint8)).shape
        (50, 70)
        >>> net3d = create_model("unet3d_small", depth=2, width=2, padding="valid", norm=None)
        >>> Predictor(net3d, tile=44).predict_proba(np.zeros((1, 9, 5, 6), np.float32)).shape
        (2, 9, 5, 6)
    """

    def __init__(
        self,
        model: torch.nn.Module | DescribedNetwork,
        *,
        normalization: dict[str, Any] | None = None,
        device: str | torch.device | None = "auto",
        tile: int | Sequence[int] | None = None,
        overlap: float = 0.25,
        blend: str = "gaussian",
        batch_size: int | None = None,
        tta: bool = False,
        backend: str = "torch",
        amp: bool | None = None,
        channels_last: bool = False,
        compile: bool = False,
        head: str | None = None,
        precision: str = "fp32",
        _backend: Backend | None = None,
    ) -> None:
        self.model = model
        self.description = getattr(model, "description", None)
        if head is None:
            head = head_for(self.description)
        if head not in HEADS:
            raise ConfigError(f"head: unknown {head!r}; choose one of {', '.join(HEADS)}")
        self.head = head
        if normalization is None:
            normalization = self.description.normalization.model_dump() if self.description is not None else {}
        self.normalization = dict(normalization) if normalization else {"kind": "none", "params": {}}
        if tile is None and self.description is not None and self.description.tile_size:
            tile = tuple(self.description.tile_size)
        self.tile = tile
        self.overlap, self.blend, self.tta = float(overlap), blend, bool(tta)
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")
        self.batch_size = None if batch_size is None else int(batch_size)
        self.contract: ShapeContract = model.contract  # type: ignore[assignment]
        self.spatial_dims = self.contract.spatial_dims
        self.padding = self.contract.padding
        self.in_channels = int(model.in_channels)  # type: ignore[arg-type]
        num_classes = int(model.num_classes)  # type: ignore[arg-type]
        # the output channels: classes (a one-logit sigmoid head gives two), or a restoration's image channels
        self.num_classes = 2 if (num_classes == 1 and head == "softmax") else num_classes
        plan_tiles(
            (1,) * self.spatial_dims, padding="same", tile=(1,) * self.spatial_dims, overlap=overlap, blend=blend
        )
        if self.padding == "valid" and overlap != 0.25:
            log.info(
                "overlap %.2f ignored: valid networks tile with abutting outputs (their halo is the margin)", overlap
            )
        if _backend is None and backend in BACKENDS:
            backend = resolve_backend(backend, device, precision)
        self.precision = precision
        if _backend is not None:
            self.backend: Backend = _backend
        elif isinstance(model, DescribedNetwork):
            raise ConfigError("a network known only from its description runs on the backend it came with (ONNX)")
        elif backend == "torch":
            self.backend = TorchBackend(
                model, device=device, amp=amp, channels_last=channels_last, compile=compile, tta=self.tta, head=head
            )  # fmt: skip
        elif backend in GRAPH_BACKENDS:
            from unetkit.infer.cache import cached_onnx
            from unetkit.infer.quantize import cached_int8

            graph = cached_int8(model) if precision == "int8" else cached_onnx(model)
            self.backend = graph_backend(
                backend, graph if isinstance(graph, bytes) else str(graph), spatial_dims=self.spatial_dims,
                device=device, tta=self.tta, head=head,
            )  # fmt: skip
        else:
            raise ConfigError(f"backend: unknown {backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.tta:
            log.info("TTA: %d passes per tile", passes_per_tile(self.spatial_dims, True))

    # ---- planning ------------------------------------------------------------------------------------
    def plan(self, spatial: Sequence[int]) -> TilePlan:
        """The tile plan for an image of spatial size ``spatial``."""
        c = self.contract
        tile = choose_tile(c, self.tile, spatial)
        if self.tile is not None and self.padding == "valid":
            req = (self.tile,) * self.spatial_dims if isinstance(self.tile, int) else tuple(self.tile)
            if tuple(req) != tile:
                log.info("tile %s is not legal for this valid network; using %s", tuple(req), tile)
        return plan_tiles(
            spatial, padding=self.padding, tile=tile, tile_out=c.output_shape(tile), margin=c.margin(),
            step=c.steps(), overlap=self.overlap, blend=self.blend,
        )  # fmt: skip

    def batch_for(self, plan: TilePlan) -> int:
        """Tiles per network call for ``plan``: the one given, else the backend's rule for its tile."""
        if self.batch_size is not None:
            return self.batch_size
        return tiles_per_call(self.backend, plan.tile_in, self.in_channels)

    def _check_image(self, image: Any) -> Any:
        shape = tuple(getattr(image, "shape", ()))
        c_in = self.in_channels
        if len(shape) == self.spatial_dims and c_in == 1:
            return _WithChannel(image)
        if len(shape) != self.spatial_dims + 1 or shape[0] != c_in:
            raise InputShapeError(
                f"image of shape {shape}: this {self.spatial_dims}D network needs (C={c_in}, "
                f"{', '.join('S' + str(i) for i in range(self.spatial_dims))}); move the channel axis first"
            )
        if min(shape[1:]) < 1:
            raise InputShapeError(f"image of shape {shape} is empty")
        return image

    # ---- the engine ----------------------------------------------------------------------------------
    def tile_function(self, image: Any) -> TileFunction:
        """How raw tiles of ``image`` become outputs: each normalised by this predictor's normalisation (its
        per-image statistics computed here, once per image: :func:`tile_normaliser`), stacked and run through
        the backend; an :class:`~unetkit.infer.backends.ImageBackend` (an ensemble) normalises them itself.

        Shape:
            ``B x (C, *T)`` tiles as read -> ``(B, K, *T_out)`` float32.
        """
        if isinstance(self.backend, ImageBackend):
            return self.backend.for_image(image)
        normalise = tile_normaliser(self.normalization, image)
        backend = self.backend
        return lambda tiles: backend(np.stack([normalise(t) for t in tiles]))

    def iter_slabs(
        self,
        image: Any,
        region: Region | None = None,
        on_tiles: Callable[[int], None] | None = None,
        reader: Callable[[Sequence[int], Sequence[int]], np.ndarray] | None = None,
    ) -> Iterator[Slab]:
        """Yield finished slabs of probabilities in raster order along the first spatial axis.

        Args:
            image: ``(C, *S)`` array-like (``(*S)`` also accepted for one-channel networks).
            region: only this part of the image (``[(start, stop)]`` per spatial axis), computed exactly as
                it would be in a whole-image run; default: everything.
            on_tiles: called with the number of tiles just computed (for progress bars).
            reader: ``reader(start, size) -> (C, *size)`` tile reads in image coordinates (mirror-padded);
                default :func:`~unetkit.data.windows.read_window` on ``image``.
        """
        image = self._check_image(image)
        spatial = tuple(int(n) for n in image.shape[1:])
        plan = self.plan(spatial)
        region = [(0, n) for n in spatial] if region is None else [(int(a), int(b)) for a, b in region]
        read = reader or (lambda start, size: read_window(image, start, size))
        run = self.tile_function(image)
        weights = plan.weights()
        axis0, others = plan.axes[0], plan.axes[1:]
        rows = axis0.overlapping(*region[0])
        rest = list(itertools.product(*(ax.overlapping(*r) for ax, r in zip(others, region[1:], strict=True))))
        rest_shape = tuple(b - a for a, b in region[1:])
        k = self.num_classes
        lo = region[0][0]
        # One buffer for the life of the run: a row of tiles spans at most one output tile along axis 0
        # (rows left over from the previous row of tiles lie inside the next one's span).
        acc = np.zeros((k, min(axis0.tile_out, region[0][1] - lo), *rest_shape), np.float32)
        bands = BandPrefetcher(image, plan, [[(row, *t) for t in rest] for row in rows]) if reader is None else None
        try:
            yield from self._rows(bands, read, plan, rows, rest, region, run, weights, acc, on_tiles)
        finally:
            if bands is not None:
                bands.close()

    def _rows(
        self,
        bands: BandPrefetcher | None,
        read: Callable[[Sequence[int], Sequence[int]], np.ndarray],
        plan: TilePlan,
        rows: Sequence[int],
        rest: Sequence[tuple[int, ...]],
        region: Sequence[tuple[int, int]],
        run: TileFunction,
        weights: np.ndarray | None,
        acc: np.ndarray,
        on_tiles: Callable[[int], None] | None,
    ) -> Iterator[Slab]:
        """The row loop of :meth:`iter_slabs`: compute each row of tiles, yield the rows it finishes."""
        axis0 = plan.axes[0]
        k = self.num_classes
        lo = region[0][0]
        batch_size = self.batch_for(plan)
        rest_shape = tuple(b - a for a, b in region[1:])

        def keep(span: Span, r: tuple[int, int]) -> tuple[int, int]:
            """The image range a tile writes along one axis, inside ``r`` (blended tiles keep all their output)."""
            return max(span.keep_start, r[0]), min(span.keep_stop, r[1])

        for ri, row in enumerate(rows):
            _, b0 = keep(axis0.spans[row], region[0])
            if b0 - lo > acc.shape[1]:  # not expected (see above); grow rather than fail
                grow = np.zeros((k, b0 - lo - acc.shape[1], *rest_shape), np.float32)
                acc = np.concatenate([acc, grow], axis=1)
            tiles = [(row, *t) for t in rest]
            if bands is not None:  # one read per row of tiles: the tiles of a row share one band of the image
                read = bands.reader(ri)
            for i in range(0, len(tiles), batch_size):
                chunk = tiles[i : i + batch_size]
                spans = [[ax.spans[j] for ax, j in zip(plan.axes, t, strict=True)] for t in chunk]
                proba = run([read([s.in_start for s in sp], plan.tile_in) for sp in spans])
                for p, sp in zip(proba, spans, strict=True):
                    dst: list[slice] = [slice(None)]
                    src: list[slice] = [slice(None)]
                    for ax_i, (s, r) in enumerate(zip(sp, region, strict=True)):
                        a, b = keep(s, r)
                        src.append(slice(a - s.out_start, b - s.out_start))
                        base = lo if ax_i == 0 else r[0]
                        dst.append(slice(a - base, b - base))
                    if weights is None:
                        acc[tuple(dst)] = p[tuple(src)]
                    else:
                        acc[tuple(dst)] += p[tuple(src)] * weights[tuple(src[1:])]
                if on_tiles is not None:
                    on_tiles(len(chunk))
            if ri + 1 < len(rows):
                nxt = keep(axis0.spans[rows[ri + 1]], region[0])[0]
            else:
                nxt = region[0][1]
            done = max(0, min(nxt, region[0][1]) - lo)
            if done:
                if weights is not None:
                    out = acc[:, :done] / plan.normaliser([(lo, lo + done), *region[1:]])
                else:
                    out = acc[:, :done].copy()
                yield Slab((lo, *(r[0] for r in region[1:])), out)
                keep_rows = acc.shape[1] - done
                acc[:, :keep_rows] = acc[:, done:]  # shift the unfinished rows to the front, in place
                acc[:, keep_rows:] = 0.0
                lo += done

    # ---- whole-image conveniences ----------------------------------------------------------------------
    def predict_proba(self, image: Any) -> np.ndarray:
        """Class probabilities for the whole image, in memory (use :func:`predict_file` for huge images).

        Shape:
            ``(C, *S) -> (K, *S)`` float32
        """
        image = self._check_image(image)
        spatial = tuple(int(n) for n in image.shape[1:])
        out = np.empty((self.num_classes, *spatial), np.float32)
        for slab in self.iter_slabs(image):
            out[:, slab.start : slab.start + slab.proba.shape[1]] = slab.proba
        return out

    def predict(self, image: Any) -> np.ndarray:
        """Class labels for the whole image (uint8, or uint16 beyond 256 classes); never holds all probabilities.

        Shape:
            ``(C, *S) -> (*S)``
        """
        if self.restores:
            raise ConfigError(
                "this is a restoration model (task: restore): it has no classes; Predictor.restore(image) returns "
                "the restored image (unetkit.predict(model, image) does it for you)"
            )
        image = self._check_image(image)
        spatial = tuple(int(n) for n in image.shape[1:])
        out = np.empty(spatial, np.uint8 if self.num_classes <= 256 else np.uint16)
        for slab in self.iter_slabs(image):
            out[slab.start : slab.start + slab.proba.shape[1]] = slab.labels()
        return out

    @property
    def restores(self) -> bool:
        """Whether this is a restoration model (``task: restore``): its outputs are the restored image, not
        class probabilities (the ``identity`` head)."""
        return self.head == "identity"

    @property
    def target_scaling(self) -> dict[str, Any]:
        """A restoration model's target scaling as its model file records it (``{}`` where it records none):
        the range :func:`to_target_range` inverts, and the targets' ``dtype``."""
        desc = self.description
        return dict(desc.target_normalization or {}) if desc is not None else {}

    def to_target_range(self, values: np.ndarray) -> np.ndarray:
        """A restoration network's outputs in its targets' intensity range: the model file's target
        normalisation inverted (the outputs as they are where it records none). Every restored image, in memory,
        streamed to a file or over Dask, comes back through this one step.

        Shape:
            ``(C_out, *S) -> (C_out, *S)`` float32.
        """
        from unetkit.data.restore import invert_scaling

        return invert_scaling(values, self.target_scaling)

    def restore(self, image: Any) -> np.ndarray:
        """A restoration model's output for the whole image, in memory, in the targets' intensity range (use
        :func:`~unetkit.infer.files.restore_file` for images larger than memory).

        Shape:
            ``(C_in, *S) -> (C_out, *S)`` float32.
        """
        if not self.restores:
            raise ConfigError(
                "this is a segmentation model: Predictor.predict(image) returns its labels, predict_proba the "
                "class probabilities"
            )
        return self.to_target_range(self.predict_proba(image))

    def tiles_for(self, spatial: Sequence[int]) -> int:
        """How many tiles an image of this size takes (for progress bars)."""
        return self.plan(spatial).num_tiles

    def describe(self, spatial: Sequence[int]) -> str:
        """One line: backend, device, tile, tiles, passes, blend."""
        plan = self.plan(spatial)
        passes = passes_per_tile(self.spatial_dims, self.tta)
        mode = "abutting (valid net)" if self.padding == "valid" else f"{self.blend}, overlap {self.overlap:g}"
        name = f"{self.backend.name} int8" if self.precision == "int8" else self.backend.name
        return (
            f"{name} on {self.backend.device}; tile {plan.tile_in} -> {plan.tile_out}; "
            f"{plan.num_tiles} tiles x {passes} pass(es); {mode}; batch {self.batch_for(plan)}"
        )


def megapixels(spatial: Sequence[int]) -> float:
    """Image size in megapixels (megavoxels in 3D)."""
    return math.prod(spatial) / 1e6
