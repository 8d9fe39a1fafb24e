"""Random training patches: legal network input sizes, foreground oversampling, mirrored borders.

A :class:`PatchSampler` cuts ``batch_size`` patches per call. A ``foreground_fraction`` of them is *forced*:
a random foreground class is picked, then a random sample containing it, then one of its voxels of that
class, which is placed at a random position inside the central output region of the patch (the region a
valid network predicts; the whole patch for same-padded nets). Every patch's output region lies inside the
image (or, for images smaller than the output, contains it); forced patches are placed uniformly among the
positions that also hold their voxel, the others uniformly among all such positions.
Whatever runs over the image border is mirrored, as in the U-Net paper, by the one window reader
:func:`unetkit.data.windows.read_window` that prediction uses too (docs/design.md, "Border mirroring"). Every
random number comes from the given ``torch.Generator``, so a seed replays exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from unetkit.data.windows import read_window
from unetkit.errors import ConfigError, DataError, InputShapeError
from unetkit.shapes import ShapeContract

logger = logging.getLogger(__name__)

MAX_INDICES_PER_CLASS = 200_000  # per sample and class; more voxels are thinned evenly (memory stays bounded)
#: Streamed samples (masks read from disk, any number of them) share this many indices per class in all, so
#: the index stays a few tens of MB however large the dataset (at least ``MIN_INDICES`` per sample and class).
STREAMED_INDICES_PER_CLASS = 4_000_000
MIN_INDICES = 1_000


class SampleLike(Protocol):
    """What the sampler needs from a sample (``unetkit.data.Sample`` has it)."""

    image: Any  # (C, *S) float array-like
    mask: Any  # (*S) integer class indices
    weight: Any  # (*S) float or None


@dataclass(frozen=True)
class PatchBatch:
    """A batch of patches and where they came from.

    Shape:
        ``image (B, C, *P)`` float32, ``mask (B, *P)`` int64, ``weight (B, *P)`` float32 or None.
        ``origin[i]`` is the patch's first voxel in sample ``sample_index[i]`` (negative = mirrored border).
    """

    image: torch.Tensor
    mask: torch.Tensor
    weight: torch.Tensor | None
    sample_index: tuple[int, ...]
    origin: tuple[tuple[int, ...], ...]
    forced: tuple[bool, ...]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PatchBatch:
        """The same batch with its tensors on ``device``."""
        return dataclasses.replace(
            self,
            image=self.image.to(device, non_blocking=non_blocking),
            mask=self.mask.to(device, non_blocking=non_blocking),
            weight=None if self.weight is None else self.weight.to(device, non_blocking=non_blocking),
        )


_Cropped = TypeVar("_Cropped")


def crop_to_output(batch_or_tensor: _Cropped, output_size: Sequence[int] | None) -> _Cropped:
    """Centre-crop the mask and weight to a valid net's output size (do this after augmentation).

    Given a tensor, crops its trailing ``len(output_size)`` axes; given a :class:`PatchBatch` or an
    ``AugmentResult``, crops ``mask`` and ``weight`` and leaves the image (the network's input) as it is.
    ``output_size=None`` returns the input unchanged.

    Shape:
        ``(..., *P) -> (..., *output_size)``

    >>> crop_to_output(torch.arange(36).view(1, 6, 6), (2, 2)).tolist()
    [[[14, 15], [20, 21]]]
    """
    if output_size is None:
        return batch_or_tensor
    size = tuple(int(s) for s in output_size)
    if isinstance(batch_or_tensor, torch.Tensor):
        have = tuple(batch_or_tensor.shape[-len(size) :])
        if len(have) != len(size) or any(h < s for h, s in zip(have, size, strict=True)):
            raise InputShapeError(f"cannot crop spatial size {have} to the output size {size}: it is smaller.")
        centre: tuple[Any, ...] = (
            ...,
            *(slice((h - s) // 2, (h - s) // 2 + s) for h, s in zip(have, size, strict=True)),
        )
        return batch_or_tensor[centre]  # type: ignore[return-value]
    if dataclasses.is_dataclass(batch_or_tensor) and hasattr(batch_or_tensor, "mask"):
        mask = getattr(batch_or_tensor, "mask", None)
        weight = getattr(batch_or_tensor, "weight", None)
        return dataclasses.replace(  # type: ignore[type-var]
            batch_or_tensor,
            mask=None if mask is None else crop_to_output(mask, size),
            weight=None if weight is None else crop_to_output(weight, size),
        )
    raise TypeError(f"crop_to_output takes a tensor, PatchBatch or AugmentResult, not {type(batch_or_tensor)}")


class PatchSampler:
    """Draws batches of random patches from in-memory samples.

    Args:
        samples: objects with ``image (C, *S)``, ``mask (*S)`` class indices and ``weight (*S)`` or None.
        patch_size: the network input size per spatial axis (an int means the same on every axis).
        output_size: the network output size for valid nets (the central region foreground is placed in and
            masks are later cropped to); None means the whole patch (same-padded nets).
        foreground_fraction: share of patches forced to contain foreground in their output region.
        ignore_index: a mask value that is neither background nor foreground (never chosen as foreground).

    Shape:
        ``sample(B, generator)`` -> ``image (B, C, *P)``, ``mask (B, *P)``, ``weight (B, *P)`` or None.

    Examples:
        >>> from types import SimpleNamespace
        >>> s = SimpleNamespace(image=np.zeros((1, 20, 30), np.float32), mask=np.zeros((20, 30), np.int64),
        ...                     weight=None)
        >>> s.mask[5, 7] = 1
        >>> sampler = PatchSampler([s], 16, foreground_fraction=1.0)
        >>> batch = sampler.sample(2, torch.Generator().manual_seed(0))
        >>> tuple(batch.image.shape), int(batch.mask.sum(dim=(1, 2)).min())
        ((2, 1, 16, 16), 1)
        >>> v = SimpleNamespace(image=np.zeros((2, 8, 8, 8), np.float32), mask=np.zeros((8, 8, 8), np.int64),
        ...                     weight=np.ones((8, 8, 8), np.float32))
        >>> tuple(PatchSampler([v], (12, 12, 12), output_size=(4, 4, 4)).sample(1, torch.Generator()).weight.shape)
        (1, 12, 12, 12)
    """

    def __init__(
        self,
        samples: Sequence[SampleLike],
        patch_size: int | Sequence[int],
        *,
        output_size: int | Sequence[int] | None = None,
        foreground_fraction: float = 0.33,
        ignore_index: int | None = None,
    ) -> None:
        if len(samples) == 0:
            raise DataError("PatchSampler got no samples; give at least one image with its mask.")
        self.samples = list(samples)
        self.spatial_dims = int(np.ndim(self.samples[0].mask))
        self.patch_size = self._sizes(patch_size, "patch_size")
        self.output_size = self.patch_size if output_size is None else self._sizes(output_size, "output_size")
        if any(o > p for o, p in zip(self.output_size, self.patch_size, strict=True)):
            raise ConfigError(f"output_size {self.output_size} is larger than patch_size {self.patch_size}.")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ConfigError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}.")
        self.foreground_fraction = float(foreground_fraction)
        self.ignore_index = ignore_index
        self.in_channels = self._check_samples()
        self._foreground = self._index_foreground()
        self.foreground_classes = sorted(self._foreground)

    @classmethod
    def for_model(
        cls, samples: Sequence[SampleLike], model: Any, patch_size: int | Sequence[int], **kwargs: Any
    ) -> PatchSampler:
        """A sampler whose patch size is rounded to a legal input of ``model`` (a network or its
        :class:`~unetkit.shapes.ShapeContract`) by :meth:`ShapeContract.round` (one log line if rounded),
        and whose output region is the model's output for valid nets.

        >>> from types import SimpleNamespace
        >>> s = SimpleNamespace(image=np.zeros((1, 600, 600), np.float32), mask=np.zeros((600, 600), int),
        ...                     weight=None)
        >>> sampler = PatchSampler.for_model([s], ShapeContract.unet(2, 4, "valid"), 570)
        >>> sampler.patch_size, sampler.output_size
        ((572, 572), (388, 388))
        """
        contract: ShapeContract = model if isinstance(model, ShapeContract) else model.contract
        legal = contract.round(patch_size, "patch")
        wanted = (int(patch_size),) * len(legal) if isinstance(patch_size, int) else tuple(map(int, patch_size))
        if legal != wanted:
            logger.info("patch size %s is not legal for this network; using %s", wanted, legal)
        output = contract.output_shape(legal) if contract.padding == "valid" else None
        return cls(samples, legal, output_size=output, **kwargs)

    # ---- set-up ------------------------------------------------------------------------------------------
    def _sizes(self, value: int | Sequence[int], name: str) -> tuple[int, ...]:
        sizes = (int(value),) * self.spatial_dims if isinstance(value, int | np.integer) else tuple(map(int, value))
        if len(sizes) != self.spatial_dims or min(sizes) < 1:
            raise ConfigError(
                f"{name} {sizes} must be {self.spatial_dims} positive sizes (one per spatial axis of the masks)."
            )
        return sizes

    def _name(self, i: int) -> str:
        return str(getattr(self.samples[i], "name", f"sample {i}"))

    def _check_samples(self) -> int:
        channels = None
        for i, s in enumerate(self.samples):
            image_shape, mask_shape = tuple(s.image.shape), tuple(np.shape(s.mask))
            if len(mask_shape) != self.spatial_dims or image_shape[1:] != mask_shape:
                raise DataError(
                    f"image {image_shape} and mask {mask_shape} do not match; expected image (C, *S) and mask (*S) "
                    f"with {self.spatial_dims} spatial axes.",
                    file=self._name(i),
                )
            if s.weight is not None and tuple(np.shape(s.weight)) != mask_shape:
                raise DataError(
                    f"weight {tuple(np.shape(s.weight))} differs from mask {mask_shape}.", file=self._name(i)
                )
            if channels is not None and image_shape[0] != channels:
                raise DataError(f"{image_shape[0]} channels, the first sample has {channels}.", file=self._name(i))
            channels = image_shape[0]
        return int(channels or 0)

    def _index_foreground(self) -> dict[int, list[tuple[int, np.ndarray]]]:
        """class -> [(sample, flat voxel indices)], computed once; large sets thinned evenly."""
        index: dict[int, list[tuple[int, np.ndarray]]] = {}
        cap = MAX_INDICES_PER_CLASS
        if any(not isinstance(s.mask, np.ndarray) for s in self.samples):  # streamed from disk
            cap = min(cap, max(MIN_INDICES, STREAMED_INDICES_PER_CLASS // len(self.samples)))
        for i, s in enumerate(self.samples):
            flat = np.asarray(s.mask).ravel()  # one mask at a time (a streamed one is read whole, then dropped)
            for c in np.unique(flat).tolist():
                if c == 0 or c == self.ignore_index:
                    continue
                where = np.flatnonzero(flat == c)
                if where.size > cap:
                    where = where[:: math.ceil(where.size / cap)]
                where = where.astype(np.int32 if flat.size < 2**31 else np.int64)
                index.setdefault(int(c), []).append((i, where))
        return index

    # ---- sampling ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"PatchSampler({len(self.samples)} samples, patch_size={self.patch_size}, "
            f"output_size={self.output_size}, foreground_fraction={self.foreground_fraction})"
        )

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> PatchBatch:
        """Draw ``batch_size`` patches (torch's global generator when ``generator`` is None)."""

        def randint(high: int, low: int = 0) -> int:
            return int(torch.randint(low, high, (1,), generator=generator).item())

        margins = [(p - o) // 2 for p, o in zip(self.patch_size, self.output_size, strict=True)]
        picks: list[tuple[int, tuple[int, ...], bool]] = []
        for _ in range(batch_size):
            forced = bool(torch.rand(1, generator=generator).item() < self.foreground_fraction)
            forced = forced and bool(self._foreground)
            if forced:
                owners = self._foreground[self.foreground_classes[randint(len(self.foreground_classes))]]
                i, where = owners[randint(len(owners))]
                shape = np.shape(self.samples[i].mask)
                voxel = np.unravel_index(int(where[randint(len(where))]), shape)
                # the output region holds the voxel and, like a random patch's, stays inside the image
                out_start = [
                    randint(min(int(v), max(0, s - o)) + 1, max(int(v) - o + 1, min(0, s - o)))
                    for v, s, o in zip(voxel, shape, self.output_size, strict=True)
                ]
            else:
                i = randint(len(self.samples))
                shape = np.shape(self.samples[i].mask)
                out_start = [
                    randint(max(0, s - o) + 1, min(0, s - o)) for s, o in zip(shape, self.output_size, strict=True)
                ]
            picks.append((i, tuple(a - m for a, m in zip(out_start, margins, strict=True)), forced))
        return self._cut(picks)

    def _cut(self, picks: list[tuple[int, tuple[int, ...], bool]]) -> PatchBatch:
        def patch(array: Any, origin: tuple[int, ...]) -> torch.Tensor:
            # a window inside the image may be a (read-only) view of the sample: own a copy
            return torch.from_numpy(
                np.require(read_window(array, origin, self.patch_size), requirements=("C", "W", "O"))
            )

        images, masks, weights = [], [], []
        for i, origin, _ in picks:
            s = self.samples[i]
            images.append(patch(s.image, origin))
            masks.append(patch(s.mask, origin))
            if s.weight is not None:
                weights.append(patch(s.weight, origin))
        if weights and len(weights) != len(picks):
            raise DataError("some samples have a weight map and others do not; give every sample a weight map or none.")
        return PatchBatch(
            image=torch.stack(images).float(),
            mask=torch.stack(masks).long(),
            weight=torch.stack(weights).float() if weights else None,
            sample_index=tuple(p[0] for p in picks),
            origin=tuple(p[1] for p in picks),
            forced=tuple(p[2] for p in picks),
        )
