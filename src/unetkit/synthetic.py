"""Synthetic microscopy: textured touching cells with thin gaps, uneven illumination and noise.

The built-in default for ``unetkit demo`` and for tests: a problem like the U-Net paper's cell
segmentation (touching objects that a plain loss merges), generated from a seed, in 2D or 3D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class SyntheticImage:
    """One generated image: ``image`` uint8 ``(*S)``, ``mask`` uint8 ``(*S)`` (0 background, 1 cell),
    ``instances`` int32 ``(*S)`` (0 background, 1..N cells)."""

    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / (field.std() + 1e-8)


def synthetic_cells(
    shape: tuple[int, ...] = (256, 256),
    *,
    seed: int = 0,
    cell_radius: float = 14.0,
    density: float = 0.75,
    noise: float = 0.08,
) -> SyntheticImage:
    """Generate touching cells separated by 1-2 pixel gaps.

    Args:
        shape: spatial size, 2 or 3 axes.
        seed: random seed; the same seed gives the same image.
        cell_radius: mean cell radius in pixels.
        density: fraction of the area covered by cell seeds' Voronoi regions that cells fill.
        noise: standard deviation of the additive Gaussian noise (intensities in [0, 1]).

    Returns:
        A :class:`SyntheticImage`.

    Shape:
        ``shape (*S)`` -> arrays ``(*S)``

    Examples:
        >>> s = synthetic_cells((64, 64), seed=1)
        >>> s.image.shape, s.image.dtype.name, int(s.mask.max())
        ((64, 64), 'uint8', 1)
        >>> synthetic_cells((24, 32, 32), seed=1, cell_radius=6).instances.ndim
        3
    """
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    volume = float(np.prod(shape))
    cell_volume = (np.pi * cell_radius**2) if ndim == 2 else (4 / 3 * np.pi * cell_radius**3)
    n_cells = max(2, int(volume / cell_volume * 1.1))
    seeds = np.stack([rng.integers(0, n, n_cells) for n in shape], axis=1)
    marker = np.ones(shape, dtype=bool)
    marker[tuple(seeds.T)] = False
    dist, idx = ndimage.distance_transform_edt(marker, return_indices=True)
    seed_id = np.zeros(shape, dtype=np.int32)
    seed_id[tuple(seeds.T)] = np.arange(1, n_cells + 1)
    voronoi = seed_id[tuple(idx)]

    # Each cell fills its Voronoi region up to a wobbly radius; some regions stay empty (background).
    radii = cell_radius * rng.uniform(0.8, 1.4, n_cells + 1)
    wobble = 1 + 0.15 * _smooth_noise(rng, shape, cell_radius / 2)
    alive = rng.random(n_cells + 1) < density
    alive[0] = False
    inside = (dist < radii[voronoi] * wobble) & alive[voronoi]
    # Thin gaps where two cells meet: a pixel whose neighbour belongs to another region is background.
    footprint = ndimage.generate_binary_structure(ndim, 1)
    edge = ndimage.grey_dilation(voronoi, footprint=footprint) != ndimage.grey_erosion(voronoi, footprint=footprint)
    instances = np.where(inside & ~edge, voronoi, 0).astype(np.int32)
    # Drop fragments and renumber 1..N.
    instances = ndimage.binary_opening(instances > 0, footprint) * instances
    ids = np.unique(instances)
    ids = ids[ids > 0]
    lut = np.zeros(n_cells + 1, dtype=np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    instances = lut[instances]
    mask = (instances > 0).astype(np.uint8)

    # Appearance: dim background, textured cells, bright halo at the cell borders, uneven illumination.
    texture = 0.06 * _smooth_noise(rng, shape, 1.5)
    brightness = rng.uniform(0.45, 0.7, len(ids) + 1)[instances]
    img = np.where(mask > 0, brightness + texture, 0.25 + 0.3 * texture)
    border = ndimage.binary_dilation(mask, footprint, iterations=2) & ~ndimage.binary_erosion(mask, footprint)
    img = img + 0.25 * border
    grad = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    direction = rng.normal(size=ndim)
    illumination = 1 + 0.25 * sum(d * g for d, g in zip(direction / np.linalg.norm(direction), grad, strict=True))
    img = ndimage.gaussian_filter(img * illumination, 0.8) + noise * rng.standard_normal(shape)
    image = np.clip(img * 255, 0, 255).astype(np.uint8)
    return SyntheticImage(image=image, mask=mask, instances=instances)


def write_dataset(root: str, n: int = 8, shape: tuple[int, ...] = (256, 256), seed: int = 0) -> None:
    """Write ``n`` synthetic images as ``root/images/cell_XX.tif`` and class masks as ``root/masks/``.

    The instance labels go to ``root/instances/`` (uint16 TIFF).
    """
    from pathlib import Path

    import tifffile

    base = Path(root)
    for sub in ("images", "masks", "instances"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = synthetic_cells(shape, seed=seed * 1000 + i)
        tifffile.imwrite(base / "images" / f"cell_{i:02d}.tif", s.image)
        tifffile.imwrite(base / "masks" / f"cell_{i:02d}.tif", s.mask)
        tifffile.imwrite(base / "instances" / f"cell_{i:02d}.tif", s.instances.astype(np.uint16))


# ---- restoration: clean textures degraded by Poisson-Gaussian noise (and blur) ---------------------------------
def degrade(
    clean: np.ndarray,
    rng: np.random.Generator,
    *,
    photons: float = 20.0,
    read_noise: float = 0.05,
    blur: float = 0.0,
) -> np.ndarray:
    """Poisson-Gaussian degradation of a ``[0, 1]`` image: optional Gaussian blur (sigma ``blur`` pixels),
    shot noise at ``photons`` per unit intensity, Gaussian read noise of std ``read_noise``. Float32 out."""
    x = ndimage.gaussian_filter(clean.astype(np.float64), blur) if blur > 0 else clean.astype(np.float64)
    noisy = rng.poisson(np.clip(x, 0, None) * photons) / photons + rng.normal(0.0, read_noise, x.shape)
    return noisy.astype(np.float32)


def synthetic_texture(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A clean ``[0, 1]`` float32 texture: the cells of :func:`synthetic_cells` with smooth structure inside.

    Shape:
        ``(*S)``
    """
    rng = np.random.default_rng(seed)
    cells = synthetic_cells(shape, seed=seed, noise=0.0, cell_radius=max(4.0, min(shape) / 8))
    base = cells.image.astype(np.float32) / 255.0
    fine = 0.15 * _smooth_noise(rng, shape, 1.5)
    return np.clip(0.15 + 0.7 * base + fine, 0.0, 1.0).astype(np.float32)


def write_restore_dataset(
    root: str,
    n: int = 6,
    shape: tuple[int, ...] = (96, 96),
    seed: int = 0,
    *,
    photons: float = 20.0,
    read_noise: float = 0.05,
    blur: float = 0.0,
) -> None:
    """A restoration dataset: ``inputs/NN.tif`` (degraded) + ``targets/NN.tif`` (clean), float32 TIFF."""
    from pathlib import Path

    from unetkit.data.io import write_image

    rng = np.random.default_rng(seed + 1)
    for i in range(n):
        clean = synthetic_texture(shape, seed=seed * 1000 + i)
        noisy = degrade(clean, rng, photons=photons, read_noise=read_noise, blur=blur)
        write_image(Path(root) / "inputs" / f"{i:02d}.tif", noisy, spatial_dims=len(shape))
        write_image(Path(root) / "targets" / f"{i:02d}.tif", clean, spatial_dims=len(shape))
