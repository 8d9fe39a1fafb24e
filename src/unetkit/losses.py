"""Segmentation losses for any ``spatial_dims``: logits ``(B, K, *S)`` against class indices ``(B, *S)``.

:data:`LOSS_TABLE` is the one place that says, per loss name, what the loss is, whether it takes a per-pixel
``weight`` ``(B, *S)`` (the paper's weight map) and whether the weight map is on by default; the
:class:`SegmentationLoss` docstring, the config's ``train.loss`` and ``data.weight_map.enabled`` descriptions,
docs/training.md's table (tested) and the training run's weight-map decision (:func:`use_weight_map`) all come
from it. Every loss takes an ``ignore_index`` whose pixels contribute nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.errors import ConfigError

LossName = Literal["ce", "weighted_ce", "bce", "dice", "dice_ce", "focal"]
"""The names ``train.loss`` accepts: the keys of :data:`LOSS_TABLE` (a test keeps the two equal)."""


def _valid_mask(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    return torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index


def _weighted_mean(per_pixel: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    w = valid.to(per_pixel.dtype)
    if weight is not None:
        w = w * weight.to(per_pixel.dtype)
    # The mean over valid pixels (not over their weights), as Caffe's weighted softmax loss in the paper.
    return (per_pixel * w).sum() / valid.sum().clamp_min(1)


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy, optionally weighted per pixel (the paper's energy function).

    Shape:
        ``logits (B, K, *S)``, ``target (B, *S)`` int64, ``weight (B, *S)`` -> scalar.

    >>> logits = torch.zeros(1, 2, 4, 4); target = torch.zeros(1, 4, 4, dtype=torch.long)
    >>> round(cross_entropy(logits, target).item(), 4)  # log(2)
    0.6931
    """
    valid = _valid_mask(target, ignore_index)
    safe = torch.where(valid, target, torch.zeros_like(target))
    per_pixel = F.cross_entropy(logits.float(), safe, weight=class_weights, reduction="none")
    return _weighted_mean(per_pixel, valid, weight)


def binary_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Sigmoid BCE. ``target (B, *S)`` class indices become one-hot over the ``K`` channels; with ``K == 1``
    the single channel is the foreground (``target > 0``). Multi-label targets ``(B, K, *S)`` in {0, 1} are
    used as they are.

    Shape:
        ``logits (B, K, *S)`` -> scalar.
    """
    if target.shape == logits.shape:
        onehot = target.float()
        valid = torch.ones(target.shape[:1] + target.shape[2:], dtype=torch.bool, device=target.device)
    else:
        valid = _valid_mask(target, ignore_index)
        safe = torch.where(valid, target, torch.zeros_like(target))
        onehot = (safe > 0).float().unsqueeze(1) if logits.shape[1] == 1 else _one_hot(safe, logits.shape[1])
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), onehot, reduction="none").mean(1)
    return _weighted_mean(per_pixel, valid, weight)


def _one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(target, num_classes).movedim(-1, 1).float()


def soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int | None = None,
    include_background: bool = False,
    smooth: float = 1e-5,
    batch_dice: bool = True,
) -> torch.Tensor:
    """``1 - mean soft Dice`` over classes from softmax probabilities.

    ``batch_dice`` pools the whole batch per class (nnU-Net's choice for patch training: stable when a patch
    lacks a class). Background is left out by default when there are several classes.

    Shape:
        ``logits (B, K, *S)``, ``target (B, *S)`` -> scalar.
    """
    valid = _valid_mask(target, ignore_index).unsqueeze(1).float()
    safe = torch.where(valid[:, 0].bool(), target, torch.zeros_like(target))
    probs = logits.float().softmax(1) * valid
    onehot = _one_hot(safe, logits.shape[1]) * valid
    dims = (0, *range(2, logits.ndim)) if batch_dice else tuple(range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    if not include_background and logits.shape[1] > 1:
        dice = dice[..., 1:]
    return 1 - dice.mean()


def focal(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int | None = None,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_t) ** gamma``.

    Shape:
        ``logits (B, K, *S)``, ``target (B, *S)`` -> scalar.
    """
    valid = _valid_mask(target, ignore_index)
    safe = torch.where(valid, target, torch.zeros_like(target))
    logp = F.log_softmax(logits.float(), 1).gather(1, safe.unsqueeze(1)).squeeze(1)
    per_pixel = -((1 - logp.exp()) ** gamma) * logp
    return _weighted_mean(per_pixel, valid, weight)


_Compute = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, int | None, float], torch.Tensor]


@dataclass(frozen=True)
class LossSpec:
    """One row of :data:`LOSS_TABLE`.

    Attributes:
        name: the ``train.loss`` value.
        summary: what the loss is, one line.
        weight: where a per-pixel ``weight`` enters (``"every pixel"``, ``"CE term"``); ``None``: nowhere, the
            loss takes no per-pixel weight and the weight map cannot be turned on with it.
        weight_map_by_default: ``data.weight_map.enabled: auto`` turns the weight map on.
        compute: ``(logits, target, weight, ignore_index, focal_gamma) -> scalar``.
    """

    name: LossName
    summary: str
    weight: str | None
    weight_map_by_default: bool
    compute: _Compute

    @property
    def accepts_weight(self) -> bool:
        """Whether a per-pixel ``weight`` changes the loss."""
        return self.weight is not None


LOSS_TABLE: dict[str, LossSpec] = {
    s.name: s
    for s in (
        LossSpec(
            "ce",
            "softmax cross-entropy",
            "every pixel",
            False,
            lambda x, y, w, ii, g: cross_entropy(x, y, w, ii),
        ),
        LossSpec(
            "weighted_ce",
            "the paper's: cross-entropy times the weight map",
            "every pixel",
            True,
            lambda x, y, w, ii, g: cross_entropy(x, y, w, ii),
        ),
        LossSpec(
            "bce",
            "sigmoid binary cross-entropy (one-hot targets, multi-label targets as given)",
            "every pixel",
            False,
            lambda x, y, w, ii, g: binary_cross_entropy(x, y, w, ii),
        ),
        LossSpec(
            "dice",
            "soft Dice (batch Dice over the foreground classes)",
            None,
            False,
            lambda x, y, w, ii, g: soft_dice(x, y, ii),
        ),
        LossSpec(
            "dice_ce",
            "soft Dice + cross-entropy, nnU-Net's default (the default here)",
            "CE term",
            False,
            lambda x, y, w, ii, g: soft_dice(x, y, ii) + cross_entropy(x, y, w, ii),
        ),
        LossSpec(
            "focal",
            "focal loss, gamma 2",
            "every pixel",
            False,
            lambda x, y, w, ii, g: focal(x, y, w, ii, g),
        ),
    )
}
"""Every loss by name, in the order the docs list them."""

LOSSES: tuple[str, ...] = tuple(LOSS_TABLE)


def loss_spec(name: str) -> LossSpec:
    """The :data:`LOSS_TABLE` row of ``name``; a :class:`ConfigError` naming the choices if there is none."""
    if name not in LOSS_TABLE:
        raise ConfigError(f"train.loss={name!r} is unknown; choose one of {', '.join(LOSSES)}")
    return LOSS_TABLE[name]


def use_weight_map(loss: str, enabled: bool | Literal["auto"]) -> bool:
    """Whether a run computes weight maps: ``data.weight_map.enabled`` for the loss ``loss``.

    ``auto`` follows the loss's default; ``True`` with a loss that takes no per-pixel weight is an error
    (the maps would be computed and then dropped).

    >>> use_weight_map("weighted_ce", "auto"), use_weight_map("ce", "auto"), use_weight_map("ce", True)
    (True, False, True)
    """
    spec = loss_spec(loss)
    if enabled == "auto":
        return spec.weight_map_by_default
    if enabled and not spec.accepts_weight:
        takers = ", ".join(s.name for s in LOSS_TABLE.values() if s.accepts_weight)
        raise ConfigError(
            f"data.weight_map.enabled=true: the {loss} loss takes no per-pixel weights, so the weight map would "
            f"be computed and ignored; set data.weight_map.enabled=auto or choose a loss that uses it ({takers})"
        )
    return bool(enabled)


def loss_description() -> str:
    """The ``train.loss`` field description (one line: ``unetkit config init`` writes it as a comment)."""
    auto = ", ".join(s.name for s in LOSS_TABLE.values() if s.weight_map_by_default)
    return f"{' | '.join(LOSSES)}; {auto} is the paper's (uses the weight map); see docs/training.md"


def weight_map_description() -> str:
    """The ``data.weight_map.enabled`` field description, one line."""
    rows = LOSS_TABLE.values()
    auto = ", ".join(s.name for s in rows if s.weight_map_by_default)
    optional = ", ".join(
        s.name + ("" if s.weight == "every pixel" else f" ({s.weight})")
        for s in rows
        if s.accepts_weight and not s.weight_map_by_default
    )
    never = ", ".join(s.name for s in rows if not s.accepts_weight)
    return f"auto: on for {auto}; true: also for {optional}; not with {never} (no per-pixel weights)"


def _table_doc(indent: str) -> str:
    lines = [f"{indent}Losses (from :data:`LOSS_TABLE`):"]
    for s in LOSS_TABLE.values():
        weight = f"per-pixel weight: {s.weight}" if s.accepts_weight else "ignores the per-pixel weight"
        default = "; weight map on by default" if s.weight_map_by_default else ""
        lines.append(f"{indent}    ``{s.name}``: {s.summary}; {weight}{default}.")
    return "\n".join(lines) + "\n"


class SegmentationLoss(nn.Module):
    """A loss by name (a row of :data:`LOSS_TABLE`), called as ``loss(logits, target, weight=None)``.

    A loss that takes no per-pixel weight ignores ``weight``; :attr:`accepts_weight` says which.

    Shape:
        ``logits (B, K, *S)``, ``target (B, *S)``, ``weight (B, *S)`` -> scalar.

    >>> loss = SegmentationLoss("dice_ce")
    >>> logits = torch.randn(2, 3, 8, 8, 8); target = torch.randint(0, 3, (2, 8, 8, 8))
    >>> loss(logits, target).ndim
    0
    """

    def __init__(self, name: str = "dice_ce", ignore_index: int | None = None, focal_gamma: float = 2.0) -> None:
        super().__init__()
        self.spec = loss_spec(name)
        self.name, self.ignore_index, self.focal_gamma = name, ignore_index, focal_gamma

    @property
    def accepts_weight(self) -> bool:
        """Whether the per-pixel ``weight`` (the weight map) changes this loss."""
        return self.spec.accepts_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        weight = weight if self.spec.accepts_weight else None
        return self.spec.compute(logits, target, weight, self.ignore_index, self.focal_gamma)


# The names section of the docstring is written from the table, so the two cannot disagree.
SegmentationLoss.__doc__ = (SegmentationLoss.__doc__ or "").rstrip() + "\n\n" + _table_doc("    ")


# ---- restoration (regression) losses: the image-to-image task ---------------------------------------------
RestoreLossName = Literal["l1", "mse", "charbonnier", "ssim", "l1_ssim"]
"""The names ``restore.loss`` accepts: the keys of :data:`RESTORE_LOSS_TABLE`."""

SSIM_WINDOW = 7  # scikit-image's default window (uniform, sample covariance), also for the SSIM metric
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _masked_mean(per_pixel: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean over every element; with ``weight (B, *S)``, the weighted mean (a 0/1 mask: over the marked pixels)."""
    if weight is None:
        return per_pixel.mean()
    w = weight.unsqueeze(1).expand_as(per_pixel).to(per_pixel.dtype)
    return (per_pixel * w).sum() / w.sum().clamp_min(1e-8)


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = SSIM_WINDOW) -> torch.Tensor:
    """The local SSIM of two batches with a uniform ``window`` (scikit-image's default), 2D or 3D.

    Only windows fully inside the image count (scikit-image crops the same border when it averages).

    Shape:
        ``(B, C, *S) -> (B, C, *(S - window + 1))``
    """
    dims = x.dim() - 2
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    win = min(window, *x.shape[2:])
    n = win**dims
    cov = n / max(n - 1, 1)  # sample covariance, as scikit-image's default
    x, y = x.float(), y.float()
    mx, my = pool(x, win, 1), pool(y, win, 1)
    vx = (pool(x * x, win, 1) - mx * mx) * cov
    vy = (pool(y * y, win, 1) - my * my) * cov
    vxy = (pool(x * y, win, 1) - mx * my) * cov
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def charbonnier(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, eps: float = 1e-3) -> torch.Tensor:
    """``sqrt((x - y)^2 + eps^2)``, a smooth L1."""
    return _masked_mean(torch.sqrt((x.float() - y.float()) ** 2 + eps * eps), weight)


def ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - mean SSIM`` on the normalised intensities (data range 1)."""
    return 1.0 - ssim_map(x, y).mean()


_RCompute = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class RestoreLossSpec:
    """One row of :data:`RESTORE_LOSS_TABLE`: name, what it is, whether a per-pixel weight (the Noise2Void
    mask) enters, and ``compute(output, target, weight) -> scalar``."""

    name: RestoreLossName
    summary: str
    accepts_weight: bool
    compute: _RCompute


RESTORE_LOSS_TABLE: dict[str, RestoreLossSpec] = {
    s.name: s
    for s in (
        RestoreLossSpec(
            "l1", "mean absolute error (the default)", True, lambda x, y, w: _masked_mean((x - y).abs(), w)
        ),
        RestoreLossSpec("mse", "mean squared error", True, lambda x, y, w: _masked_mean((x - y) ** 2, w)),
        RestoreLossSpec("charbonnier", "Charbonnier, sqrt(d^2 + 1e-6), a smooth L1", True, charbonnier),
        RestoreLossSpec("ssim", "1 - SSIM (7-pixel uniform window)", False, lambda x, y, w: ssim_loss(x, y)),
        RestoreLossSpec(
            "l1_ssim",
            "0.16 L1 + 0.84 (1 - SSIM), Zhao et al.'s mix",
            False,
            lambda x, y, w: 0.16 * (x - y).abs().mean() + 0.84 * ssim_loss(x, y),
        ),
    )
}
"""Every restoration loss by name."""


class RestoreLoss(nn.Module):
    """A restoration loss by name (a row of :data:`RESTORE_LOSS_TABLE`): ``loss(output, target, weight=None)``.

    Noise2Void passes its blind-spot mask as ``weight``; the SSIM losses need whole patches, so self-supervised
    training refuses them (:class:`ConfigError`).

    Shape:
        ``output (B, C, *S)``, ``target (B, C, *S)``, ``weight (B, *S)`` or None -> scalar.

    >>> loss = RestoreLoss("l1")
    >>> float(loss(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)))
    1.0
    """

    def __init__(self, name: str = "l1") -> None:
        super().__init__()
        if name not in RESTORE_LOSS_TABLE:
            raise ConfigError(f"restore.loss={name!r} is unknown; choose one of {', '.join(RESTORE_LOSS_TABLE)}")
        self.spec = RESTORE_LOSS_TABLE[name]
        self.name = name

    def forward(self, output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if weight is not None and not self.spec.accepts_weight:
            raise ConfigError(
                f"restore.loss={self.name}: takes no per-pixel mask (Noise2Void needs one); use l1, mse or charbonnier"
            )
        return self.spec.compute(output.float(), target.float(), weight)
