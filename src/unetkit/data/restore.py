"""Restoration datasets: ``inputs/`` (or ``images/``) + ``targets/``, files sharing a name, any format and
channel count, 2D or 3D. A self-supervised (Noise2Void) dataset needs the inputs only.

:func:`check_restore_dataset` lists every problem at once (a missing partner, unreadable files, input and
target sizes that differ, channel counts that differ between files); :func:`load_restore_dataset` checks and
then loads the pairs into :class:`RestoreSample` s. A pair whose target looks shifted from its input
(:func:`misalignment`) is logged as a warning: a CARE network learns a shift as readily as the restoration.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io import is_image_file, read_image, strip_suffix
from unetkit.data.pairs import Problem
from unetkit.errors import DataError

log = logging.getLogger(__name__)

ALIGN_SIDE = {2: 512, 3: 96}
"""The centre crop (per axis) :func:`misalignment` compares: enough structure to lock on, at a bounded cost."""

INPUT_DIRS = ("inputs", "images")
TARGET_DIR = "targets"


@dataclass
class RestoreSample:
    """One restoration example.

    Attributes:
        name: the pair's name (relative path without suffix).
        image: float32 input intensities (normalised by training).
        target: float32 target intensities (the input itself for Noise2Void).
        spacing: voxel spacing, or ``None``.
        target_dtype: the target file's dtype (prediction writes it back in this dtype when asked).

    Shape:
        ``image (C_in, *S)``, ``target (C_out, *S)``.
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    spacing: tuple[float, ...] | None = None
    target_dtype: str = "float32"

    @property
    def spatial_dims(self) -> int:
        return self.image.ndim - 1


@dataclass
class RestoreDataset:
    """Loaded restoration pairs and what the model file records about them."""

    samples: list[RestoreSample]
    in_channels: int
    out_channels: int
    spatial_dims: int
    target_dtype: str
    root: Path
    digest: str = ""
    problems: list[Problem] = field(default_factory=list)


def _files(folder: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if is_image_file(p) and not any(part.endswith(".zarr") for part in p.relative_to(folder).parts[:-1]):
            out[strip_suffix(p.relative_to(folder).as_posix())] = p
    return out


def find_restore_pairs(
    path: str | Path, self_supervised: bool = False
) -> tuple[list[tuple[str, Path | None, Path | None]], list[Problem], Path]:
    """The ``(name, input, target)`` triples of a restoration dataset folder and the problems of pairing.

    With ``self_supervised`` the target is the input (a ``targets/`` folder, if any, is not used).
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError("restoration dataset not found", file=root, fix="give a folder with inputs/ and targets/")
    in_dir = next((root / d for d in INPUT_DIRS if (root / d).is_dir()), None)
    if in_dir is None:
        raise DataError(
            "no inputs/ (or images/) folder",
            file=root,
            fix="put the degraded images in inputs/ and the clean in targets/",
        )
    inputs = _files(in_dir)
    if self_supervised:
        return [(n, p, p) for n, p in inputs.items()], [], root
    if not (root / TARGET_DIR).is_dir():
        raise DataError(
            "no targets/ folder",
            file=root,
            fix="put the clean images in targets/ under the inputs' names, or train with --self-supervised",
        )
    targets = _files(root / TARGET_DIR)
    problems, triples = [], []
    for name in sorted(set(inputs) | set(targets)):
        i, t = inputs.get(name), targets.get(name)
        if i is None:
            problems.append(Problem(f"{TARGET_DIR}/{name}", "has no input", f"add {in_dir.name}/{name} or remove it"))
        elif t is None:
            problems.append(Problem(f"{in_dir.name}/{name}", "has no target", f"add {TARGET_DIR}/{name} or remove it"))
        triples.append((name, i, t))
    if not triples:
        problems.append(Problem(str(in_dir), "holds no images", "add image files (png, tif, nii.gz, zarr, npy)"))
    return triples, problems, root


def _read(p: Path, spatial_dims: int | None, problems: list[Problem], root: Path) -> Any:
    try:
        return read_image(p, spatial_dims)
    except DataError as exc:
        problems.append(Problem.from_error(exc, str(p.relative_to(root)), "re-save the file", read_path=p))
        return None


def misalignment(image: np.ndarray, target: np.ndarray) -> tuple[int, ...] | None:
    """The whole-pixel shift that aligns ``image`` with ``target``, where they are clearly misaligned (``None``
    where they are aligned, or where no shift clearly helps).

    The channel means of a centre crop (:data:`ALIGN_SIDE`) are registered by phase correlation
    (``skimage.registration.phase_cross_correlation``); a shift counts only where it raises the absolute
    correlation of the overlapping parts by over 0.05 to at least 0.2, so the noise of a low-SNR input or a
    flat image raises no false alarm.

    Shape:
        ``image (C_in, *S)``, ``target (C_out, *S)``.
    """
    from skimage.registration import phase_cross_correlation

    side = ALIGN_SIDE.get(image.ndim - 1, 256)
    crop = tuple(slice(max(0, (n - side) // 2), max(0, (n - side) // 2) + side) for n in image.shape[1:])
    a = np.asarray(image[(slice(None), *crop)], np.float64).mean(0)
    b = np.asarray(target[(slice(None), *crop)], np.float64).mean(0)
    if min(a.shape) < 8 or not (np.isfinite(a).all() and np.isfinite(b).all()) or a.std() == 0 or b.std() == 0:
        return None  # too small, NaN/Inf (a problem of its own) or flat: nothing to register
    found, _, _ = phase_cross_correlation(b, a, normalization=None)
    shift = tuple(round(float(d)) for d in found)
    if not any(shift) or any(abs(d) * 4 > n for d, n in zip(shift, a.shape, strict=True)):
        return None

    def overlap_corr(d: tuple[int, ...]) -> float:
        src = tuple(slice(max(0, -k), n - max(0, k)) for k, n in zip(d, a.shape, strict=True))
        dst = tuple(slice(max(0, k), n - max(0, -k)) for k, n in zip(d, a.shape, strict=True))
        return abs(float(np.corrcoef(a[src].ravel(), b[dst].ravel())[0, 1]))

    before, after = overlap_corr((0,) * a.ndim), overlap_corr(shift)
    return shift if after > before + 0.05 and after >= 0.2 else None


def check_restore_dataset(
    path: str | Path, *, self_supervised: bool = False, spatial_dims: int | None = None, keep: bool = False
) -> tuple[list[Problem], list[tuple[str, Any, Any]], Path]:
    """Every problem of a restoration dataset, one per file and kind: missing partners, unreadable files,
    input/target sizes that differ, NaN/Inf values, channel counts or dimensionality differing between files.

    Returns:
        ``(problems, [(name, input ImageData, target ImageData)] when keep, root)``.
    """
    triples, problems, root = find_restore_pairs(path, self_supervised)
    loaded = []
    first: dict[str, tuple[int, int]] = {}
    for name, ip, tp in triples:
        if ip is None or tp is None:
            continue
        a = _read(ip, spatial_dims, problems, root)
        b = a if tp == ip else _read(tp, spatial_dims, problems, root)
        if a is None or b is None:
            continue
        ti = str(tp.relative_to(root))
        if a.array.shape[1:] != b.array.shape[1:]:
            problems.append(
                Problem(
                    ti,
                    f"size {b.array.shape[1:]} differs from its input's {a.array.shape[1:]}",
                    "give the target the input's size (register or crop them alike)",
                )
            )
            continue
        for role, img, f in (("input", a, str(ip.relative_to(root))), ("target", b, ti)):
            if (bad := Problem.nonfinite(f, img.array, role)) is not None and (role == "input" or b is not a):
                problems.append(bad)
            key = (img.array.shape[0], img.array.ndim - 1)
            if role not in first:
                first[role] = key
            elif first[role] != key:
                problems.append(
                    Problem(
                        f,
                        f"{role} has {key[0]} channel(s), {key[1]}D; the first {role} has {first[role][0]}, "
                        f"{first[role][1]}D",
                        f"give every {role} the same channels and dimensionality",
                    )
                )
        shift = misalignment(a.array, b.array) if b is not a and a.array.ndim == b.array.ndim else None
        if shift is not None:
            log.warning("%s: the target looks shifted by %s px from its input %s (phase correlation); register "
                        "the pair (or crop both alike), or a network learns the shift too", ti,
                        "x".join(map(str, shift)), ip.relative_to(root))  # fmt: skip
        if keep:
            loaded.append((name, a, b))
    return problems, loaded, root


def load_restore_dataset(
    path: str | Path, *, self_supervised: bool = False, spatial_dims: int | None = None
) -> RestoreDataset:
    """Check, then load a restoration dataset into memory.

    Raises:
        DataError: listing every problem found, one per line.

    Shape:
        Each sample's image is ``(C_in, *S)`` and its target ``(C_out, *S)``, float32.
    """
    problems, loaded, root = check_restore_dataset(
        path, self_supervised=self_supervised, spatial_dims=spatial_dims, keep=True
    )
    if problems:
        n = len(problems)
        raise DataError(
            f"restoration dataset {root} has {n} problem{'s' * (n != 1)} (run `unetkit check {root} --task "
            f"restore`):\n  " + "\n  ".join(str(p) for p in problems)
        )
    digest = hashlib.sha256()
    samples = []
    for name, a, b in loaded:
        digest.update(name.encode() + a.array.tobytes()[: 1 << 16] + b.array.tobytes()[: 1 << 16])
        samples.append(
            RestoreSample(
                name=name,
                image=a.array.astype(np.float32),
                target=b.array.astype(np.float32),
                spacing=a.spacing,
                target_dtype=str(b.array.dtype),
            )
        )
    s0 = samples[0]
    return RestoreDataset(
        samples=samples,
        in_channels=int(s0.image.shape[0]),
        out_channels=int(s0.target.shape[0]),
        spatial_dims=s0.spatial_dims,
        target_dtype=s0.target_dtype,
        root=root,
        digest=digest.hexdigest()[:16],
    )


# ---- normalisation: one affine per channel, recorded in the model file and inverted at prediction -----------
PERCENTILES = (1.0, 99.8)  # CARE's


def fit_scaling(arrays: list[np.ndarray], kind: str = "percentile") -> Any:
    """The restoration intensity scaling of ``arrays`` (``(C, *S)`` each), as a dataset-scope
    :class:`~unetkit.data.normalize.Normalizer` of kind ``range``: ``(x - min) / (max - min)`` per channel with
    ``min``/``max`` the pooled 1st/99.8th percentiles (``percentile``, CARE's choice), the dtype's range
    (``range``) or 0/1 (``none``). Never clipped, so :func:`invert_scaling` undoes it exactly.
    """
    from unetkit.data.normalize import Normalizer

    c = arrays[0].shape[0]
    if kind == "none":
        return Normalizer("range", min=[0.0] * c, max=[1.0] * c, source="none")
    if kind == "range":
        dtype = np.dtype(getattr(arrays[0], "dtype", np.float32))
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return Normalizer("range", min=[float(info.min)] * c, max=[float(info.max)] * c, source="range")
    pooled = np.concatenate([a.reshape(c, -1)[:, :: max(1, a[0].size // 200_000)] for a in arrays], axis=1)
    q = PERCENTILES if kind == "percentile" else (0.0, 100.0)
    lo, hi = np.percentile(pooled.astype(np.float64), q, axis=1)
    hi = np.where(hi - lo < 1e-8, lo + 1.0, hi)
    return Normalizer("range", min=lo.tolist(), max=hi.tolist(), source=f"{kind} {q[0]:g}-{q[1]:g}")


def scaling_affine(scaling: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-channel map :func:`invert_scaling` applies, ``x * scale + offset``, as ``(scale, offset)``
    (``(C,)`` float32 each: ``max - min`` and ``min``); ``None`` where ``scaling`` is not a ``range`` map (none
    recorded: the outputs are already in the targets' range).

    >>> [a.tolist() for a in scaling_affine({"kind": "range", "params": {"min": [10], "max": [20]}})]
    [[10.0], [10.0]]
    """
    if not scaling or scaling.get("kind") != "range":
        return None
    lo = np.asarray(scaling["params"]["min"], np.float32).reshape(-1)
    hi = np.asarray(scaling["params"]["max"], np.float32).reshape(-1)
    return hi - lo, lo


def invert_scaling(x: np.ndarray, scaling: dict[str, Any] | None) -> np.ndarray:
    """Undo :func:`fit_scaling` (a ``Normalizer.to_dict()`` of kind ``range``): ``x * (max - min) + min``
    (:func:`scaling_affine`).

    Shape:
        ``(C, *S) -> (C, *S)`` float32.

    >>> invert_scaling(np.array([[0.0, 0.5, 1.0]]), {"kind": "range", "params": {"min": [10], "max": [20]}}).tolist()
    [[10.0, 15.0, 20.0]]
    """
    x = np.asarray(x, np.float32)
    affine = scaling_affine(scaling)
    if affine is None:
        return x
    shape = (-1,) + (1,) * (x.ndim - 1)
    scale, offset = affine
    return x * scale.reshape(shape) + offset.reshape(shape)


def cast_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` in ``dtype``: integers rounded and clipped to the dtype's range, floats as they are."""
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return np.clip(np.rint(x), info.min, info.max).astype(dt)
    return np.asarray(x, dt)
