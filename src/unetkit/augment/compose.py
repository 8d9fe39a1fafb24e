"""The :class:`Augmenter`: draw parameters once, apply them to image, mask and weight map together."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from unetkit.augment.config import AugmentConfig
from unetkit.augment.intensity import IntensityParams, apply_intensity, sample_intensity
from unetkit.augment.spatial import (
    SpatialParams,
    flip_rot90,
    resample,
    resample_labels,
    sample_spatial,
    sampling_grid,
)
from unetkit.errors import ConfigError, InputShapeError


@dataclass(frozen=True)
class AugmentParams:
    """Everything random about one augmented batch; ``Augmenter.apply`` with these replays it exactly."""

    spatial: SpatialParams
    intensity: IntensityParams
    spatial_shape: tuple[int, ...]

    @property
    def batch_size(self) -> int:
        return self.spatial.batch_size

    def to(self, device: torch.device | str) -> AugmentParams:
        """The same parameters on ``device``."""
        return replace(self, spatial=self.spatial.to(device), intensity=self.intensity.to(device))


@dataclass(frozen=True)
class AugmentResult:
    """An augmented batch.

    Shape:
        ``image (B, C, *S)``, ``mask (B, *S)`` or None, ``weight (B, *S)`` or None.
    """

    image: torch.Tensor
    mask: torch.Tensor | None = None
    weight: torch.Tensor | None = None


class Augmenter:
    """Random spatial and intensity augmentation of a batch, on the tensors' device, for 2D and 3D.

    All spatial transforms of a sample become one sampling grid and the whole batch is resampled with one
    ``grid_sample`` per tensor (image: ``config.interpolation``; mask: ``config.mask_interpolation``; weight:
    bilinear); borders are mirrored. Samples that only got flips / quarter turns take an exact index-only
    path instead (``fast_path=False`` sends them through the grid too). Intensity transforms touch only the
    image. Parameters come from ``generator``, so the same seed gives identical tensors.

    Args:
        config: what to apply and how strongly; ``None`` means the defaults.
        spatial_dims: 2 or 3.
        fast_path: use ``torch.flip``/``torch.rot90`` for samples that need no interpolation.

    Shape:
        ``image (B, C, *S)``, ``mask (B, *S)``, ``weight (B, *S)`` -> the same shapes.

    Examples:
        >>> aug = Augmenter(AugmentConfig(), spatial_dims=2)
        >>> out = aug(torch.rand(2, 1, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long),
        ...           generator=torch.Generator().manual_seed(0))
        >>> tuple(out.image.shape), tuple(out.mask.shape), out.weight
        ((2, 1, 32, 32), (2, 32, 32), None)
        >>> out3 = Augmenter(AugmentConfig(), spatial_dims=3)(torch.rand(1, 2, 8, 16, 16))
        >>> tuple(out3.image.shape)
        (1, 2, 8, 16, 16)
    """

    def __init__(self, config: AugmentConfig | None = None, spatial_dims: int = 2, *, fast_path: bool = True) -> None:
        config = config if config is not None else AugmentConfig()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if spatial_dims == 3 and config.interpolation == "bicubic":
            raise ConfigError(
                "augment.interpolation: 'bicubic' exists only in 2D (grid_sample has no tricubic mode); "
                "use 'bilinear' for 3D data."
            )
        for axis in config.rot90.axes:
            if not -spatial_dims <= axis < spatial_dims:
                raise ConfigError(
                    f"augment.rot90.axes: axis {axis} does not exist in {spatial_dims}D data; "
                    f"use spatial axes in [{-spatial_dims}, {spatial_dims - 1}]."
                )
        if len({a % spatial_dims for a in config.rot90.axes}) != 2:
            raise ConfigError(f"augment.rot90.axes: {config.rot90.axes} name the same axis twice.")
        self.config = config
        self.spatial_dims = spatial_dims
        self.fast_path = fast_path

    def __repr__(self) -> str:
        return f"Augmenter(spatial_dims={self.spatial_dims}, config={self.config!r})"

    def sample_params(
        self, batch_size: int, spatial_shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None
    ) -> AugmentParams:
        """Draw the parameters of one batch from ``generator`` (torch's global generator when None)."""
        shape = tuple(int(s) for s in spatial_shape)
        if len(shape) != self.spatial_dims:
            raise InputShapeError(f"spatial_shape {shape} has {len(shape)} axes; expected {self.spatial_dims}.")
        return AugmentParams(
            spatial=sample_spatial(self.config, self.spatial_dims, batch_size, generator),
            intensity=sample_intensity(self.config, batch_size, generator),
            spatial_shape=shape,
        )

    def __call__(
        self,
        image: torch.Tensor,
        mask: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> AugmentResult:
        """Augment a batch; equal to ``apply(sample_params(B, S, generator), image, mask, weight)``."""
        self._check(image, mask, weight)
        params = self.sample_params(image.shape[0], image.shape[2:], generator)
        return self.apply(params, image, mask, weight)

    def apply(
        self,
        params: AugmentParams,
        image: torch.Tensor,
        mask: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> AugmentResult:
        """Apply given parameters (replay). Inputs are not modified."""
        self._check(image, mask, weight)
        spatial_shape = tuple(image.shape[2:])
        if params.batch_size != image.shape[0] or params.spatial_shape != spatial_shape:
            raise InputShapeError(
                f"parameters were drawn for batch {params.batch_size} of {params.spatial_shape}, "
                f"the image is {tuple(image.shape)}; draw them with sample_params(B, S) for this batch."
            )
        if not image.is_floating_point():
            image = image.float()
        params = params.to(image.device)
        image, mask, weight = self._spatial(params.spatial, spatial_shape, image, mask, weight)
        image = apply_intensity(params.intensity, image)
        return AugmentResult(image=image, mask=mask, weight=weight)

    def _spatial(
        self,
        params: SpatialParams,
        spatial_shape: tuple[int, ...],
        image: torch.Tensor,
        mask: torch.Tensor | None,
        weight: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        resampled = params.needs_resampling(spatial_shape).tolist() if self.fast_path else [True] * params.batch_size
        grid_rows = [i for i, r in enumerate(resampled) if r]
        index_rows = [i for i, r in enumerate(resampled) if not r]
        grid = (
            sampling_grid(
                params.select(torch.tensor(grid_rows, dtype=torch.long, device=image.device)),
                spatial_shape,
                image.dtype,
            )
            if grid_rows
            else None
        )

        def transform(kind: str, x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            if grid is not None and not index_rows:
                return self._warp(kind, x, grid)
            out = torch.empty_like(x)
            if grid is not None:
                out[grid_rows] = self._warp(kind, x[grid_rows], grid)
            for i in index_rows:
                out[i] = flip_rot90(x[i], params.flips[i], int(params.k[i]), params.plane)
            return out

        warped = transform("image", image)
        assert warped is not None  # image is never None
        return warped, transform("mask", mask), transform("weight", weight)

    def _warp(self, kind: str, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        if kind == "image":
            return resample(x, grid, self.config.interpolation)
        if kind == "mask":
            return resample_labels(x, grid, self.config.mask_interpolation)
        return resample(x.unsqueeze(1), grid, "bilinear").squeeze(1)

    def _check(self, image: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor | None) -> None:
        n = self.spatial_dims
        if image.dim() != n + 2:
            raise InputShapeError(
                f"image has shape {tuple(image.shape)}; a {n}D augmenter expects (B, C, *spatial) with "
                f"{n} spatial axes. Add the batch/channel axes (image[None]) or use spatial_dims={image.dim() - 2}."
            )
        expected = (image.shape[0], *image.shape[2:])
        for name, x in (("mask", mask), ("weight", weight)):
            if x is not None and tuple(x.shape) != expected:
                raise InputShapeError(
                    f"{name} has shape {tuple(x.shape)}; expected (B, *spatial) = {expected} to match the image."
                )
