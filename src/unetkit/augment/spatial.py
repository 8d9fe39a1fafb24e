"""Spatial augmentation: flips, quarter turns, rotation, zoom and elastic deformation in ONE resampling.

Every spatial transform of a sample is a map from an output pixel ``p`` to the input position it reads,
``x = M (p + d(p))``, with ``p`` in pixels relative to the image centre, ``M = Flip @ Rot90 @ Rot @ Zoom^-1``
and ``d`` the elastic displacement field. ``M`` gives the affine grid (:func:`affine_grid`) and ``M d`` is
computed on the coarse control grid, so the dense field is interpolated once and added to the affine
grid; a single ``F.grid_sample`` (mirrored borders, see :func:`resample`) then resamples the image, the
mask and the weight map. The same code serves 2D and 3D: matrices are ``spatial_dims x spatial_dims``.

Samples whose transform is only flips and quarter turns (in a square plane) skip ``grid_sample`` and use
``torch.flip`` / ``torch.rot90``, which are exact and map pixel centres onto pixel centres just like the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from unetkit.augment.config import AugmentConfig

# cos/sin of k quarter turns, exact; the sign makes k = 1 match torch.rot90(x, 1, dims=(a, b)).
_QUARTER = ((1.0, 0.0), (0.0, -1.0), (-1.0, 0.0), (0.0, 1.0))
_CUBIC_A = -0.75  # PyTorch's bicubic kernel constant, so 2D matches F.interpolate(mode="bicubic").


@dataclass(frozen=True)
class SpatialParams:
    """Per-sample spatial parameters; neutral values (no flip, k=0, angle 0, zoom 1, zero field) mean "off".

    Shape:
        ``flips (B, n)`` bool, ``k (B,)`` int64, ``angles (B, A)`` radians (A = 1 in 2D, 3 in 3D),
        ``zoom (B, n)``, ``displacement (B, n, g, ..., g)`` pixels on the control grid (axis order).
    """

    flips: torch.Tensor
    k: torch.Tensor
    plane: tuple[int, int]
    angles: torch.Tensor
    zoom: torch.Tensor
    displacement: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.k.shape[0])

    def to(self, device: torch.device | str) -> SpatialParams:
        """The same parameters on ``device``."""
        return replace(
            self,
            flips=self.flips.to(device),
            k=self.k.to(device),
            angles=self.angles.to(device),
            zoom=self.zoom.to(device),
            displacement=self.displacement.to(device),
        )

    def select(self, index: torch.Tensor) -> SpatialParams:
        """The parameters of the samples in ``index``."""
        return replace(
            self,
            flips=self.flips[index],
            k=self.k[index],
            angles=self.angles[index],
            zoom=self.zoom[index],
            displacement=self.displacement[index],
        )

    def needs_resampling(self, spatial_shape: tuple[int, ...]) -> torch.Tensor:
        """``(B,)`` bool: True where the transform is more than flips and quarter turns of a square plane."""
        a, b = self.plane
        square = spatial_shape[a] == spatial_shape[b]
        off_grid = (self.angles != 0).any(1) | (self.zoom != 1).any(1) | (self.displacement != 0).flatten(1).any(1)
        return off_grid if square else off_grid | (self.k != 0)


def rotation_planes(spatial_dims: int) -> list[tuple[int, int]]:
    """The planes the rotation angles act in: one in 2D, about z, y and x in 3D.

    >>> rotation_planes(2), rotation_planes(3)
    ([(0, 1)], [(1, 2), (0, 2), (0, 1)])
    """
    if spatial_dims == 2:
        return [(0, 1)]
    return [(1, 2), (0, 2), (0, 1)]


def sample_spatial(
    config: AugmentConfig, spatial_dims: int, batch_size: int, generator: torch.Generator | None
) -> SpatialParams:
    """Draw spatial parameters for a batch; every random number is drawn always, in a fixed order.

    Drawing everything (and neutralising what a sample does not get) keeps the stream of random numbers
    independent of which transforms fire, so a seed replays exactly.
    """
    n, b = spatial_dims, batch_size
    dev = generator.device if generator is not None else torch.device("cpu")

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=dev, dtype=torch.float64)

    def chosen(p: float) -> torch.Tensor:
        return uniform(b) < p

    flips = uniform(b, n) < config.flip.p
    k = torch.randint(1, 4, (b,), generator=generator, device=dev)
    k = torch.where(chosen(config.rot90.p), k, torch.zeros_like(k))

    lo, hi = config.rotate.range_for(n)
    angles = torch.deg2rad(lo + (hi - lo) * uniform(b, len(rotation_planes(n))))
    angles = torch.where(chosen(config.rotate.p)[:, None], angles, torch.zeros_like(angles))
    if n == 3 and config.rotate.axis is not None:  # plane j of rotation_planes(3) turns about axis j
        keep = torch.zeros(3, dtype=torch.bool, device=dev)
        keep[config.rotate.axis] = True
        angles = torch.where(keep, angles, torch.zeros_like(angles))

    zlo, zhi = math.log(config.scale.range[0]), math.log(config.scale.range[1])
    zoom = torch.exp(zlo + (zhi - zlo) * uniform(b, n))
    if not config.scale.per_axis:
        zoom = zoom[:, :1].expand(b, n).clone()
    zoom = torch.where(chosen(config.scale.p)[:, None], zoom, torch.ones_like(zoom))

    g = config.elastic.grid
    disp = torch.randn((b, n, *([g] * n)), generator=generator, device=dev, dtype=torch.float64)
    disp = disp * config.elastic.sigma * chosen(config.elastic.p).view(b, *([1] * (n + 1)))

    plane = tuple(a % n for a in config.rot90.axes)
    return SpatialParams(
        flips=flips,
        k=k,
        plane=(plane[0], plane[1]),
        angles=angles.float(),
        zoom=zoom.float(),
        displacement=disp.float(),
    )


def _plane_rotation(cos: torch.Tensor, sin: torch.Tensor, plane: tuple[int, int], n: int) -> torch.Tensor:
    """``(B, n, n)`` rotation in ``plane``: ``R[i,i]=R[j,j]=cos, R[i,j]=-sin, R[j,i]=sin``."""
    i, j = plane
    r = torch.eye(n, dtype=cos.dtype, device=cos.device).repeat(cos.shape[0], 1, 1)
    r[:, i, i], r[:, j, j], r[:, i, j], r[:, j, i] = cos, cos, -sin, sin
    return r


def spatial_matrix(params: SpatialParams) -> torch.Tensor:
    """``M = Flip @ Rot90 @ Rot @ Zoom^-1`` per sample, in pixel units and tensor-axis order.

    Shape:
        ``(B, n, n)``; output pixel ``p`` (centred) reads input position ``M p``.

    >>> p = sample_spatial(AugmentConfig.none(), 2, 1, torch.Generator().manual_seed(0))
    >>> spatial_matrix(p)[0].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    n = params.flips.shape[1]
    dev = params.zoom.device
    m = torch.diag_embed(1.0 - 2.0 * params.flips.float())
    quarter = torch.tensor(_QUARTER, dtype=torch.float32, device=dev)[params.k]
    m = m @ _plane_rotation(quarter[:, 0], quarter[:, 1], params.plane, n)
    for a, plane in enumerate(rotation_planes(n)):
        angle = params.angles[:, a]
        m = m @ _plane_rotation(torch.cos(angle), torch.sin(angle), plane, n)
    return m @ torch.diag_embed(1.0 / params.zoom)


def cubic_weights(coarse: int, size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Matrix ``W (size, coarse)`` of cubic-convolution weights, ``align_corners=True`` (control points span
    the whole axis, corners included), border indices clamped: exactly what ``F.interpolate(mode="bicubic")``
    does along one axis.

    >>> cubic_weights(3, 5).sum(1).tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    scale = (coarse - 1) / (size - 1) if size > 1 else 0.0
    src = torch.arange(size, dtype=torch.float64) * scale
    i0 = torch.floor(src)
    t = src - i0
    a = _CUBIC_A
    taps = (
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
        ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
    )
    w = torch.zeros(size, coarse, dtype=torch.float64)
    rows = torch.arange(size)
    for offset, weight in zip((-1, 0, 1, 2), taps, strict=True):
        cols = (i0.long() + offset).clamp(0, coarse - 1)
        w.index_put_((rows, cols), weight, accumulate=True)
    return w.to(device=device, dtype=torch.float32)


def upsample_cubic(field: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Separable cubic interpolation of a channels-last control grid to ``size`` (any number of dims).

    Shape:
        ``(B, *g, c) -> (B, *size, c)``
    """
    n = len(size)
    for axis in range(n):
        w = cubic_weights(field.shape[1 + axis], size[axis], field.device).to(field.dtype)
        field = (field.movedim(1 + axis, -1) @ w.T).movedim(-1, 1 + axis)
    return field


def _pixel_to_normalised(spatial_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``diag(2 / S)``: centred pixel offsets to ``grid_sample``'s normalised units (``align_corners=False``)."""
    return torch.diag(2.0 / torch.tensor(spatial_shape, dtype=torch.float32, device=device))


def affine_grid(theta: torch.Tensor, spatial_shape: tuple[int, ...]) -> torch.Tensor:
    """``F.affine_grid(..., align_corners=False)`` for a linear map given in tensor-axis order.

    Built as a sum of one broadcast term per axis, which is 2-3x faster on CPU than ``F.affine_grid``'s
    batched matrix product over every pixel, and equal to it up to float rounding.

    Shape:
        ``theta (B, n, n)`` -> ``(B, *S, n)``, the last axis in ``grid_sample``'s (x, y[, z]) order.
    """
    b, n = theta.shape[0], len(spatial_shape)
    rows = theta.flip(1)  # output components in grid order
    grid = torch.zeros((), dtype=theta.dtype, device=theta.device)
    for axis, size in enumerate(spatial_shape):
        centres = (2 * torch.arange(size, dtype=theta.dtype, device=theta.device) + 1) / size - 1
        view = [1] * n
        view[axis] = size
        grid = grid + rows[:, :, axis].reshape(b, *[1] * n, n) * centres.view(1, *view, 1)
    return grid


def sampling_grid(params: SpatialParams, spatial_shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The ``grid_sample`` grid of all spatial transforms together.

    Shape:
        ``(B, *S, n)`` with the last axis in ``grid_sample``'s (x, y[, z]) order.

    >>> p = sample_spatial(AugmentConfig(), 2, 3, torch.Generator().manual_seed(0))
    >>> tuple(sampling_grid(p, (16, 24), torch.float32).shape)
    (3, 16, 24, 2)
    """
    dev = params.zoom.device
    to_norm = _pixel_to_normalised(spatial_shape, dev)
    dm = to_norm @ spatial_matrix(params)  # pixels -> normalised input position
    grid = affine_grid((dm @ torch.linalg.inv(to_norm)).to(dtype), spatial_shape)
    if bool((params.displacement != 0).any()):
        coarse = torch.einsum("bij,bj...->bi...", dm, params.displacement).flip(1)
        grid = grid + upsample_cubic(coarse.movedim(1, -1).to(dtype), spatial_shape)
    return grid


def displacement_field(params: SpatialParams, spatial_shape: tuple[int, ...]) -> torch.Tensor:
    """The dense elastic displacement in pixels, before the affine part (for inspection and tests).

    Shape:
        ``(B, n, *S)`` in tensor-axis order.

    >>> cfg = AugmentConfig.model_validate({"elastic": {"p": 1.0}})
    >>> p = sample_spatial(cfg, 3, 2, torch.Generator().manual_seed(0))
    >>> tuple(displacement_field(p, (9, 9, 9)).shape)
    (2, 3, 9, 9, 9)
    """
    return upsample_cubic(params.displacement.movedim(1, -1), spatial_shape).movedim(-1, 1)


def resample(x: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """``grid_sample`` of a grid in ``align_corners=False`` units, mirrored at the border pixels' centres.

    Positions outside the image read its mirror image without repeating the edge pixel (numpy's
    ``reflect``, :func:`unetkit.data.windows.fold_index`), the one border rule of training patches and
    prediction tiles (docs/design.md). ``grid_sample``'s ``"reflection"`` mirrors about the pixel *edges*
    (edge repeated) with ``align_corners=False`` and about the border pixels' *centres* with
    ``align_corners=True``, so the grid is rescaled to ``align_corners=True`` units (``g * S / (S - 1)``
    per axis; the same pixel positions) and sampled that way. Bicubic taps beyond the border are mirrored
    by the same rule.

    Shape:
        ``(B, C, *S), (B, *S, n) -> (B, C, *S)``
    """
    if mode == "bicubic" and x.dim() != 4:
        mode = "bilinear"  # grid_sample has no tricubic; the Augmenter rejects this combination up front
    sizes = torch.tensor(tuple(reversed(x.shape[2:])), dtype=torch.float64)  # grid order: x, y[, z]
    scale = torch.where(sizes > 1, sizes / (sizes - 1).clamp(min=1), torch.zeros_like(sizes))
    corners = grid.to(x.dtype) * scale.to(device=grid.device, dtype=x.dtype)
    return F.grid_sample(x, corners, mode=mode, padding_mode="reflection", align_corners=True)


def resample_labels(mask: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """Resample an integer label map: ``"nearest"``, or ``"label_linear"`` (one-hot, linear, argmax).

    ``label_linear`` works on the labels present (``torch.unique``), so an ignore value such as 255 costs one
    channel, not 256.

    Shape:
        ``(B, *S) -> (B, *S)``, same dtype.
    """
    if mode == "nearest":
        out = resample(mask.unsqueeze(1).to(grid.dtype), grid, "nearest").squeeze(1)
        return out.round().to(mask.dtype)
    values, inverse = torch.unique(mask, return_inverse=True)
    onehot = F.one_hot(inverse, len(values)).movedim(-1, 1).to(grid.dtype)
    return values[resample(onehot, grid, "bilinear").argmax(1)]


def flip_rot90(x: torch.Tensor, flips: torch.Tensor, k: int, plane: tuple[int, int]) -> torch.Tensor:
    """The exact (index-only) equivalent of the grid for flips and quarter turns, for one sample.

    Shape:
        ``(..., *S) -> (..., *S)`` (leading channel axes allowed).
    """
    n = flips.shape[0]
    lead = x.dim() - n
    dims = [lead + a for a in range(n) if bool(flips[a])]
    if dims:
        x = torch.flip(x, dims)
    if k:
        x = torch.rot90(x, k, dims=(lead + plane[0], lead + plane[1]))
    return x
