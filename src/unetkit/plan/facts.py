"""What the planner needs to know about a dataset, gathered once from the loaded samples.

The planner's rules read only :class:`DataFacts` (plain numbers), so they can be tested on synthetic
facts with no images at all; :func:`gather_facts` computes them from a loaded dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Objects this close (pixels) count as separated by a thin gap only.
GAP = 5
#: Images read for the object statistics (the first ones; they are costlier than intensities).
OBJECT_IMAGES = 8
#: Voxels sampled per image for the foreground intensity statistics (fixed seed, deterministic).
_SAMPLES_PER_IMAGE = 10_000


@dataclass(frozen=True)
class DataFacts:
    """A dataset summarised for planning.

    Attributes:
        num_images: image/mask pairs.
        spatial_dims: 2 or 3.
        in_channels: image channels.
        image_dtype: numpy dtype name of the images as stored (``uint8``, ``int16``, ``float32`` ...).
        shapes: spatial shape of every image, in voxels.
        spacings: voxel spacing of every image (``None`` where a file has none).
        num_classes: classes after the mask mapping (background included).
        class_frequencies: share of labelled voxels per class.
        mask_kind: ``"classes"``, ``"instances"`` or ``"colours"``.
        touching_instances: share of instance objects that touch another object (0 when not instances).
        instances_per_image: median number of objects per image (0 when not instances).
        objects_per_image: median number of foreground objects (connected components of the classes > 0, or
            the instances) per image.
        separated_objects: share of those objects that come within ``GAP`` pixels of another one (a gap of
            fewer than ``GAP`` background pixels): objects kept apart only by thin gaps (cell membranes,
            touching nuclei), the paper's case for its weight map.
        foreground_intensity: per-channel ``p0.5``, ``p99.5``, ``mean``, ``std`` of the image inside the
            foreground (mask > 0).
        intensity: per-channel ``min``/``max`` of all images (from the dataset fingerprint).
        nonzero_fraction: median share of each image's volume inside the bounding box of its non-zero voxels.
        channel_names: names of the channels when the files carry them (e.g. ``["CT"]``), else empty.
        task: ``"segment"`` (masks) or ``"restore"`` (images -> images; ``num_classes`` is then the target's
            channel count and the mask statistics are empty).
        target_dtype: restoration: the targets' dtype as stored.
    """

    num_images: int
    spatial_dims: int
    in_channels: int
    image_dtype: str
    shapes: tuple[tuple[int, ...], ...]
    spacings: tuple[tuple[float, ...] | None, ...] = ()
    num_classes: int = 2
    class_frequencies: tuple[float, ...] = ()
    mask_kind: str = "classes"
    touching_instances: float = 0.0
    instances_per_image: float = 0.0
    objects_per_image: float = 0.0
    separated_objects: float = 0.0
    foreground_intensity: dict[str, list[float]] = field(default_factory=dict)
    intensity: dict[str, list[float]] = field(default_factory=dict)
    nonzero_fraction: float = 1.0
    channel_names: tuple[str, ...] = ()
    task: str = "segment"
    target_dtype: str = ""

    @property
    def median_shape(self) -> tuple[float, ...]:
        """The median spatial shape per axis."""
        return tuple(float(x) for x in np.median(np.array(self.shapes, dtype=np.float64), axis=0))

    @property
    def known_spacings(self) -> list[tuple[float, ...]]:
        """The spacings of the files that have one."""
        return [s for s in self.spacings if s is not None and len(s) == self.spatial_dims]

    @property
    def total_voxels(self) -> int:
        """Voxels over all images."""
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (for ``plan.yaml``)."""
        d = asdict(self)
        d["shapes"] = [list(s) for s in self.shapes]
        d["spacings"] = [list(s) if s is not None else None for s in self.spacings]
        d["class_frequencies"] = [round(f, 6) for f in self.class_frequencies]
        d["channel_names"] = list(self.channel_names)
        return d


def touching_fraction(instances: np.ndarray) -> tuple[float, int]:
    """The share of objects in an instance label image that touch another object, and the object count.

    Two objects touch when a pixel of one is a face neighbour of a pixel of the other.

    >>> lab = np.zeros((6, 6), int); lab[1:3, 1:3] = 1; lab[1:3, 3:5] = 2; lab[4:6, 0:2] = 3
    >>> touching_fraction(lab)
    (0.6666666666666666, 3)
    """
    ids = np.unique(instances)
    ids = ids[ids > 0]
    if len(ids) == 0:
        return 0.0, 0
    touching: set[int] = set()
    for ax in range(instances.ndim):
        a = np.moveaxis(instances, ax, 0)
        lo, hi = a[:-1], a[1:]
        meet = (lo > 0) & (hi > 0) & (lo != hi)
        touching.update(np.unique(lo[meet]).tolist())
        touching.update(np.unique(hi[meet]).tolist())
    return len(touching) / len(ids), len(ids)


def near_fraction(labels: np.ndarray, gap: int = GAP) -> tuple[float, int]:
    """The share of objects in a label image (0 = background) that come within ``gap`` pixels of another.

    >>> lab = np.zeros((8, 16), int); lab[1:7, 1:5] = 1; lab[1:7, 9:13] = 2
    >>> near_fraction(lab)
    (1.0, 2)
    >>> near_fraction(lab, gap=0)
    (0.0, 2)
    """
    from scipy import ndimage

    ids = np.unique(labels)
    ids = ids[ids > 0]
    if len(ids) == 0:
        return 0.0, 0
    if gap <= 0:
        return touching_fraction(labels)[0], len(ids)
    big = int(ids.max()) + 1
    size = 2 * gap + 1
    high = ndimage.maximum_filter(labels, size=size)
    low = ndimage.minimum_filter(np.where(labels > 0, labels, big), size=size)
    near = (low < big) & (high != low) & (labels > 0)
    return len(np.unique(labels[near])) / len(ids), len(ids)


def _nonzero_share(image: np.ndarray) -> float:
    nz = np.any(image != 0, axis=0)
    if not nz.any():
        return 1.0
    box = [np.flatnonzero(np.any(nz, axis=tuple(a for a in range(nz.ndim) if a != ax))) for ax in range(nz.ndim)]
    inside = np.prod([b[-1] - b[0] + 1 for b in box])
    return float(inside / nz.size)


def gather_facts(
    samples: Sequence[Any],
    *,
    num_classes: int,
    in_channels: int,
    spatial_dims: int,
    image_dtype: str,
    class_frequencies: Sequence[float],
    mask_kind: str,
    intensity: dict[str, list[float]] | None = None,
) -> DataFacts:
    """Summarise loaded samples (objects with ``image (C, *S)``, ``mask (*S)``, ``instances``, ``spacing``).

    Reads every sample once: shapes and spacings, instance contacts, foreground intensities (a fixed-seed
    subsample), the non-zero bounding box.
    """
    rng = np.random.default_rng(0)
    fg_values: list[np.ndarray] = []
    touch, counts, nonzero, near, objects = [], [], [], [], []
    for i, s in enumerate(samples):
        image = np.asarray(s.image)
        fg = np.asarray(s.mask) > 0
        flat = image.reshape(image.shape[0], -1)[:, fg.ravel()]
        if flat.shape[1]:
            take = rng.choice(flat.shape[1], size=min(flat.shape[1], _SAMPLES_PER_IMAGE), replace=False)
            fg_values.append(flat[:, np.sort(take)].astype(np.float64))
        if getattr(s, "instances", None) is not None:
            t, n = touching_fraction(np.asarray(s.instances))
            touch.append(t * n)
            counts.append(n)
        nonzero.append(_nonzero_share(image))
        if i < OBJECT_IMAGES:
            from scipy import ndimage

            inst = getattr(s, "instances", None)
            lab = np.asarray(inst) if inst is not None else ndimage.label(fg)[0]
            share, n = near_fraction(lab)
            near.append(share * n)
            objects.append(n)
    fg_stats: dict[str, list[float]] = {}
    if fg_values:
        pooled = np.concatenate(fg_values, axis=1)
        lo, hi = np.percentile(pooled, [0.5, 99.5], axis=1)
        fg_stats = {
            "p0.5": lo.tolist(),
            "p99.5": hi.tolist(),
            "mean": pooled.mean(axis=1).tolist(),
            "std": pooled.std(axis=1).tolist(),
        }
    return DataFacts(
        num_images=len(samples),
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        image_dtype=image_dtype,
        shapes=tuple(tuple(int(n) for n in np.asarray(s.mask).shape) for s in samples),
        spacings=tuple(tuple(float(x) for x in s.spacing) if s.spacing is not None else None for s in samples),
        num_classes=num_classes,
        class_frequencies=tuple(float(f) for f in class_frequencies),
        mask_kind=mask_kind,
        touching_instances=float(sum(touch) / sum(counts)) if sum(counts) else 0.0,
        instances_per_image=float(np.median(counts)) if counts else 0.0,
        objects_per_image=float(np.median(objects)) if objects else 0.0,
        separated_objects=float(sum(near) / sum(objects)) if sum(objects) else 0.0,
        foreground_intensity=fg_stats,
        intensity=dict(intensity or {}),
        nonzero_fraction=float(np.median(nonzero)) if nonzero else 1.0,
    )


def restore_facts(samples: Sequence[Any], *, in_channels: int, out_channels: int, image_dtype: str,
                  target_dtype: str) -> DataFacts:  # fmt: skip
    """Summarise a restoration dataset (samples with ``image (C_in, *S)``, ``target``, ``spacing``): shapes,
    spacings, channels, intensities; the mask statistics do not apply."""
    images = [np.asarray(s.image) for s in samples]
    lo = np.min([im.reshape(im.shape[0], -1).min(axis=1) for im in images], axis=0) if images else np.zeros(1)
    hi = np.max([im.reshape(im.shape[0], -1).max(axis=1) for im in images], axis=0) if images else np.zeros(1)
    return DataFacts(
        num_images=len(samples),
        spatial_dims=images[0].ndim - 1 if images else 2,
        in_channels=in_channels,
        image_dtype=image_dtype,
        shapes=tuple(tuple(int(n) for n in im.shape[1:]) for im in images),
        spacings=tuple(tuple(float(x) for x in s.spacing) if s.spacing is not None else None for s in samples),
        num_classes=out_channels,
        mask_kind="none",
        intensity={"min": [float(x) for x in lo], "max": [float(x) for x in hi]},
        nonzero_fraction=float(np.median([_nonzero_share(im) for im in images])) if images else 1.0,
        task="restore",
        target_dtype=target_dtype,
    )
