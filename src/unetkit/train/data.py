"""Training data: check, load, split, normalise, and the paper's weight maps (cached per image)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.classes import palette
from unetkit.config import DataConfig
from unetkit.data.datasets import Sample, SegmentationDataset, load_dataset
from unetkit.data.masks import LabelMapping
from unetkit.data.normalize import Normalizer
from unetkit.data.resample import needs_resampling, resample_image, resample_mask
from unetkit.data.restore import RestoreSample
from unetkit.data.streamed import StreamedImage, choose_reading, decoded_bytes
from unetkit.data.targets import BOUNDARY_CLASS_NAMES, boundary_classes
from unetkit.errors import ConfigError
from unetkit.train.weightmap import balance_from_counts, class_counts, weight_map
from unetkit.utils import atomic_path

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Normalised training and validation samples plus what the model file records about them."""

    train: list[Sample]
    val: list[Sample]
    num_classes: int
    in_channels: int
    spatial_dims: int
    class_names: list[str]
    class_colours: list[tuple[int, int, int]] | None
    normalizer: Normalizer
    fingerprint: dict[str, Any] = field(default_factory=dict)
    spacing: tuple[float, ...] | None = None
    target: str = "classes"
    split: dict[str, list[str]] = field(default_factory=dict)
    label_mapping: LabelMapping | None = None


def _split(
    samples: list[Sample], fraction: float, seed: int, fold: int | None = None, num_folds: int = 5
) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``fraction`` of the samples (seeded), or fold ``fold`` of a ``num_folds``-fold split."""
    order = np.random.default_rng(seed).permutation(len(samples))
    if fold is not None:
        if fold >= num_folds:
            raise ConfigError(f"data.fold={fold}: folds are numbered 0..{num_folds - 1} (data.num_folds={num_folds})")
        if len(samples) < num_folds:
            raise ConfigError(
                f"data.num_folds={num_folds}: the dataset has only {len(samples)} images; use fewer folds"
            )
        val_idx = set(np.array_split(order, num_folds)[fold].tolist())
    elif fraction <= 0 or len(samples) < 2:
        if fraction > 0:
            log.warning("only %d image(s): validating on the training image(s)", len(samples))
        return samples, list(samples) if fraction > 0 else []
    else:
        val_idx = set(order[: max(1, round(len(samples) * fraction))].tolist())
    return [s for i, s in enumerate(samples) if i not in val_idx], [s for i, s in enumerate(samples) if i in val_idx]


def _load(
    path: str, cfg: DataConfig, spatial_dims: int | None, mapping: LabelMapping | None = None, stream: bool = False
) -> SegmentationDataset:
    # load_dataset checks the whole dataset first and raises one DataError listing every problem.
    # a boundary target is cut from instance labels: read "auto" masks as instances then
    kind = "instances" if cfg.target == "boundary" and cfg.mask_kind == "auto" else cfg.mask_kind
    return load_dataset(
        path,
        ignore_index=cfg.ignore_index,
        mask_kind=kind,
        spatial_dims=spatial_dims,
        num_classes=cfg.num_classes,
        classes=cfg.class_specs(),
        mapping=mapping,
        stream=stream,
    )


def _stream_blockers(cfg: DataConfig) -> list[str]:
    """The options that transform whole images, so need them in memory (streamed data is read as stored)."""
    blockers = []
    if cfg.target == "boundary":
        blockers.append("data.target=boundary")
    if cfg.slice_axis is not None:
        blockers.append("data.slice_axis")
    return blockers


def _reading(cfg: DataConfig, spatial_dims: int | None) -> bool:
    """Whether to stream the training data (the rule: :func:`unetkit.data.streamed.choose_reading`)."""
    if cfg.read == "memory":
        return False
    paths = [p for p in (cfg.path, cfg.val_path) if p is not None]
    nbytes = sum(decoded_bytes(p, spatial_dims) for p in paths)
    stream, why = choose_reading(cfg.read, nbytes, _stream_blockers(cfg))
    log.info("%s", why)
    return stream


def _attach_weight_maps(
    samples: list[Sample], cfg: DataConfig, num_classes: int, cache: Path | None, stream: bool = False
) -> None:
    """The paper's weight map per sample, cached as ``.npy`` in ``cache``; streamed samples get a memory map
    of the cached file (computed one image at a time), so the maps never sit in memory together."""
    wm = cfg.weight_map
    # w_c from the class frequencies of the whole training set, so every patch is weighted alike.
    counts = sum(class_counts(np.asarray(s.mask), num_classes, cfg.ignore_index) for s in samples)
    wc = balance_from_counts(np.asarray(counts)) if wm.balance_classes else np.ones(num_classes)
    if stream and cache is None:
        raise ConfigError("streamed training data with a weight map needs a cache folder (the run folder gives one)")
    for s in samples:
        mask = np.asarray(s.mask)
        instances = np.asarray(s.instances) if s.instances is not None else None
        key = hashlib.sha256(
            mask.tobytes()
            + (instances.tobytes() if instances is not None else b"")
            + repr((wm.w0, wm.sigma, wc.round(6).tolist(), cfg.ignore_index)).encode()
        ).hexdigest()[:16]
        # The name is only a readable prefix: sample names can be paths (list files), so flatten them and let
        # the content hash identify the file; the cache never leaves its folder.
        readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(s.name).name)[:40]
        cached = cache / f"{readable}-{key}.npy" if cache is not None else None
        if cached is not None and cached.exists():
            s.weight = np.load(cached, mmap_mode="r" if stream else None)
            continue
        s.weight = weight_map(
            mask,
            num_classes,
            instances,
            w0=wm.w0,
            sigma=wm.sigma,
            class_weights=wc,
            ignore_index=cfg.ignore_index,
            spacing=None,
        )
        if cached is not None:  # atomic: DDP processes may write the same file at once
            with atomic_path(cached) as tmp, tmp.open("wb") as f:
                np.save(f, s.weight)
            if stream:
                s.weight = np.load(cached, mmap_mode="r")


def _boundary_target(samples: list[Sample], ignore_index: int | None) -> None:
    for s in samples:
        if s.instances is None:
            raise ConfigError(
                f"data.target=boundary: {s.name} has no instance labels (its mask holds classes); "
                "use data.target=classes or give instance masks"
            )
        target = boundary_classes(s.instances)
        if ignore_index is not None:
            target[s.mask == ignore_index] = ignore_index
        s.mask = target


def _resample(samples: list[Sample], target: tuple[float, ...]) -> None:
    for s in samples:
        if s.spacing is None:
            log.warning("%s has no voxel spacing: used as it is, not resampled to %s", s.name, list(target))
            continue
        if len(s.spacing) != len(target):
            raise ConfigError(f"data.target_spacing has {len(target)} values, but {s.name} is {len(s.spacing)}D")
        if needs_resampling(s.spacing, target):
            s.image = resample_image(s.image, s.spacing, target)
            s.mask = resample_mask(s.mask, s.spacing, target)
            if s.instances is not None:
                s.instances = resample_mask(s.instances, s.spacing, target)
        s.spacing = target


def _any_resampled(samples: list[Sample], target: list[float]) -> bool:
    return any(
        s.spacing is not None and len(s.spacing) == len(target) and needs_resampling(s.spacing, tuple(target))
        for s in samples
    )


#: the arrays of each sample kind that slicing cuts, and their leading (channel) axes
SLICED_ARRAYS: dict[type, dict[str, int]] = {
    Sample: {"image": 1, "mask": 0, "instances": 0, "weight": 0},
    RestoreSample: {"image": 1, "target": 1},
}


def slice_samples(samples: list[Any], axis: int) -> list[Any]:
    """Each 3D sample (segmentation or restoration) as its 2D slices along spatial ``axis``, named
    ``<name>_slice<i>``, spacing without that axis (the split is made on volumes, before this).

    Shape:
        each array ``(*lead, *S)`` with ``S`` 3D -> ``(*lead, *S without axis)``.
    """
    out = []
    for s in samples:
        arrays = SLICED_ARRAYS[type(s)]
        first = next(iter(arrays))
        depth = getattr(s, first).ndim - arrays[first]
        if depth != 3:
            raise ConfigError(f"data.slice_axis={axis}: {s.name} is {depth}D, slices are cut from 3D images")
        spacing = tuple(v for a, v in enumerate(s.spacing) if a != axis) if s.spacing is not None else None
        for i in range(getattr(s, first).shape[axis + arrays[first]]):
            cut = {
                k: None if getattr(s, k) is None else np.ascontiguousarray(np.take(getattr(s, k), i, axis=axis + lead))
                for k, lead in arrays.items()
            }
            out.append(replace(s, name=f"{s.name}_slice{i:04d}", spacing=spacing, **cut))
    return out


def slice_split(train: list[Any], val: list[Any], axis: int | None, spatial_dims: int) -> tuple[list, list, int]:
    """``data.slice_axis`` (``--dims 2``) applied to a split made on whole volumes: the training and validation
    samples as their 2D slices (:func:`slice_samples`), and the dimensionality trained; as they are without it."""
    if axis is None:
        return train, val, spatial_dims
    if spatial_dims != 3:
        raise ConfigError(f"data.slice_axis={axis}: the dataset is {spatial_dims}D, not 3D")
    return slice_samples(train, axis), slice_samples(val, axis), 2


def prepare_data(
    cfg: DataConfig, *, seed: int, use_weight_map: bool, cache_dir: Path | None = None, spatial_dims: int | None = None
) -> TrainingData:
    """Check and load the dataset(s), split off validation, derive the target, resample, cut slices, fit and
    apply normalisation, add weight maps.

    The order matters: the split is made on whole images (slices of one volume never straddle it), the
    target is derived before resampling (instance boundaries are exact on the stored grid), normalisation is
    fitted on the training images as the network will see them.
    """
    if cfg.path is None:
        raise ConfigError("data.path: no dataset given; pass DATA to `unetkit train` or set data.path")
    stream = _reading(cfg, spatial_dims)
    ds = _load(cfg.path, cfg, spatial_dims, stream=stream)
    if stream and cfg.target_spacing is not None and _any_resampled(ds.samples, cfg.target_spacing):
        if cfg.read == "disk":
            raise ConfigError(
                "data.read=disk: data.target_spacing resamples the images, which needs them in memory; "
                "resample the files once, or leave data.target_spacing unset, or use data.read=memory"
            )
        log.info("training data in memory after all: data.target_spacing resamples the images")
        stream, ds = False, _load(cfg.path, cfg, spatial_dims)
    if cfg.val_path is not None:
        # the validation masks map as the training masks do (one mapping for the model)
        other = _load(cfg.val_path, cfg, ds.spatial_dims, ds.label_mapping, stream=stream)
        train, val = list(ds.samples), list(other.samples)
    else:
        train, val = _split(list(ds.samples), cfg.val_fraction, seed, cfg.fold, cfg.num_folds)
    split = {"train": [s.name for s in train], "val": [s.name for s in val]}
    unique = list({id(s): s for s in train + val}.values())
    num_classes, class_names = ds.num_classes, list(ds.class_names)
    colours = ds.class_colours
    if cfg.target == "boundary":
        _boundary_target(unique, cfg.ignore_index)
        num_classes, class_names, colours = 3, list(BOUNDARY_CLASS_NAMES), palette(3)
    if cfg.target_spacing is not None:
        _resample(unique, tuple(float(x) for x in cfg.target_spacing))
    train, val, spatial = slice_split(train, val, cfg.slice_axis, ds.spatial_dims)
    if cfg.slice_axis is not None:
        unique = list({id(s): s for s in train + val}.values())
    normalizer = Normalizer(cfg.normalization)
    normalizer.fit(train)
    for s in unique:
        if isinstance(s.image, StreamedImage):  # normalised per read, with this image's statistics frozen
            s.image = s.image.with_transform(normalizer.for_image(s.image))  # type: ignore[assignment]
        else:
            s.image = np.asarray(normalizer(s.image), dtype=np.float32)
    if use_weight_map:
        _attach_weight_maps(train, cfg, num_classes, cache_dir, stream)
    fingerprint = ds.fingerprint.to_dict()
    return TrainingData(
        train=train,
        val=val,
        num_classes=num_classes,
        in_channels=ds.in_channels,
        spatial_dims=spatial,
        class_names=class_names,
        class_colours=colours,
        normalizer=normalizer,
        fingerprint=fingerprint,
        spacing=train[0].spacing if train else None,
        target=cfg.target,
        split=split,
        # a boundary target's classes are derived from the instances, not mapped from mask values
        label_mapping=ds.label_mapping if cfg.target == "classes" else None,
    )
