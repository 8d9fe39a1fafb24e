"""Training data: check, load, split, normalise, and the paper's weight maps (cached per image)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.config import DataConfig
from unetkit.data.datasets import Sample, SegmentationDataset, load_dataset
from unetkit.data.masks import LabelMapping
from unetkit.data.normalize import Normalizer
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
    label_mapping: LabelMapping | None = None


def _split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    if fraction <= 0 or len(samples) < 2:
        if fraction > 0:
            log.warning("only %d image(s): validating on the training image(s)", len(samples))
        return samples, list(samples) if fraction > 0 else []
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = max(1, round(len(samples) * fraction))
    val_idx = set(order[:n_val].tolist())
    return [s for i, s in enumerate(samples) if i not in val_idx], [s for i, s in enumerate(samples) if i in val_idx]


def _load(
    path: str, cfg: DataConfig, spatial_dims: int | None, mapping: LabelMapping | None = None
) -> SegmentationDataset:
    # load_dataset checks the whole dataset first and raises one DataError listing every problem.
    return load_dataset(
        path,
        ignore_index=cfg.ignore_index,
        mask_kind=cfg.mask_kind,
        spatial_dims=spatial_dims,
        num_classes=cfg.num_classes,
        classes=cfg.class_specs(),
        mapping=mapping,
    )


def _attach_weight_maps(samples: list[Sample], cfg: DataConfig, num_classes: int, cache: Path | None) -> None:
    wm = cfg.weight_map
    # w_c from the class frequencies of the whole training set, so every patch is weighted alike.
    counts = sum(class_counts(s.mask, num_classes, cfg.ignore_index) for s in samples)
    wc = balance_from_counts(np.asarray(counts)) if wm.balance_classes else np.ones(num_classes)
    for s in samples:
        key = hashlib.sha256(
            s.mask.tobytes()
            + (s.instances.tobytes() if s.instances is not None else b"")
            + repr((wm.w0, wm.sigma, wc.round(6).tolist(), cfg.ignore_index)).encode()
        ).hexdigest()[:16]
        # The name is only a readable prefix: sample names can be paths (list files), so flatten them and let
        # the content hash identify the file; the cache never leaves its folder.
        readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(s.name).name)[:40]
        cached = cache / f"{readable}-{key}.npy" if cache is not None else None
        if cached is not None and cached.exists():
            s.weight = np.load(cached)
            continue
        s.weight = weight_map(
            s.mask,
            num_classes,
            s.instances,
            w0=wm.w0,
            sigma=wm.sigma,
            class_weights=wc,
            ignore_index=cfg.ignore_index,
            spacing=None,
        )
        if cached is not None:  # atomic: DDP processes may write the same file at once
            with atomic_path(cached) as tmp, tmp.open("wb") as f:
                np.save(f, s.weight)


def prepare_data(
    cfg: DataConfig, *, seed: int, use_weight_map: bool, cache_dir: Path | None = None, spatial_dims: int | None = None
) -> TrainingData:
    """Check and load the dataset(s), split off validation, fit and apply normalisation, add weight maps."""
    if cfg.path is None:
        raise ConfigError("data.path: no dataset given; pass DATA to `unetkit train` or set data.path")
    ds = _load(cfg.path, cfg, spatial_dims)
    if cfg.val_path is not None:
        # the validation masks map as the training masks do (one mapping for the model)
        train, val = list(ds.samples), list(_load(cfg.val_path, cfg, ds.spatial_dims, ds.label_mapping).samples)
    else:
        train, val = _split(list(ds.samples), cfg.val_fraction, seed)
    normalizer = Normalizer(cfg.normalization)
    normalizer.fit(train)
    for s in {id(s): s for s in train + val}.values():
        s.image = np.asarray(normalizer(s.image), dtype=np.float32)
    if use_weight_map:
        _attach_weight_maps(train, cfg, ds.num_classes, cache_dir)
    fingerprint = ds.fingerprint.to_dict()
    return TrainingData(
        train=train,
        val=val,
        num_classes=ds.num_classes,
        in_channels=ds.in_channels,
        spatial_dims=ds.spatial_dims,
        class_names=list(ds.class_names),
        class_colours=ds.class_colours,
        normalizer=normalizer,
        fingerprint=fingerprint,
        spacing=train[0].spacing if train else None,
        label_mapping=ds.label_mapping,
    )
