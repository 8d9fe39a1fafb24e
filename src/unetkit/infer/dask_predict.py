"""Prediction over a Dask cluster: one huge image (or many files) in chunks, zarr in and out.

Each output chunk is one task: ``dask.array.map_overlap`` hands it its chunk of the input plus a halo of
one network input tile per side, and the task computes exactly the tiles of the *global* tile grid that
meet its chunk (:meth:`Predictor.iter_slabs` with a region). Tiles are therefore placed, mirrored at the
image border and blended as in a single local run: the labels equal the local tiler's, for ``valid`` and
``same`` nets and every blend mode. Tiles straddling a chunk border are computed by both neighbours;
chunks of several tiles per side keep that cost small.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.errors import ConfigError, require
from unetkit.infer.tiling import reflect_index
from unetkit.utils import atomic_dir

log = logging.getLogger(__name__)

_PREDICTORS: dict[str, Any] = {}


class _PathImage:
    """A picklable lazy image: opened by path in whichever process reads it."""

    def __init__(self, path: str, spatial_dims: int) -> None:
        from unetkit.data.io import open_image

        self.path, self.spatial_dims = path, spatial_dims
        with open_image(path, spatial_dims) as img:
            self.shape, self.dtype = tuple(img.shape), img.dtype
        self.ndim = len(self.shape)
        self._img: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_img": None}

    def __getitem__(self, key: Any) -> np.ndarray:
        from unetkit.data.io import open_image

        if self._img is None:
            self._img = open_image(self.path, self.spatial_dims)
        return np.asarray(self._img[key])


def _predictor(model: Any, key: str, options: dict[str, Any]) -> Any:
    """One predictor per worker process and model, built on first use."""
    if key not in _PREDICTORS:
        import torch

        from unetkit.infer.predictor import Predictor, load_predictor

        torch.set_num_threads(max(1, int(options.pop("threads", 1))))
        _PREDICTORS[key] = (
            load_predictor(model, **options) if isinstance(model, str) else Predictor(model, **options)
        )  # fmt: skip
    return _PREDICTORS[key]


def _block_labels(
    block: np.ndarray,
    *,
    model: Any,
    key: str,
    options: dict[str, Any],
    shape: tuple[int, ...],
    halo: tuple[int, ...],
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """Labels of one output chunk; ``block`` is its input chunk plus whatever halo exists inside the image."""
    if block_info is None or None not in block_info:  # dask probing the function with a dummy block
        return np.zeros((0,) * (block.ndim - 1), np.uint8)
    region = [tuple(r) for r in block_info[None]["array-location"]]
    g0 = [max(0, a - h) for (a, _), h in zip(region, halo, strict=True)]
    predictor = _predictor(model, key, dict(options))

    def read(start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        idx = [reflect_index(np.arange(a, a + n), dim) - o for a, n, dim, o in zip(start, size, shape, g0, strict=True)]
        if any(i.min() < 0 or i.max() >= b for i, b in zip(idx, block.shape[1:], strict=True)):
            raise RuntimeError(f"dask block at {region} lacks the halo for a tile at {tuple(start)}")
        return block[np.ix_(range(block.shape[0]), *idx)]

    image = _Shape((block.shape[0], *shape), block.dtype)
    out = np.empty([b - a for a, b in region], np.uint8 if predictor.num_classes <= 256 else np.uint16)
    for slab in predictor.iter_slabs(image, region=region, reader=read):
        r0 = slab.start - region[0][0]
        out[r0 : r0 + slab.proba.shape[1]] = slab.labels()
    return out


def _split(n: int, edge: int) -> tuple[int, ...]:
    """``n`` pixels in near-equal chunks of at least ``edge`` (map_overlap needs every chunk >= its halo).

    >>> _split(150, 44)
    (50, 50, 50)
    """
    count = max(1, n // edge)
    base, extra = divmod(n, count)
    return tuple(base + (i < extra) for i in range(count))


class _Shape:
    """Shape and dtype of the whole image, for the predictor's checks (reads go through ``reader``)."""

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape, self.dtype = shape, dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        raise RuntimeError("reads go through the block reader")


def predict_dask(
    model: str | Any,
    image: str | os.PathLike[str] | Any,
    out: str | os.PathLike[str],
    *,
    client: Any = None,
    address: str | None = None,
    chunk: int | None = None,
    threads_per_task: int = 1,
    **options: Any,
) -> Path:
    """Segment one image over a Dask cluster; write the labels to the zarr ``out``.

    Args:
        model: a model file path (``.safetensors``/``.onnx``, opened on each worker) or an in-memory network.
        image: a path (read lazily on the workers) or a ``(C, *S)`` array-like / dask array.
        out: the labels ``.zarr`` to write (atomically).
        client: a ``distributed.Client``; default: connect to ``address``, or start a LocalCluster
            (processes, 2 workers, 1 thread each).
        chunk: output chunk edge in pixels (default: 4 tiles); at least one tile.
        threads_per_task: torch threads per task.
        **options: :class:`~unetkit.infer.Predictor` options (tile, overlap, blend, batch_size, tta, backend, ...).

    Returns:
        ``out``.

    Shape:
        ``(C, *S) -> (*S)`` labels.
    """
    da: Any = require("dask.array", "dask", "prediction with --dask")
    distributed: Any = require("distributed", "dask", "prediction with --dask")
    from unetkit.infer.predictor import Predictor, load_predictor

    options = {k: v for k, v in options.items() if v is not None}
    local = load_predictor(model, **options) if isinstance(model, str) else Predictor(model, **options)
    dims = local.spatial_dims
    source = _PathImage(str(image), dims) if isinstance(image, str | os.PathLike) else image
    if len(source.shape) != dims + 1:
        raise ConfigError(f"{image}: shape {tuple(source.shape)} is not (C, *S) for a {dims}D network")
    spatial = tuple(int(s) for s in source.shape[1:])
    tile_in = local.plan(spatial).tile_in
    edge = [max(t, chunk or 4 * t) for t in tile_in]
    chunks = (source.shape[0], *(_split(n, e) for n, e in zip(spatial, edge, strict=True)))
    x = source if isinstance(source, da.Array) else da.from_array(source, chunks=chunks, asarray=False)
    x = x.rechunk(chunks)
    halo = tuple(min(t, n) for t, n in zip(tile_in, spatial, strict=True))
    key = model if isinstance(model, str) else uuid.uuid4().hex
    labels = da.map_overlap(
        _block_labels, x, depth={0: 0, **{i + 1: h for i, h in enumerate(halo)}}, boundary="none", trim=False,
        drop_axis=0, chunks=x.chunks[1:], dtype=np.uint8 if local.num_classes <= 256 else np.uint16,
        model=model, key=key, options={**options, "threads": threads_per_task, "device": options.get("device", "cpu")},
        shape=spatial, halo=halo, meta=np.empty((0,) * dims, np.uint8),
    )  # fmt: skip
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
    out = Path(out)
    try:
        with atomic_dir(out) as tmp:
            regular = tuple(c[0] for c in labels.chunks)  # zarr wants equal chunks: merge the balanced ones
            labels.rechunk(regular).to_zarr(str(tmp), compute=True)
    finally:
        if owned is not None:
            client.close()
            owned.close()
    return out


def predict_files_dask(
    model: str, files: Sequence[Path], out_dir: Path, *, address: str | None = None, **options: Any
) -> list[tuple[Path, Path]]:
    """Run :func:`predict_dask` on every file, one cluster for all; labels to ``OUT/<stem>.zarr``."""
    distributed: Any = require("distributed", "dask", "prediction with --dask")
    from unetkit.data.io import strip_suffix
    from unetkit.infer.files import plan_outputs

    plan_outputs(files, out_dir, probabilities=False, overlay=False)  # refuses to overwrite inputs
    targets = [out_dir / f"{strip_suffix(f.name)}.zarr" for f in files]
    if any(t.resolve() == f.resolve() for t, f in zip(targets, files, strict=True)):
        raise ConfigError("--dask writes OUT/<stem>.zarr, which is an input here; choose another --out")
    cluster = None
    if address is None:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster if cluster is not None else address)
    try:
        return [(f, predict_dask(model, f, t, client=client, **options)) for f, t in zip(files, targets, strict=True)]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
