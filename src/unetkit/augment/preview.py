"""A picture of what training sees: random patches before and after augmentation, with their masks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from unetkit.augment.compose import Augmenter
from unetkit.augment.config import AugmentConfig
from unetkit.classes import palette
from unetkit.data.sampling import PatchSampler, SampleLike
from unetkit.utils import atomic_path

DEFAULT_PATCH = {2: 256, 3: 64}


def default_patch_size(samples: Sequence[SampleLike], spatial_dims: int) -> tuple[int, ...]:
    """The smallest image size per axis, capped at 256 (2D) or 64 (3D)."""
    smallest = np.min([np.shape(s.mask) for s in samples], axis=0)
    return tuple(int(min(n, DEFAULT_PATCH[spatial_dims])) for n in smallest)


def _display(image: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> grey ``(H, W)`` or RGB ``(H, W, 3)`` in [0, 1], with the original patch's window."""
    scaled = np.clip((image - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
    return np.moveaxis(scaled[:3], 0, -1) if image.shape[0] == 3 else scaled[0]


def _overlay(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """RGBA ``(H, W, 4)``: class colours at 45 % opacity, background transparent."""
    rgba = np.zeros((*mask.shape, 4), np.float32)
    fg = mask > 0
    rgba[fg, :3] = colours[np.clip(mask[fg], 0, len(colours) - 1)] / 255.0
    rgba[fg, 3] = 0.45
    return rgba


def render_preview(
    samples: Sequence[SampleLike],
    out: str | os.PathLike[str],
    *,
    config: AugmentConfig | None = None,
    n: int = 8,
    seed: int = 0,
    patch_size: int | Sequence[int] | None = None,
    class_colours: Sequence[Sequence[int]] | None = None,
    foreground_fraction: float = 0.5,
) -> Path:
    """Write a PNG grid: per row one random patch, its augmented version, and that with the mask overlaid.

    The augmented image is shown with the original patch's intensity window, so brightness, contrast and
    gamma changes are visible. 3D patches show their middle slice (axis 0).

    Args:
        samples: objects with ``image (C, *S)``, ``mask (*S)``, ``weight`` (e.g. ``load_dataset(...).samples``).
        out: the PNG to write (atomically).
        config: the augmentation to show; None means the defaults.
        n: number of patches (rows).
        seed: seeds patch sampling and augmentation.
        patch_size: patch size; None means the smallest image size capped at 256 (2D) / 64 (3D).
        class_colours: RGB per class; None means :func:`unetkit.classes.palette`.
        foreground_fraction: share of patches centred on foreground.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    spatial_dims = int(np.ndim(samples[0].mask)) if samples else 2
    size = patch_size if patch_size is not None else default_patch_size(samples, spatial_dims)
    sampler = PatchSampler(samples, size, foreground_fraction=foreground_fraction)
    generator = torch.Generator().manual_seed(seed)
    batch = sampler.sample(n, generator)
    result = Augmenter(config, spatial_dims)(batch.image, batch.mask, generator=generator)
    masks = result.mask if result.mask is not None else batch.mask

    top = int(max(batch.mask.max().item(), masks.max().item()))
    colours = np.asarray(class_colours if class_colours else palette(max(top + 1, 2)), dtype=np.float32)
    mid = (slice(None),) * 2 + ((sampler.patch_size[0] // 2,) if spatial_dims == 3 else ())

    fig = Figure(figsize=(3 * 2.4, n * 2.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 3, squeeze=False)
    for title, ax in zip(("patch + mask", "augmented", "augmented + mask"), axes[0], strict=True):
        ax.set_title(title, fontsize=9)
    for row in range(n):
        image = batch.image[mid][row].numpy()
        lo = np.percentile(image, 1, axis=(1, 2), keepdims=True)
        hi = np.percentile(image, 99, axis=(1, 2), keepdims=True)
        augmented = _display(result.image[mid][row].numpy(), lo, hi)
        panels = (
            (_display(image, lo, hi), batch.mask[mid[1:]][row].numpy()),
            (augmented, None),
            (augmented, masks[mid[1:]][row].numpy()),
        )
        for ax, (picture, mask) in zip(axes[row], panels, strict=True):
            ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if mask is not None:
                ax.imshow(_overlay(mask, colours), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        name = getattr(samples[batch.sample_index[row]], "name", str(batch.sample_index[row]))
        axes[row][0].set_ylabel(str(name)[:24], fontsize=8)
    fig.tight_layout()
    path = Path(out)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
