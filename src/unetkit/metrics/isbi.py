"""The ISBI 2012 EM segmentation challenge metrics: pixel error, Rand error, warping error.

All three compare two *binary* maps where non-zero means foreground (cell interior) and zero means
membrane/background, as in the challenge. 3D volumes are accepted: segments for the Rand error are
3D connected components; the warping error, defined with a 2D simple-point test, is summed over the
2D slices along the first axis.

References:
    Arganda-Carreras et al. (2015), Crowdsourcing the creation of image segmentation algorithms for
    connectomics, Front. Neuroanat. 9:142 (the foreground-restricted Rand error).
    Jain et al. (2010), Boundary learning by optimization with topological constraints, CVPR
    (the warping error).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from scipy import ndimage

from unetkit.errors import DataError

__all__ = [
    "CHALLENGE_THRESHOLDS",
    "ChallengeScores",
    "RandScore",
    "challenge_scores",
    "contingency",
    "errors_by_threshold",
    "pixel_error",
    "rand_error",
    "rand_score",
    "segments",
    "variation_of_information",
    "warp_labels",
    "warping_error",
]


def _binary(a: Any, name: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    if arr.ndim < 2:
        raise DataError(f"{name} has shape {arr.shape}", fix="pass a 2D image or a 3D volume")
    return arr != 0


def _pair(pred: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _binary(pred, "prediction"), _binary(truth, "truth")
    if p.shape != t.shape:
        raise DataError(f"prediction shape {p.shape} differs from truth shape {t.shape}; they must be equal")
    return p, t


def pixel_error(pred: Any, truth: Any) -> float:
    """Fraction of pixels whose binary label differs between prediction and truth.

    Shape:
        ``pred``, ``truth``: ``(H, W)`` or ``(D, H, W)``; non-zero = foreground.

    >>> pixel_error(np.array([[1, 0], [1, 1]]), np.array([[1, 1], [1, 1]]))
    0.25
    """
    p, t = _pair(pred, truth)
    return float(np.count_nonzero(p != t) / p.size)


def segments(binary: Any, connectivity: int = 1) -> np.ndarray:
    """Label the connected components of the foreground (non-zero) of a binary map; background stays 0.

    Args:
        binary: the map, 2D or 3D.
        connectivity: 1 = face neighbours only (4 in 2D, 6 in 3D; the default, so a diagonal gap in a
            membrane still separates two cells), up to ``ndim`` = all neighbours (8 in 2D, 26 in 3D).

    Shape:
        ``(*spatial)`` -> ``int32 (*spatial)``.

    >>> segments(np.array([[1, 0, 1], [1, 0, 1]])).tolist()
    [[1, 0, 2], [1, 0, 2]]
    """
    b = _binary(binary, "binary map")
    structure = ndimage.generate_binary_structure(b.ndim, connectivity)
    labels, _ = ndimage.label(b, structure=structure)
    return labels.astype(np.int32, copy=False)


def contingency(truth_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse contingency table of two label images: ``(truth_ids, pred_ids, counts)`` of the non-empty cells."""
    t = np.asarray(truth_labels).reshape(-1).astype(np.int64)
    p = np.asarray(pred_labels).reshape(-1).astype(np.int64)
    width = int(p.max(initial=0)) + 1
    keys, counts = np.unique(t * width + p, return_counts=True)
    return keys // width, keys % width, counts.astype(np.float64)


class RandScore(NamedTuple):
    """Foreground-restricted Rand scores: ``error = 1 - F``, F the harmonic mean of ``split`` and ``merge``.

    ``merge`` (precision): fraction of predicted same-segment pixel pairs that are in one true segment
    (low when cells were merged). ``split`` (recall): fraction of true same-segment pairs that the
    prediction keeps together (low when cells were split).
    """

    error: float
    split: float
    merge: float


def rand_score(
    pred: Any,
    truth: Any,
    *,
    connectivity: int = 1,
    pred_background: Literal["singletons", "segment"] = "singletons",
) -> RandScore:
    """The ISBI 2012 (adapted, foreground-restricted) Rand error of two binary maps.

    Segments are the connected components of each map's foreground. Only pixels in the truth's foreground
    count. Pixel pairs ``(i, j), i != j`` are counted from the contingency table ``n_ij``:
    ``merge = sum n_ij(n_ij - 1) / sum_j b_j(b_j - 1)``, ``split = sum n_ij(n_ij - 1) / sum_i a_i(a_i - 1)``.

    Args:
        pred: predicted binary map (non-zero = cell interior), 2D or 3D.
        truth: true binary map, same shape.
        connectivity: neighbourhood of the connected components (see :func:`segments`).
        pred_background: how truth-foreground pixels that the prediction calls background count:
            ``"singletons"`` (the challenge's reference code: each is its own segment, so it splits but never
            merges) or ``"segment"`` (all of them form one segment, as scikit-image's
            ``adapted_rand_error(truth, pred, ignore_labels=(0,))`` computes).

    Shape:
        ``pred``, ``truth``: ``(H, W)`` or ``(D, H, W)``.

    >>> truth = np.array([[1, 1, 0, 1, 1]])
    >>> rand_score(truth, truth).error
    0.0
    >>> round(rand_score(np.ones((1, 5)), truth).merge, 3)  # the membrane was missed: two cells merged
    0.333
    """
    if pred_background not in ("singletons", "segment"):
        raise DataError(f"pred_background={pred_background!r} is unknown; use 'singletons' or 'segment'")
    p, t = _pair(pred, truth)
    t_lab = segments(t, connectivity)
    p_lab = segments(p, connectivity)
    keep = t_lab > 0
    ti, pj, n = contingency(t_lab[keep], p_lab[keep])
    if pred_background == "singletons":
        # background pixels of the prediction are one-pixel segments: they add a pixel to their true segment
        # (already in a_i) but no pair anywhere.
        on = pj > 0
        sum_ab = float(np.sum(n[on] * (n[on] - 1)))
        b = np.bincount(pj[on], weights=n[on])
    else:
        sum_ab = float(np.sum(n * (n - 1)))
        b = np.bincount(pj, weights=n)
    a = np.bincount(ti, weights=n)
    sum_a = float(np.sum(a * (a - 1)))
    sum_b = float(np.sum(b * (b - 1)))
    if sum_a == 0 and sum_b == 0:
        return RandScore(0.0, 1.0, 1.0)
    merge = sum_ab / sum_b if sum_b else 1.0
    split = sum_ab / sum_a if sum_a else 1.0
    f = 2 * sum_ab / (sum_a + sum_b)
    return RandScore(float(1.0 - f), float(split), float(merge))


def rand_error(pred: Any, truth: Any, *, connectivity: int = 1) -> float:
    """The ISBI 2012 Rand error ``1 - F`` of two binary maps (see :func:`rand_score`).

    >>> rand_error(np.array([[1, 1, 0, 1, 1]]), np.array([[1, 1, 0, 1, 1]]))
    0.0
    """
    return rand_score(pred, truth, connectivity=connectivity).error


#: The thresholds of a foreground probability map the challenge's protocol scores (its evaluation script
#: thresholds at 0.0-0.9 by 0.1; 0.0 only adds the all-foreground map, so it is left out).
CHALLENGE_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))


def errors_by_threshold(
    foreground: Any, truth: Any, thresholds: Sequence[float] = CHALLENGE_THRESHOLDS
) -> dict[str, list[float]]:
    """Pixel and Rand error of ``foreground >= t`` against ``truth`` for each threshold ``t``.

    Shape:
        ``foreground``: ``(H, W)`` or ``(D, H, W)`` foreground (cell interior) probabilities;
        ``truth``: the same shape, non-zero = foreground.

    >>> e = errors_by_threshold(np.array([[0.9, 0.4, 0.1, 0.8]]), np.array([[1, 0, 0, 1]]), (0.3, 0.5))
    >>> e["pixel_error"], e["rand_error"]
    ([0.25, 0.0], [0.0, 0.0])
    """
    proba = foreground.detach().cpu().numpy() if hasattr(foreground, "detach") else np.asarray(foreground)
    out: dict[str, list[float]] = {"pixel_error": [], "rand_error": []}
    for t in thresholds:
        binary = proba >= t
        out["pixel_error"].append(pixel_error(binary, truth))
        out["rand_error"].append(rand_error(binary, truth))
    return out


class ChallengeScores(NamedTuple):
    """The challenge's protocol over a test set: each error at the one threshold that minimises its mean over
    the images (``pixel_threshold``, ``rand_threshold``), and the means at every threshold."""

    pixel_error: float
    pixel_threshold: float
    rand_error: float
    rand_threshold: float
    thresholds: tuple[float, ...]
    pixel_by_threshold: tuple[float, ...]
    rand_by_threshold: tuple[float, ...]


def challenge_scores(
    per_image: Sequence[dict[str, Sequence[float]]], thresholds: Sequence[float] = CHALLENGE_THRESHOLDS
) -> ChallengeScores:
    """The ISBI 2012 challenge's scoring of probability maps: 1 - the maximal F-score, i.e. each error at its
    best threshold, one threshold for the whole test set (the mean over images of :func:`errors_by_threshold`
    at each threshold, then the smallest). This is how the U-Net paper's figures were scored; errors at one
    fixed threshold (the labels) are never lower.

    >>> s = challenge_scores([{"pixel_error": [0.2, 0.1], "rand_error": [0.3, 0.5]}], (0.4, 0.6))
    >>> s.pixel_error, s.pixel_threshold, s.rand_error, s.rand_threshold
    (0.1, 0.6, 0.3, 0.4)
    """
    if not per_image:
        raise DataError("no images to score", fix="pass at least one prediction with its truth")
    ts = tuple(float(t) for t in thresholds)
    keys = ("pixel_error", "rand_error")
    means = {k: np.mean([np.asarray(e[k], np.float64) for e in per_image], axis=0) for k in keys}
    for k, m in means.items():
        if m.shape != (len(ts),):
            raise DataError(f"{k}: {m.shape[0] if m.ndim else 0} errors per image for {len(ts)} thresholds")
    best = {k: int(np.argmin(m)) for k, m in means.items()}
    return ChallengeScores(
        float(means["pixel_error"][best["pixel_error"]]), ts[best["pixel_error"]],
        float(means["rand_error"][best["rand_error"]]), ts[best["rand_error"]], ts,
        tuple(float(v) for v in means["pixel_error"]), tuple(float(v) for v in means["rand_error"]),
    )  # fmt: skip


def variation_of_information(pred: Any, truth: Any, *, connectivity: int = 1) -> tuple[float, float]:
    """Foreground-restricted variation of information of the segments: ``(split, merge)`` in bits.

    ``split = H(pred | truth)`` (over-segmentation), ``merge = H(truth | pred)`` (under-segmentation), base-2
    logarithm, over truth-foreground pixels; as scikit-image's ``variation_of_information`` with
    ``ignore_labels=(0,)`` on the segment images.

    >>> variation_of_information(np.array([[1, 1, 0, 1, 1]]), np.array([[1, 1, 0, 1, 1]]))
    (0.0, 0.0)
    """
    p, t = _pair(pred, truth)
    t_lab, p_lab = segments(t, connectivity), segments(p, connectivity)
    keep = t_lab > 0
    ti, pj, n = contingency(t_lab[keep], p_lab[keep])
    if n.size == 0:
        return 0.0, 0.0
    pxy = n / n.sum()
    px = np.bincount(ti, weights=pxy)[ti]
    py = np.bincount(pj, weights=pxy)[pj]
    split = float(-np.sum(pxy * np.log2(pxy / px)))
    merge = float(-np.sum(pxy * np.log2(pxy / py)))
    return split + 0.0, merge + 0.0


# --- warping error --------------------------------------------------------------------------------------------

# The 8 neighbours of a pixel, bit k of the neighbourhood code = neighbour k is foreground.
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


@functools.lru_cache(maxsize=2)
def simple_point_table(connectivity: int = 4) -> np.ndarray:
    """Lookup table ``bool [256]``: is a pixel with this 8-neighbourhood code a simple point?

    A pixel is simple when flipping it changes no topology: no object or hole is created, removed, split
    or merged. With foreground ``connectivity`` 4 (background 8) this holds iff exactly one 4-connected
    foreground component of the neighbourhood touches the pixel's 4-neighbours and the background of the
    neighbourhood is one 8-connected component (Bertrand's topological numbers ``T4 = T8' = 1``); the
    8-connected case swaps the roles. The answer does not depend on the pixel's own value.

    >>> table = simple_point_table(4)
    >>> bool(table[0]), bool(table[255]), bool(table[0b00000010])  # isolated, interior, end of a line
    (False, False, True)
    """
    if connectivity not in (4, 8):
        raise DataError(f"connectivity={connectivity} is not a 2D connectivity; use 4 or 8")
    four = ndimage.generate_binary_structure(2, 1)
    eight = ndimage.generate_binary_structure(2, 2)
    edge = np.zeros((3, 3), bool)
    edge[[0, 1, 1, 2], [1, 0, 2, 1]] = True  # the 4-neighbours

    def topological_number(region: np.ndarray, conn: int) -> int:
        labels, n = ndimage.label(region, structure=four if conn == 4 else eight)
        if conn == 8:
            return n
        return len(np.unique(labels[edge & region]))

    fg_conn, bg_conn = connectivity, 12 - connectivity
    table = np.zeros(256, dtype=bool)
    for code in range(256):
        fg = np.zeros((3, 3), bool)
        for bit, (dy, dx) in enumerate(_OFFSETS):
            fg[1 + dy, 1 + dx] = bool((code >> bit) & 1)
        bg = ~fg
        bg[1, 1] = False
        table[code] = topological_number(fg, fg_conn) == 1 and topological_number(bg, bg_conn) == 1
    return table


def _warp_slice(source: np.ndarray, target: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Flip simple points of ``source`` that disagree with ``target`` until none is left (one 2D slice)."""
    s = np.pad(source, 1).astype(np.uint8)  # outside the image is background
    t = np.pad(target, 1).astype(np.uint8)
    ys, xs = np.nonzero(s != t)
    weights = (1 << np.arange(8)).astype(np.uint8)
    offsets = np.array(_OFFSETS)
    # Pixels of one parity class (y % 2, x % 2) are never 8-neighbours, so flipping all simple ones of a class
    # at once equals flipping them one after another: each flip leaves the others' neighbourhoods untouched.
    while ys.size:
        flipped_any = False
        for py in (0, 1):
            for px in (0, 1):
                sel = np.flatnonzero(((ys & 1) == py) & ((xs & 1) == px))
                if not sel.size:
                    continue
                y, x = ys[sel], xs[sel]
                nb = s[y[:, None] + offsets[:, 0], x[:, None] + offsets[:, 1]]
                simple = table[(nb * weights).sum(axis=1, dtype=np.int64)]
                if simple.any():
                    s[y[simple], x[simple]] = t[y[simple], x[simple]]
                    keep = np.ones(ys.size, bool)
                    keep[sel[simple]] = False
                    ys, xs = ys[keep], xs[keep]
                    flipped_any = True
        if not flipped_any:
            break
    return s[1:-1, 1:-1].astype(bool)


def warp_labels(source: Any, target: Any, *, connectivity: int = 4) -> np.ndarray:
    """Warp binary ``source`` towards ``target`` by flipping simple points only (topology preserved).

    The result has exactly the topology of ``source`` (same objects and holes) and agrees with ``target``
    wherever that is possible by deforming ``source``'s boundaries. 3D input is warped slice by slice.

    Shape:
        ``(H, W)`` or ``(D, H, W)`` -> ``bool``, the same shape.

    >>> warp_labels(np.array([[0, 0, 0, 0], [0, 1, 0, 0]]), np.array([[0, 0, 0, 0], [0, 1, 1, 0]])).astype(int)
    array([[0, 0, 0, 0],
           [0, 1, 1, 0]])
    """
    s, t = _pair(source, target)
    table = simple_point_table(connectivity)
    if s.ndim == 2:
        return _warp_slice(s, t, table)
    flat_s = s.reshape(-1, *s.shape[-2:])
    flat_t = t.reshape(-1, *t.shape[-2:])
    return np.stack([_warp_slice(a, b, table) for a, b in zip(flat_s, flat_t, strict=True)]).reshape(s.shape)


def warping_error(
    pred: Any, truth: Any, *, connectivity: int = 4, warp: Literal["truth", "prediction"] = "truth"
) -> float:
    """Warping error: the fraction of pixels that disagree after a topology-preserving warp.

    As Jain et al. (2010) and the ISBI 2012 evaluation (Fiji), the truth is warped towards the prediction by
    flipping its simple points; the mismatches left are the prediction's topological errors (splits, merges,
    spurious objects and holes), divided by the number of pixels. ``warp="prediction"`` warps the prediction
    towards the truth instead (same value for one-pixel errors; it differs for errors that only one
    direction can absorb).

    Args:
        pred: predicted binary map (non-zero = cell interior), 2D or 3D (warped slice by slice).
        truth: true binary map, same shape.
        connectivity: foreground connectivity of the simple-point test, 4 (background 8, the default) or 8.
        warp: which map is deformed.

    Shape:
        ``(H, W)`` or ``(D, H, W)``.

    >>> truth = np.zeros((5, 5), int); truth[1:4, 1:4] = 1
    >>> shifted = np.roll(truth, 1, axis=1)  # a boundary moved: no topological error
    >>> warping_error(shifted, truth)
    0.0
    >>> holed = truth.copy(); holed[2, 2] = 0  # a hole appeared: one pixel of 25
    >>> warping_error(holed, truth)
    0.04
    """
    if warp not in ("truth", "prediction"):
        raise DataError(f"warp={warp!r} is unknown; use 'truth' or 'prediction'")
    p, t = _pair(pred, truth)
    if warp == "truth":
        warped = warp_labels(t, p, connectivity=connectivity)
        return float(np.count_nonzero(warped != p) / p.size)
    warped = warp_labels(p, t, connectivity=connectivity)
    return float(np.count_nonzero(warped != t) / t.size)
