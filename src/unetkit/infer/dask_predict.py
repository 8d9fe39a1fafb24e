"""Prediction over a Dask cluster: one huge image (or many files) in chunks, zarr in and out.

Each output chunk is one task: ``dask.array.map_overlap`` hands it its chunk of the input plus a halo of
one network input tile per side, and the task computes exactly the tiles of the *global* tile grid that
meet its chunk (:meth:`Predictor.iter_slabs` with a region), reading them from its block through the one
window reader (:func:`unetkit.data.windows.read_window`). Per-image normalisation statistics are computed
once, on the whole image, and shipped to the tasks. Tiles are therefore placed, mirrored at the image
border, normalised and blended as in a single local run: the labels (and probabilities) equal the local
tiler's, for ``valid`` and ``same`` nets and every blend mode. Tiles straddling a chunk border are computed
by both neighbours; chunks of several tiles per side keep that cost small.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.errors import ConfigError, require
from unetkit.utils import atomic_dir

log = logging.getLogger(__name__)

_PREDICTORS: dict[str, Any] = {}


class _PathImage:
    """A picklable lazy image: opened by path in whichever process reads it, with ``in_channels`` channels
    (converted by ``channels``, :mod:`unetkit.data.channels`, when given)."""

    def __init__(
        self, path: str, spatial_dims: int, in_channels: int | None = None, channels: str | None = None
    ) -> None:
        self.path, self.spatial_dims = path, spatial_dims
        self.in_channels, self.channels = in_channels, channels
        with self._open() as img:
            self.shape, self.dtype = tuple(img.shape), img.dtype
        self.ndim = len(self.shape)
        self._img: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_img": None}

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._img is None:
            self._img = self._open()
        return np.asarray(self._img[key])

    def _open(self) -> Any:
        from unetkit.data.channels import with_channels
        from unetkit.data.io import open_image

        img = open_image(self.path, self.spatial_dims)
        if self.in_channels is None or len(img.shape) != self.spatial_dims + 1:
            return img  # a shape that is not (C, *S) is refused by the caller
        try:
            return with_channels(img, self.in_channels, self.channels)
        except BaseException:
            img.close()
            raise


def _predictor(model: Any, key: str, options: dict[str, Any], normalization: dict[str, Any]) -> Any:
    """The predictor for ``key`` (model and options) with this image's ``normalization``.

    One network (and backend, e.g. one ONNX export) per worker process and key, built on first use; each
    image gets a shallow copy carrying its own frozen normalisation.
    """
    if key not in _PREDICTORS:
        import torch

        from unetkit.infer.loading import load_predictor
        from unetkit.infer.predictor import Predictor

        torch.set_num_threads(max(1, int(options.pop("threads", 1))))
        _PREDICTORS[key] = (
            load_predictor(model, **options) if isinstance(model, str) else Predictor(model, **options)
        )  # fmt: skip
    predictor = copy.copy(_PREDICTORS[key])
    predictor.normalization = normalization
    return predictor


class _BlockView:
    """One Dask block seen as the whole image: reads in image coordinates, served from the block.

    ``block`` holds the image's pixels from ``origin`` on (its chunk plus the halo that lies inside the
    image); a read reaching past them is a planning error, not a user error.
    """

    def __init__(self, block: np.ndarray, origin: Sequence[int], shape: Sequence[int]) -> None:
        self.block, self.origin = block, tuple(int(o) for o in origin)
        self.shape, self.dtype = (block.shape[0], *(int(n) for n in shape)), block.dtype

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        local: list[slice] = [key[0]]
        for sl, o, n in zip(key[1:], self.origin, self.block.shape[1:], strict=True):
            a, b = int(sl.start) - o, int(sl.stop) - o
            if a < 0 or b > n:
                raise RuntimeError(f"dask block at {self.origin} lacks the halo for a read of {key[1:]}")
            local.append(slice(a, b))
        return np.asarray(self.block[tuple(local)])


def _block_proba(
    block: np.ndarray,
    *,
    model: Any,
    key: str,
    options: dict[str, Any],
    normalization: dict[str, Any],
    shape: tuple[int, ...],
    halo: tuple[int, ...],
    labels: bool,
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """Labels ``(*chunk)`` (or probabilities ``(K, *chunk)``) of one output chunk.

    ``block`` is the input chunk plus whatever halo exists inside the image; tiles are read from it through
    the same window reader as a local run (:func:`~unetkit.data.windows.read_window`, mirrored at the image
    border) and normalised with ``normalization``, frozen on the whole image (:meth:`Normalizer.freeze`).
    """
    if block_info is None or None not in block_info:  # dask probing the function with a dummy block
        return np.zeros((0,) * (block.ndim - (1 if labels else 0)), np.uint8 if labels else np.float32)
    location = block_info[None]["array-location"]  # the output chunk's: (K, *chunk) for probabilities
    region = [tuple(r) for r in (location if labels else location[1:])]
    origin = [max(0, a - h) for (a, _), h in zip(region, halo, strict=True)]
    predictor = _predictor(model, key, dict(options), normalization)
    image = _BlockView(block, origin, shape)
    size = [b - a for a, b in region]
    if labels:
        out = np.empty(size, np.uint8 if predictor.num_classes <= 256 else np.uint16)
    else:
        out = np.empty((predictor.num_classes, *size), np.float32)
    for slab in predictor.iter_slabs(image, region=region):
        r0 = slab.start - region[0][0]
        if labels:
            out[r0 : r0 + slab.proba.shape[1]] = slab.labels()
        else:
            out[:, r0 : r0 + slab.proba.shape[1]] = slab.proba
    return out


def _planner(model: str | Any, options: dict[str, Any]) -> Any:
    """The client's predictor: it plans the tiles and freezes the normalisation, and runs no tile, so it is
    built on torch on the CPU (no graph export, no inference session) unless the model is an ``.onnx`` file,
    which has no torch network. The tile plan does not depend on the backend (:meth:`Predictor.plan`)."""
    from unetkit.infer.backends import check_backend
    from unetkit.infer.loading import load_predictor
    from unetkit.infer.predictor import Predictor

    light = dict(options)
    if not (isinstance(model, str) and model.lower().endswith(".onnx")):
        check_backend(options.get("backend", "torch"), options.get("precision", "fp32"))  # the workers' choice
        light.update(backend="torch", device="cpu", precision="fp32", compile=False, amp=None)
    return load_predictor(model, **light) if isinstance(model, str) else Predictor(model, **light)


def _split(n: int, edge: int) -> tuple[int, ...]:
    """``n`` pixels in near-equal chunks of at least ``edge`` (map_overlap needs every chunk >= its halo).

    >>> _split(150, 44)
    (50, 50, 50)
    """
    count = max(1, n // edge)
    base, extra = divmod(n, count)
    return tuple(base + (i < extra) for i in range(count))


def predict_dask(
    model: str | Any,
    image: str | os.PathLike[str] | Any,
    out: str | os.PathLike[str],
    *,
    probabilities: str | os.PathLike[str] | None = None,
    prob_dtype: str = "float16",
    client: Any = None,
    address: str | None = None,
    chunk: int | None = None,
    threads_per_task: int = 1,
    channels: str | None = None,
    **options: Any,
) -> Path:
    """Segment one image over a Dask cluster; write the labels (and probabilities) to zarr. A restoration model
    (``task: restore``) writes the restored image instead, ``(C_out, *S)`` float32 in its targets' range.

    Per-image normalisation statistics are computed once, here, exactly as a local run computes them
    (:meth:`~unetkit.data.Normalizer.freeze`), and shipped to the tasks, which each see one block only.

    Args:
        model: a model file path (``.safetensors``/``.onnx``, opened on each worker) or an in-memory network.
        image: a path (read lazily on the workers) or a ``(C, *S)`` array-like / dask array.
        out: the labels ``.zarr`` to write (atomically).
        probabilities: also write the probabilities ``(K, *S)`` to this ``.zarr``.
        prob_dtype: ``float16`` or ``uint8`` (probability x 255, rounded), as for local prediction.
        client: a ``distributed.Client``; default: connect to ``address``, or start a LocalCluster
            (processes, 2 workers, 1 thread each).
        chunk: output chunk edge in pixels (default: 4 tiles); at least one tile.
        threads_per_task: torch threads per task.
        channels: convert an image file whose channels are not the model's (``rgb``, ``grey``, ``first``:
            :mod:`unetkit.data.channels`); ``None`` refuses a mismatch.
        **options: :class:`~unetkit.infer.Predictor` options (tile, overlap, blend, batch_size, tta, backend, ...).

    Returns:
        ``out``.

    Shape:
        ``(C, *S) -> (*S)`` labels, ``(K, *S)`` probabilities; a restoration: ``(C_out, *S)``.
    """
    dask: Any = require("dask", "dask", "prediction with --dask")
    da: Any = require("dask.array", "dask", "prediction with --dask")
    distributed: Any = require("distributed", "dask", "prediction with --dask")
    from unetkit.data.normalize import Normalizer
    from unetkit.infer.outputs import PROB_DTYPES, encode_probabilities, refuse_segmentation_outputs
    from unetkit.infer.predictor import class_labels

    if prob_dtype not in PROB_DTYPES:
        raise ConfigError(f"prob_dtype: {prob_dtype!r}; choose one of {', '.join(PROB_DTYPES)}")
    options = {k: v for k, v in options.items() if v is not None}
    local = _planner(model, options)
    dims = local.spatial_dims
    restore = local.restores
    if restore:
        refuse_segmentation_outputs(str(model), ["probabilities"] if probabilities is not None else [])
    source = (
        _PathImage(str(image), dims, local.in_channels, channels) if isinstance(image, str | os.PathLike) else image
    )
    if len(source.shape) != dims + 1:
        raise ConfigError(f"{image}: shape {tuple(source.shape)} is not (C, *S) for a {dims}D network")
    spatial = tuple(int(s) for s in source.shape[1:])
    tile_in = local.plan(spatial).tile_in
    edge = [max(t, chunk or 4 * t) for t in tile_in]
    chunks = (source.shape[0], *(_split(n, e) for n, e in zip(spatial, edge, strict=True)))
    x = source if isinstance(source, da.Array) else da.from_array(source, chunks=chunks, asarray=False)
    x = x.rechunk(chunks)
    halo = tuple(min(t, n) for t, n in zip(tile_in, spatial, strict=True))
    task_options = {**options, "threads": threads_per_task, "device": options.get("device", "cpu")}
    # workers keep one predictor per model file and options (an in-memory network: per call)
    key = f"{model if isinstance(model, str) else uuid.uuid4().hex}|{sorted(task_options.items())!r}"
    # the whole image's statistics, from the same subsample a local run takes; the tasks see one block each
    frozen = Normalizer.from_dict(local.normalization).freeze(source).to_dict()
    label_dtype = np.uint8 if local.num_classes <= 256 else np.uint16
    depth = {0: 0, **{i + 1: h for i, h in enumerate(halo)}}
    common = dict(
        depth=depth, boundary="none", trim=False, model=model, key=key, options=task_options, normalization=frozen,
        shape=spatial, halo=halo,
    )  # fmt: skip
    targets: list[tuple[Any, Path]] = []
    if restore:  # the network's outputs, back in the targets' range: Predictor.to_target_range's step, on blocks
        from unetkit.data.restore import invert_scaling

        raw = da.map_overlap(
            _block_proba, x, chunks=((local.num_classes,), *x.chunks[1:]), dtype=np.float32, labels=False,
            meta=np.empty((0,) * (dims + 1), np.float32), **common,
        )  # fmt: skip
        labels = raw.map_blocks(
            invert_scaling, local.target_scaling, dtype=np.float32, meta=np.empty((0,) * (dims + 1), np.float32)
        )  # (the scaling, not the client's predictor, goes into the graph)
    elif probabilities is None:
        labels = da.map_overlap(
            _block_proba, x, drop_axis=0, chunks=x.chunks[1:], dtype=label_dtype, labels=True,
            meta=np.empty((0,) * dims, label_dtype), **common,
        )  # fmt: skip
    else:
        proba = da.map_overlap(
            _block_proba, x, chunks=((local.num_classes,), *x.chunks[1:]), dtype=np.float32, labels=False,
            meta=np.empty((0,) * (dims + 1), np.float32), **common,
        )  # fmt: skip
        labels = proba.map_blocks(class_labels, drop_axis=0, dtype=label_dtype, meta=np.empty((0,) * dims, label_dtype))
        stored = encode_probabilities(np.zeros(0, np.float32), prob_dtype).dtype
        encoded = proba.map_blocks(
            encode_probabilities, prob_dtype, dtype=stored, meta=np.empty((0,) * (dims + 1), stored)
        )
        targets.append((encoded, Path(probabilities)))
    targets.insert(0, (labels, Path(out)))
    owned = None
    if client is None:
        if address is None:
            cluster = distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            )  # fmt: skip
            owned = cluster
            client = distributed.Client(cluster)
        else:
            client = distributed.Client(address)
        log.info("dask: %s", client)
    try:
        with contextlib.ExitStack() as stack:
            stores = []
            for array, path in targets:
                tmp = stack.enter_context(atomic_dir(path))
                regular = tuple(c[0] for c in array.chunks)  # zarr wants equal chunks: merge the balanced ones
                stores.append(array.rechunk(regular).to_zarr(str(tmp), compute=False))
            dask.compute(*stores)
    finally:
        if owned is not None:
            client.close()
            owned.close()
    return Path(out)


def predict_files_dask(
    model: str,
    files: Sequence[Path],
    out_dir: Path,
    *,
    address: str | None = None,
    probabilities: bool = False,
    prob_dtype: str = "float16",
    channels: str | None = None,
    **options: Any,
) -> list[tuple[Path, list[Path]]]:
    """Run :func:`predict_dask` on every file, one cluster for all.

    Labels go to ``OUT/<stem>.zarr``, probabilities (``probabilities=True``) to ``OUT/<stem>_prob.zarr``.

    Returns:
        ``(input, [outputs])`` per file.
    """
    distributed: Any = require("distributed", "dask", "prediction with --dask")
    from unetkit.data.io import strip_suffix
    from unetkit.infer.outputs import plan_outputs

    plan_outputs(files, out_dir, probabilities=False, overlay=False)  # refuses to overwrite inputs
    targets = [
        [out_dir / f"{strip_suffix(f.name)}.zarr", *([out_dir / f"{strip_suffix(f.name)}_prob.zarr"] * probabilities)]
        for f in files
    ]
    inputs = {f.resolve() for f in files}
    for paths in targets:
        for t in paths:
            if t.resolve() in inputs:
                raise ConfigError(f"--dask writes {t}, which is an input here; choose another --out")
    cluster = None
    if address is None:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster if cluster is not None else address)
    try:
        results = []
        for f, paths in zip(files, targets, strict=True):
            prob = paths[1] if probabilities else None
            predict_dask(
                model,
                f,
                paths[0],
                probabilities=prob,
                prob_dtype=prob_dtype,
                client=client,
                channels=channels,
                **options,
            )
            results.append((f, paths))
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
