"""Intensity normalisation, recorded in the model file so prediction does exactly what training did.

Kinds (``Normalizer(kind, **params)``):

- ``"zscore"``: ``(x - mean) / std`` per channel; ``scope="image"`` (default) computes mean/std on each
  image, ``scope="dataset"`` uses the values fitted from the training set.
- ``"percentile"``: clip to the ``lower``/``upper`` percentiles (default 0.5/99.5) and scale to [0, 1];
  ``scope="dataset"`` (default, fitted from the fingerprint) or ``"image"``.
- ``"range"``: ``(x - min) / (max - min)`` for fixed ``min``/``max`` (fitted from the image dtype's range,
  e.g. 0..255 for uint8, if not given); never depends on the data's values.
- ``"ct"``: for CT-like (Hounsfield) intensities: clip to the ``low``/``high`` percentiles (0.5/99.5) of
  the *foreground* voxels of the training set, then ``(x - mean) / std`` with the foreground's statistics
  (fitted from samples with masks), so air and bone outliers do not set the scale.
- ``"none"``: cast to float32.

Per-channel parameters are lists. ``freeze`` writes per-image statistics of a (huge, lazily read) image,
from blocks spread over it, into a dataset-scope normaliser; ``for_image`` applies it, so every tile (and
every Dask block, which gets the frozen parameters) is normalised the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from unetkit.data.fingerprint import Fingerprint, IntensityStats
from unetkit.errors import ConfigError

KINDS = ("zscore", "percentile", "range", "ct", "none")
_DEFAULTS: dict[str, dict[str, Any]] = {
    "zscore": {"scope": "image"},
    "percentile": {"scope": "dataset", "lower": 0.5, "upper": 99.5},
    "range": {},
    "ct": {"scope": "dataset"},
    "none": {},
}
SUBSAMPLE_VOXELS = 1 << 20
EPS = 1e-8


class Normalizer:
    """Normalise ``(C, *S)`` images (numpy or torch) to float32.

    Shape:
        ``(C, *S)`` in, ``(C, *S)`` float32 out.

    Example:
        >>> import numpy as np
        >>> x = np.array([[[0.0, 2.0], [4.0, 6.0]]])
        >>> Normalizer("zscore")(x).astype(float).round(3).tolist()
        [[[-1.342, -0.447], [0.447, 1.342]]]
        >>> n = Normalizer("range", min=[0], max=[255]); n(np.full((1, 1, 1, 2), 255, np.uint8)).tolist()
        [[[[1.0, 1.0]]]]
        >>> Normalizer.from_dict(n.to_dict()).to_dict() == n.to_dict()
        True
    """

    def __init__(self, kind: str = "zscore", **params: Any) -> None:
        if kind not in KINDS:
            raise ConfigError(f"normalization kind {kind!r}; expected one of {', '.join(KINDS)}")
        merged = {**_DEFAULTS[kind], **params}
        if merged.get("scope", "image") not in ("image", "dataset"):
            raise ConfigError(f"normalization.scope {merged['scope']!r}; expected 'image' or 'dataset'")
        if kind == "percentile" and not 0 <= float(merged["lower"]) < float(merged["upper"]) <= 100:
            raise ConfigError(
                f"normalization percentiles lower={merged['lower']} upper={merged['upper']}; "
                "need 0 <= lower < upper <= 100"
            )
        self.kind = kind
        self.params: dict[str, Any] = merged

    # ------------------------------------------------------------------ fitting and serialisation
    @property
    def fitted(self) -> bool:
        """Whether the parameters a dataset-level kind needs are present."""
        need = {
            "zscore": ("mean", "std"),
            "percentile": ("low", "high"),
            "range": ("min", "max"),
            "ct": ("low", "high", "mean", "std"),
        }.get(self.kind, ())
        return self.params.get("scope") == "image" or all(k in self.params for k in need)

    def fit(self, data: Fingerprint | Sequence[Any]) -> Normalizer:
        """Fit dataset-level parameters from a fingerprint or from samples (objects with ``.image``).

        Image-scope kinds need nothing; ``range`` without ``min``/``max`` takes the image dtype's range
        (floats: the data's min/max). Returns ``self``.
        """
        if self.fitted:
            return self
        if self.kind == "ct":
            return self._fit_ct(data)
        fp = data if isinstance(data, Fingerprint) else _fingerprint_of(data)
        stats = fp.intensity
        if not stats:
            raise ConfigError("cannot fit normalisation: the dataset has no readable images")
        if self.kind == "zscore":
            self.params.update(mean=stats["mean"], std=stats["std"])
        elif self.kind == "percentile":
            lo, hi = float(self.params["lower"]), float(self.params["upper"])
            if (lo, hi) == (0.5, 99.5):
                self.params.update(low=stats["p0.5"], high=stats["p99.5"])
            elif not isinstance(data, Fingerprint):
                pooled = _pooled(data)
                self.params.update(
                    low=np.percentile(pooled, lo, axis=1).tolist(), high=np.percentile(pooled, hi, axis=1).tolist()
                )
            else:
                raise ConfigError(
                    f"a fingerprint holds the 0.5/99.5 percentiles only, not {lo}/{hi}; fit from the samples instead"
                )
        elif self.kind == "range":
            dtype = np.dtype(fp.image_dtype or "float32")
            if dtype.kind in "iu":
                info = np.iinfo(dtype)
                c = len(stats["min"])
                self.params.update(min=[float(info.min)] * c, max=[float(info.max)] * c)
            else:
                self.params.update(min=stats["min"], max=stats["max"])
        return self

    def _fit_ct(self, data: Fingerprint | Sequence[Any]) -> Normalizer:
        """Foreground percentiles, mean and std from samples with ``image`` and ``mask`` (mask > 0)."""
        if isinstance(data, Fingerprint) or not data:
            raise ConfigError("normalization 'ct' is fitted from training samples with masks, not a fingerprint")
        rng = np.random.default_rng(0)
        parts = []
        for s in data:
            image = np.asarray(s.image, np.float64)
            fg = np.asarray(s.mask) > 0
            vox = image.reshape(image.shape[0], -1)[:, fg.reshape(-1)]
            if vox.shape[1] > 100_000:
                vox = vox[:, np.sort(rng.choice(vox.shape[1], 100_000, replace=False))]
            parts.append(vox)
        pooled = np.concatenate(parts, axis=1)
        if pooled.shape[1] == 0:
            raise ConfigError("normalization 'ct': the training masks hold no foreground to fit it on; use zscore")
        low, high = np.percentile(pooled, [0.5, 99.5], axis=1)
        clipped = np.clip(pooled, low[:, None], high[:, None])
        self.params.update(
            low=low.tolist(), high=high.tolist(), mean=clipped.mean(1).tolist(), std=clipped.std(1).tolist()
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., "params": {...}}``: the model file's ``normalization``."""
        return {"kind": self.kind, "params": {k: _plain(v) for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Normalizer:
        """Rebuild from :meth:`to_dict` output (``None`` or ``{}`` -> ``"none"``)."""
        if not d:
            return cls("none")
        if not isinstance(d, dict) or "kind" not in d:
            raise ConfigError(f"normalization {d!r}; expected {{'kind': ..., 'params': {{...}}}}")
        return cls(str(d["kind"]), **dict(d.get("params") or {}))

    def __repr__(self) -> str:
        return f"Normalizer({self.kind!r}, {self.params})"

    # ------------------------------------------------------------------ applying
    def __call__(self, image: Any) -> Any:
        """Normalise one ``(C, *S)`` image (numpy array or torch tensor); returns float32 of the same kind."""
        return self._transform(self._stats_for(image))(image)

    def for_image(self, image: Any) -> Callable[[Any], Any]:
        """A function normalising tiles of ``image`` (array-like ``(C, *S)``, e.g. a lazy image) consistently.

        Per-image statistics are computed once (see :meth:`freeze`), so every tile is normalised the same way.

        Example:
            >>> import numpy as np
            >>> img = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
            >>> f = Normalizer("zscore").for_image(img)
            >>> bool(np.allclose(f(img[:, :4]), Normalizer("zscore")(img)[:, :4]))
            True
        """
        frozen = self.freeze(image)
        return frozen._transform(frozen._stats_for(image))

    def freeze(self, image: Any) -> Normalizer:
        """This normalisation with ``image``'s statistics written into its parameters.

        Per-image kinds (``scope="image"``) become the same kind with ``scope="dataset"`` and the statistics
        :meth:`for_image` uses: computed from the whole image when it is small, else from blocks spread over
        it (about ``SUBSAMPLE_VOXELS`` voxels), so reading stays bounded. The result normalises any part of
        the image exactly as :meth:`for_image` does, without reading it, and serialises with :meth:`to_dict`:
        this is how per-image statistics are computed once and shipped to Dask workers, which see one block
        of the image each. Kinds that do not depend on the image return ``self``.

        Example:
            >>> import numpy as np
            >>> img = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
            >>> frozen = Normalizer("zscore").freeze(img)
            >>> frozen.params["scope"], [round(m, 2) for m in frozen.params["mean"]]
            ('dataset', [31.5])
            >>> bool(np.array_equal(frozen(img[:, :2]), Normalizer("zscore").for_image(img)(img[:, :2])))
            True
        """
        if self.kind not in ("zscore", "percentile") or self.params.get("scope") != "image":
            return self
        stats = self._stats_for(image, subsample=True)
        if self.kind == "zscore":
            fitted = {"mean": stats["shift"].tolist(), "std": stats["scale"].tolist()}
        else:
            fitted = {"low": stats["clip_lo"].tolist(), "high": stats["clip_hi"].tolist()}
        return Normalizer(self.kind, **{**self.params, "scope": "dataset", **fitted})

    def _stats_for(self, image: Any, subsample: bool = False) -> dict[str, np.ndarray]:
        p = self.params
        if self.kind == "none":
            return {}
        if p.get("scope") == "dataset" or self.kind == "range":
            if not self.fitted:
                raise ConfigError(
                    f"normalization {self.kind!r} needs dataset statistics; call .fit(dataset.fingerprint) first"
                )
            if self.kind == "zscore":
                return {"shift": np.asarray(p["mean"], np.float64), "scale": np.asarray(p["std"], np.float64)}
            if self.kind == "percentile":
                return _clip_scale(np.asarray(p["low"], np.float64), np.asarray(p["high"], np.float64))
            if self.kind == "ct":
                return {
                    "clip_lo": np.asarray(p["low"], np.float64),
                    "clip_hi": np.asarray(p["high"], np.float64),
                    "shift": np.asarray(p["mean"], np.float64),
                    "scale": np.asarray(p["std"], np.float64),
                }
            lo, hi = np.asarray(p["min"], np.float64), np.asarray(p["max"], np.float64)
            return {"shift": lo, "scale": hi - lo}
        flat = _sample(image, subsample)
        if self.kind == "zscore":
            return {"shift": flat.mean(axis=1), "scale": flat.std(axis=1)}
        lo, hi = np.percentile(flat, [float(p["lower"]), float(p["upper"])], axis=1)
        return _clip_scale(lo, hi)

    def _transform(self, stats: dict[str, np.ndarray]) -> Callable[[Any], Any]:
        def apply(x: Any) -> Any:
            is_torch = type(x).__module__.startswith("torch")
            x = x.float() if is_torch else np.asarray(x, dtype=np.float32)
            if not stats:
                return x
            shape = (-1,) + (1,) * (x.ndim - 1)
            shift, scale = (np.asarray(stats[k], np.float32).reshape(shape) for k in ("shift", "scale"))
            scale = np.where(np.abs(scale) < EPS, np.float32(1.0), scale).astype(np.float32)
            if is_torch:
                import torch

                t_shift, t_scale = (torch.as_tensor(a, device=x.device) for a in (shift, scale))
                if "clip_lo" in stats:
                    lo, hi = (
                        torch.as_tensor(stats[k].astype(np.float32).reshape(shape), device=x.device)
                        for k in ("clip_lo", "clip_hi")
                    )
                    x = torch.maximum(torch.minimum(x, hi), lo)
                return (x - t_shift) / t_scale
            if "clip_lo" in stats:
                x = np.clip(x, stats["clip_lo"].reshape(shape), stats["clip_hi"].reshape(shape))
            return ((x - shift) / scale).astype(np.float32, copy=False)

        return apply


def _clip_scale(lo: np.ndarray, hi: np.ndarray) -> dict[str, np.ndarray]:
    return {"clip_lo": lo, "clip_hi": hi, "shift": lo, "scale": hi - lo}


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _sample(image: Any, subsample: bool) -> np.ndarray:
    """``(C, N)`` float64 voxels: all of them, or blocks spread over a large (lazy) image."""
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu().numpy()
    shape = tuple(image.shape)
    n = math.prod(shape[1:])
    if not subsample or n <= SUBSAMPLE_VOXELS:
        return np.asarray(image[...], dtype=np.float64).reshape(shape[0], -1)
    d = len(shape) - 1
    # a grid of g**d blocks of side b, with g**d * b**d ~ SUBSAMPLE_VOXELS voxels read in all
    g = 4
    block = max(8, int((SUBSAMPLE_VOXELS / g**d) ** (1 / d)))
    starts = [np.linspace(0, max(s - block, 0), g).astype(int) for s in shape[1:]]
    parts = []
    for corner in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, d):
        key = (slice(None), *(slice(int(c), int(c) + block) for c in corner))
        parts.append(np.asarray(image[key], dtype=np.float64).reshape(shape[0], -1))
    return np.concatenate(parts, axis=1)


def _fingerprint_of(samples: Sequence[Any]) -> Fingerprint:
    stats = IntensityStats()
    for i, s in enumerate(samples):
        stats.add(np.asarray(s.image), seed=i)
    dtype = str(samples[0].image.dtype) if samples else None
    return Fingerprint(num_samples=len(samples), image_dtype=dtype, intensity=stats.result())


def _pooled(samples: Sequence[Any]) -> np.ndarray:
    return np.concatenate([np.asarray(s.image, np.float64).reshape(s.image.shape[0], -1) for s in samples], axis=1)
