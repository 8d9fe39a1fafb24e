"""Restoration metrics, pure functions on arrays: PSNR, SSIM (scikit-image's definition), NRMSE; and
:func:`scale_matched`, the input on its target's scale, the fair "before" for them.

All take ``(C, *S)`` or ``(*S)`` arrays of the same shape, 2D or 3D. ``data_range`` defaults to the target's
``max - min`` (scikit-image's default is the dtype's range, which means little for float images).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter

SSIM_WINDOW = 7


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} differ in shape")
    return p, t


def _range(t: np.ndarray, data_range: float | None) -> float:
    return float(data_range) if data_range is not None else float(t.max() - t.min()) or 1.0


def psnr(pred: Any, target: Any, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(range^2 / MSE)``.

    >>> round(psnr(np.zeros(4), np.array([0.0, 0.0, 0.0, 1.0])), 3)
    6.021
    """
    p, t = _pair(pred, target)
    mse = float(np.mean((p - t) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(_range(t, data_range) ** 2 / mse)


def nrmse(pred: Any, target: Any) -> float:
    """Root-mean-square error over the target's root-mean-square (scikit-image's ``euclidean`` NRMSE)."""
    p, t = _pair(pred, target)
    return float(np.sqrt(np.mean((p - t) ** 2)) / max(np.sqrt(np.mean(t * t)), 1e-12))


def ssim(pred: Any, target: Any, data_range: float | None = None, channel_axis: int | None = None) -> float:
    """Mean structural similarity with scikit-image's defaults: 7-pixel uniform window, sample covariance,
    K1 = 0.01, K2 = 0.03, the border of half a window left out of the mean. With ``channel_axis`` the mean of
    the per-channel values.

    Shape:
        ``(*S)``, or ``(C, *S)`` with ``channel_axis=0``.
    """
    p, t = _pair(pred, target)
    if channel_axis is not None:
        p, t = np.moveaxis(p, channel_axis, 0), np.moveaxis(t, channel_axis, 0)
        return float(np.mean([ssim(a, b, _range(t, data_range)) for a, b in zip(p, t, strict=True)]))
    r = _range(t, data_range)
    win = SSIM_WINDOW
    n = win**p.ndim
    cov = n / (n - 1)
    mx, my = uniform_filter(p, win), uniform_filter(t, win)
    vx = cov * (uniform_filter(p * p, win) - mx * mx)
    vy = cov * (uniform_filter(t * t, win) - my * my)
    vxy = cov * (uniform_filter(p * t, win) - mx * my)
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[tuple(slice(pad, k - pad) for k in s.shape)].mean())


def scale_matched(image: Any, target: Any) -> np.ndarray:
    """``image`` under the affine map per channel (``a * image + b``) that brings it closest to ``target`` in
    squared error: an input scored against its clean target without penalising a dimmer exposure or an offset
    (the scale-invariant comparison of the CARE paper). It never scores worse than the image as it is, so the
    gain of a restoration over it is not overstated.

    Shape:
        ``(C, *S)``, with ``target`` of the same shape -> float64 ``(C, *S)``.

    >>> scale_matched(np.array([[0.0, 1.0, 2.0]]), np.array([[10.0, 12.0, 14.0]])).tolist()
    [[10.0, 12.0, 14.0]]
    """
    x, t = _pair(image, target)
    out = np.empty_like(x)
    for c, (xc, tc) in enumerate(zip(x, t, strict=True)):
        dx, dt = xc - xc.mean(), tc - tc.mean()
        var = float((dx * dx).mean())
        out[c] = (float((dx * dt).mean()) / var if var > 0 else 0.0) * dx + tc.mean()
    return out


def restore_scores(pred: Any, target: Any, data_range: float | None = None) -> dict[str, float]:
    """``{"psnr", "ssim", "nrmse"}`` of a ``(C, *S)`` prediction against its target.

    SSIM is per channel (channels averaged) and needs at least 7 pixels per spatial axis; smaller images
    score NaN.
    """
    p, t = _pair(pred, target)
    r = _range(t, data_range)
    big = min(p.shape[1:]) >= SSIM_WINDOW
    return {
        "psnr": psnr(p, t, r),
        "ssim": ssim(p, t, r, channel_axis=0) if big else math.nan,
        "nrmse": nrmse(p, t),
    }
