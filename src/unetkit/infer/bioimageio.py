"""bioimage.io model packages (format 0.5): write one from a unetkit model, and read one back for prediction.

The package (a zip) holds ``rdf.yaml``; the weights three ways (TorchScript, ONNX, and a
``pytorch_state_dict`` with the architecture's source file and keyword arguments); a test input and output
(``.npy``); a cover picture of a real prediction; and the unetkit description under ``config.unetkit``, from
which :func:`load_package_model` rebuilds the network (so ``unetkit predict model.zip`` works).

Axes: ``batch, channel, (z,) y, x``; each input space axis is sized ``{min, step}`` from the shape contract;
each output space axis refers to the input's with ``offset = output - input``, which is ``-2 * margin`` for
valid nets (the halo the network crops itself) and 0 for same nets.

Pre-processing mirrors the model file's normalisation (:func:`preprocessing`); post-processing
(:func:`output_head`) is the softmax over the class channel (a 1-logit head: a sigmoid, one foreground
channel), or for a restoration model (``task: restore``) the inverse of the targets' scaling, so the package's
output is the restored image in the targets' intensity range, as ``unetkit predict`` writes it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from unetkit.errors import ConfigError, ModelFileError, require
from unetkit.shapes import ShapeContract
from unetkit.utils import atomic_path

log = logging.getLogger(__name__)

FORMAT_VERSION = "0.5.12"
ARCH_FILE = "unetkit_network.py"
ARCH_CALLABLE = "unetkit_network"
ARCH_SOURCE = '''"""Builds a unetkit network for bioimage.io's pytorch_state_dict weights (needs unetkit installed)."""

from unetkit.models.registry import MODEL_CLASSES, build


def unetkit_network(network_class, **args):
    """The unetkit network ``network_class`` (a registered class name) with constructor ``args``."""
    return build(MODEL_CLASSES[network_class], dict(args), "bioimage.io package")
'''
#: package metadata fields a user may set (``--set key=value`` or a YAML file)
META_FIELDS = ("name", "description", "authors", "license", "cite", "tags", "documentation", "git_repo", "version")
DEFAULT_META: dict[str, Any] = {
    "license": "MIT",
    "authors": [{"name": "unetkit user"}],
    "cite": [
        {
            "text": "Ronneberger, Fischer, Brox: U-Net, Convolutional Networks for Biomedical Image Segmentation",
            "doi": "10.1007/978-3-319-24574-4_28",
        }
    ],
    "tags": ["unetkit", "unet", "segmentation"],
}
#: what a restoration package gets instead of the segmentation defaults (where the user set none)
RESTORE_META: dict[str, Any] = {
    "cite": [
        *DEFAULT_META["cite"],
        {
            "text": "Weigert et al.: Content-aware image restoration: pushing the limits of fluorescence microscopy",
            "doi": "10.1038/s41592-018-0216-7",
        },
    ],
    "tags": ["unetkit", "unet", "restoration", "denoising", "image-to-image"],
}


def _axes(dims: int) -> list[str]:
    return ["z", "y", "x"][3 - dims :]


def _identifier(name: str, i: int) -> str:
    text = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_")
    return text if text and not text[0].isdigit() else f"class_{i}"


def _scale_linear(gain: list[float], offset: list[float]) -> dict[str, Any]:
    """bioimage.io's ``scale_linear`` step, ``gain * x + offset``: one value, or one per channel."""
    if len(gain) == 1:
        return {"id": "scale_linear", "kwargs": {"gain": gain[0], "offset": offset[0]}}
    return {"id": "scale_linear", "kwargs": {"axis": "channel", "gain": gain, "offset": offset}}


def preprocessing(normalization: Mapping[str, Any], dims: int) -> tuple[list[dict[str, Any]], str]:
    """The bioimage.io pre-processing steps for a unetkit normalisation, and a note on how exact they are.

    unetkit's kinds map as: ``zscore`` per image -> ``zero_mean_unit_variance`` over the space axes (per
    channel and sample; bioimage.io divides by ``std + 1e-6`` where unetkit divides by ``std``), ``zscore``
    with dataset statistics -> ``fixed_zero_mean_unit_variance`` per channel; ``percentile`` per image ->
    ``scale_range`` then ``clip`` to [0, 1]; ``percentile`` with dataset values and ``range`` ->
    ``clip`` then ``scale_linear``; ``ct`` -> ``clip`` then ``fixed_zero_mean_unit_variance``; ``none`` ->
    nothing (the input is cast to float32).
    """
    kind = str(normalization.get("kind", "none"))
    p = dict(normalization.get("params") or {})
    space = _axes(dims)

    def per_channel(values: Any) -> list[float]:
        return [float(v) for v in np.atleast_1d(np.asarray(values, np.float64))]

    def linear(lo: list[float], hi: list[float]) -> dict[str, Any]:
        scale = [h - lo_ if abs(h - lo_) >= 1e-8 else 1.0 for lo_, h in zip(lo, hi, strict=True)]
        return _scale_linear([1.0 / s for s in scale], [-lo_ / s for lo_, s in zip(lo, scale, strict=True)])

    def fixed_zscore(mean: list[float], std: list[float]) -> dict[str, Any]:
        std = [max(s, 1e-6) for s in std]
        if len(mean) == 1:
            return {"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": mean[0], "std": std[0]}}
        return {"id": "fixed_zero_mean_unit_variance", "kwargs": {"axis": "channel", "mean": mean, "std": std}}

    def clip(lo: list[float], hi: list[float]) -> tuple[dict[str, Any], str]:
        first = lo
        if len(set(lo)) > 1 or len(set(hi)) > 1:
            return {
                "id": "clip",
                "kwargs": {"min": min(lo), "max": max(hi)},
            }, " (clip bounds: the widest over channels)"
        return {"id": "clip", "kwargs": {"min": first[0], "max": hi[0]}}, ""

    if kind == "none":
        return [], "exact: no normalisation"
    if kind == "zscore" and p.get("scope", "image") == "image":
        step = {"id": "zero_mean_unit_variance", "kwargs": {"axes": space, "eps": 1e-6}}
        return [step], "nearest equivalent: per-image z-score over the space axes, std + 1e-6 (unetkit: std)"
    if kind == "zscore":
        return [fixed_zscore(per_channel(p["mean"]), per_channel(p["std"]))], "exact: fixed per-channel z-score"
    if kind == "percentile" and p.get("scope") == "image":
        steps = [
            {"id": "scale_range", "kwargs": {"axes": space, "min_percentile": float(p.get("lower", 0.5)),
                                             "max_percentile": float(p.get("upper", 99.5)), "eps": 1e-6}},
            {"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}},
        ]  # fmt: skip
        return steps, "nearest equivalent: per-image percentile scaling, then clip to [0, 1] (+1e-6 in the divisor)"
    if kind == "percentile":
        lo, hi = per_channel(p["low"]), per_channel(p["high"])
        step, note = clip(lo, hi)
        return [step, linear(lo, hi)], "exact: clip to the dataset percentiles, then scale to [0, 1]" + note
    if kind == "range":
        lo, hi = per_channel(p["min"]), per_channel(p["max"])
        return [linear(lo, hi)], "exact: fixed (x - min) / (max - min)"
    if kind == "ct":
        step, note = clip(per_channel(p["low"]), per_channel(p["high"]))
        zs = fixed_zscore(per_channel(p["mean"]), per_channel(p["std"]))
        return [step, zs], "exact: clip to the foreground percentiles, then the foreground's z-score" + note
    raise ConfigError(f"normalization kind {kind!r}: no bioimage.io equivalent known")


def output_head(desc: Any, raw: torch.Tensor) -> dict[str, Any]:
    """What the package's output is, per task: the test output's values (from the network's ``raw`` output),
    the post-processing steps that make them, the output's id, channel names, description and value range.

    Segmentation: the softmax over the class channel (a sigmoid for a 1-logit head). Restoration: the
    network's output as it is, then ``scale_linear`` back to the targets' intensity range (the model file's
    ``target_normalization`` inverted: ``x * (max - min) + min`` per channel; nothing where it records none).

    Shape:
        ``raw (1, K, *S)`` -> ``values (1, K, *S)`` float32.
    """
    if desc.task == "restore":
        from unetkit.data.restore import invert_scaling

        scaling = dict(desc.target_normalization or {})
        values = invert_scaling(raw.numpy()[0], scaling)[None]
        post: list[dict[str, Any]] = []
        note = "none (the network's output is the restored image)"
        if scaling.get("kind") == "range":
            lo = [float(v) for v in np.atleast_1d(scaling["params"]["min"])]
            hi = [float(v) for v in np.atleast_1d(scaling["params"]["max"])]
            post = [_scale_linear([h - v for v, h in zip(lo, hi, strict=True)], lo)]
            note = "scale_linear back to the training targets' intensity range (x * (max - min) + min per channel)"
        return {
            "values": values.astype(np.float32), "post": post, "id": "restored",
            "names": [f"channel{i}" for i in range(values.shape[1])],
            "description": "the restored image, in the training targets' intensity range",
            "data": {"type": "float32"}, "note": note,
        }  # fmt: skip
    sigmoid = int(desc.num_classes) == 1
    proba = (torch.sigmoid(raw) if sigmoid else torch.softmax(raw, 1)).numpy().astype(np.float32)
    return {
        "values": proba, "id": "probabilities",
        "post": [{"id": "sigmoid"} if sigmoid else {"id": "softmax", "kwargs": {"axis": "channel"}}],
        "names": ["foreground"] if sigmoid else [_identifier(n, i) for i, n in enumerate(desc.class_names)],
        "description": "foreground probability" if sigmoid else "class probabilities",
        "data": {"type": "float32", "range": [0.0, 1.0]},
        "note": ("sigmoid (foreground probability)" if sigmoid else "softmax over the class channel")
        + "; the label of a pixel is the most probable class",
    }  # fmt: skip


def _test_input(desc: Any, contract: Any, rng: np.random.Generator) -> np.ndarray:
    """A test image of a legal size: smooth blobs plus noise (a real-looking input for the cover)."""
    dims = contract.spatial_dims
    size = contract.round([max(m, 64 if dims == 2 else 24) for m in contract.min_input_size()], "export")
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in size], indexing="ij")
    img = np.zeros(size, np.float64)
    for _ in range(6):
        centre, radius = rng.uniform(0.15, 0.85, dims), rng.uniform(0.06, 0.14)
        img += np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) / (2 * radius**2))
    img = img / img.max() * 200 + rng.normal(20, 8, size)
    chans = np.stack([img] * int(desc.in_channels))
    return np.clip(chans, 0, 255).astype(np.float32)[None]


def _cover_png(image: np.ndarray, output: np.ndarray, colours: list[Any] | None) -> bytes:
    """Image | overlay of the predicted classes (``colours``), or image | restored image (``colours=None``),
    side by side (2:1, as bioimage.io recommends)."""
    from unetkit.infer.predictor import class_labels
    from unetkit.viz import overlay
    from unetkit.viz._save import png_bytes
    from unetkit.viz.overlay import to_display

    img, pr = image[0], output[0]
    if img.ndim == 4:  # 3D: the middle slice
        img, pr = img[:, img.shape[1] // 2], pr[:, pr.shape[1] // 2]
    h, w = pr.shape[1:]
    oy, ox = (img.shape[1] - h) // 2, (img.shape[2] - w) // 2  # valid nets: the output's part of the input
    img = img[:, oy : oy + h, ox : ox + w]
    left = to_display(img)
    if colours is None:
        right = to_display(pr)
    else:
        if pr.shape[0] == 1:
            pr = np.concatenate([1 - pr, pr])
        right = overlay(img, class_labels(pr), colours=colours)
    return png_bytes(np.concatenate([left[..., :3], right[..., :3]], axis=1))


def package_metadata(overrides: Mapping[str, Any] | None, meta_file: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The package's authors, licence, citation, ...: the defaults, then a YAML file, then ``overrides``.

    Raises:
        ConfigError: an unknown field, or a file that is not a YAML mapping.
    """
    meta = dict(DEFAULT_META)
    sources: list[tuple[str, Mapping[str, Any]]] = []
    if meta_file is not None:
        try:
            loaded = yaml.safe_load(Path(meta_file).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{meta_file}: cannot read the package metadata ({exc}); give a YAML mapping") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{meta_file}: the package metadata must be a YAML mapping (e.g. 'license: MIT')")
        sources.append((str(meta_file), loaded))
    sources.append(("--set", dict(overrides or {})))
    for where, values in sources:
        unknown = sorted(set(values) - set(META_FIELDS))
        if unknown:
            raise ConfigError(f"{where}: unknown package field(s) {unknown}; known: {', '.join(META_FIELDS)}")
        meta.update(values)
    for key in ("authors", "cite"):  # '--set authors=Ada Lovelace' -> one author; a YAML list stays as it is
        if isinstance(meta.get(key), str):
            meta[key] = (
                [{"name": meta[key]}] if key == "authors" else [{"text": meta[key], "url": "https://example.org"}]
            )
    if isinstance(meta.get("tags"), str):
        meta["tags"] = [t.strip() for t in str(meta["tags"]).split(",") if t.strip()]
    return meta


def package_bytes(
    model: torch.nn.Module,
    *,
    meta: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> bytes:
    """The bioimage.io package (zip bytes) of a unetkit network (``model.description`` set, e.g. loaded).

    Shape:
        test input ``(1, C, *S)`` raw intensities; test output ``(1, K, *model.output_shape(S))``: class
        probabilities, or a restoration model's restored image (:func:`output_head`).
    """
    from unetkit.infer.export import _description_json, onnx_bytes, torchscript_module
    from unetkit.modelfile import ModelDescription, describe

    desc: ModelDescription = getattr(model, "description", None) or describe(model)  # type: ignore[arg-type]
    contract: ShapeContract = model.contract  # type: ignore[assignment]
    dims = int(desc.spatial_dims)
    space = _axes(dims)
    meta = dict(meta) if meta is not None else package_metadata(None, None)
    restore = desc.task == "restore"
    if restore:  # the restoration citation and tags, where the user kept the segmentation defaults
        meta.update({k: v for k, v in RESTORE_META.items() if meta.get(k) == DEFAULT_META[k]})
    model = model.cpu().eval()

    rng = np.random.default_rng(seed)
    x = _test_input(desc, contract, rng)
    from unetkit.data.normalize import Normalizer

    normed = Normalizer.from_dict(desc.normalization.model_dump())(x[0])[None]
    with torch.no_grad():
        t = model(torch.from_numpy(np.ascontiguousarray(normed, np.float32)))
    head = output_head(desc, t)
    proba = head["values"]

    pre, pre_note = preprocessing(desc.normalization.model_dump(), dims)
    offsets = [int(o) - int(i) for i, o in zip(x.shape[2:], proba.shape[2:], strict=True)]
    steps, mins = contract.steps(), contract.min_input_size()
    arch_kwargs = {"network_class": desc.architecture.cls, **desc.architecture.args}

    ts_buf = io.BytesIO()
    torch.jit.save(torchscript_module(model), ts_buf, _extra_files={"unetkit": _description_json(model)})
    sd_buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, sd_buf)
    npy = {}
    for key, arr in (("test_input.npy", x), ("test_output.npy", proba)):
        b = io.BytesIO()
        np.save(b, arr)
        npy[key] = b.getvalue()
    cover = _cover_png(x, proba, None if restore else [list(c) for c in desc.class_colours])
    what = f"restoration to {proba.shape[1]} output channel(s)" if restore else f"classes {', '.join(desc.class_names)}"
    readme = (
        f"# {meta.get('name') or 'unetkit model'}\n\nA {dims}D {desc.architecture.cls} exported by unetkit "
        f"{desc.unetkit_version}: {desc.in_channels} input channel(s), {what}.\n\n"
        f"Pre-processing ({desc.normalization.kind}): {pre_note}.\n\n"
        f"Post-processing: {head['note']}.\n\n"
        f"Input sizes: per space axis `min + n * step` ({dict(zip(space, mins, strict=True))} + n * "
        f"{dict(zip(space, steps, strict=True))}); the output is smaller by {[-o for o in offsets]} "
        "(the valid network's halo; 0 for same padding).\n"
    )
    rdf: dict[str, Any] = {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": meta.get("name") or f"unetkit {desc.architecture.preset or desc.architecture.cls} {dims}D",
        "description": meta.get("description")
        or (
            f"{dims}D U-Net restoration ({desc.in_channels} -> {proba.shape[1]} channels), exported by unetkit"
            if restore
            else f"{dims}D U-Net segmentation ({', '.join(desc.class_names)}), exported by unetkit"
        ),
        "authors": meta["authors"],
        "cite": meta["cite"],
        "license": meta["license"],
        "tags": list(meta.get("tags") or []),
        "documentation": {"source": "README.md"},
        "covers": [{"source": "cover.png"}],
        "inputs": [
            {
                "id": "raw",
                "description": "the raw image",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": [f"channel{i}" for i in range(desc.in_channels)]},
                    *[
                        {"type": "space", "id": a, "size": {"min": int(m), "step": int(s)}}
                        for a, m, s in zip(space, mins, steps, strict=True)
                    ],
                ],
                "test_tensor": {"source": "test_input.npy"},
                "data": {"type": "float32"},
                "preprocessing": [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}, *pre],
            }
        ],
        "outputs": [
            {
                "id": head["id"],
                "description": head["description"],
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": head["names"]},
                    *[
                        {"type": "space", "id": a, "size": {"tensor_id": "raw", "axis_id": a, "offset": o}}
                        for a, o in zip(space, offsets, strict=True)
                    ],
                ],
                "test_tensor": {"source": "test_output.npy"},
                "data": head["data"],
                "postprocessing": head["post"],
            }
        ],
        "weights": {
            "pytorch_state_dict": {
                "source": "weights.pt",
                "architecture": {"source": ARCH_FILE, "callable": ARCH_CALLABLE, "kwargs": arch_kwargs},
                "pytorch_version": torch.__version__.split("+")[0],
            },
            "torchscript": {
                "source": "weights_torchscript.pt",
                "pytorch_version": torch.__version__.split("+")[0],
                "parent": "pytorch_state_dict",
            },
            "onnx": {"source": "weights.onnx", "opset_version": 17, "parent": "pytorch_state_dict"},
        },
        "config": {"unetkit": json.loads(desc.model_dump_json(by_alias=True))},
    }
    for key in ("git_repo", "version"):
        if meta.get(key):
            rdf[key] = meta[key]
    files = {
        "rdf.yaml": yaml.safe_dump(rdf, sort_keys=False).encode(),
        "README.md": readme.encode(),
        "cover.png": cover,
        ARCH_FILE: ARCH_SOURCE.encode(),
        "weights.pt": sd_buf.getvalue(),
        "weights_torchscript.pt": ts_buf.getvalue(),
        "weights.onnx": onnx_bytes(model),
        **npy,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def export_bioimageio(
    model: torch.nn.Module, path: str | os.PathLike[str], *, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write :func:`package_bytes` to ``path`` (a ``.zip``) atomically and return the path."""
    path = Path(path)
    data = package_bytes(model, meta=meta)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def validate_package(path: str | os.PathLike[str]) -> Any:
    """Validate a package with ``bioimageio.spec`` (format 0.5); returns its validation summary.

    Raises:
        ModelFileError: the package does not validate (the message lists the errors).
    """
    spec: Any = require("bioimageio.spec", "bioimageio", "validating a bioimage.io package")
    descr = spec.load_description(str(path), perform_io_checks=True)
    summary = descr.validation_summary
    if summary.status not in ("passed", "valid-format"):
        errors = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in summary.errors) or summary.status
        raise ModelFileError(f"{path}: not a valid bioimage.io package: {errors}")
    return summary


def is_package(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a bioimage.io package (a zip with ``rdf.yaml``, or the ``rdf.yaml`` itself)."""
    p = Path(path)
    if p.name in ("rdf.yaml", "bioimageio.yaml"):
        return True
    return p.suffix.lower() == ".zip" and zipfile.is_zipfile(p)


def _package_file(path: Path, name: str) -> bytes:
    if path.suffix.lower() != ".zip":
        return (path.parent / name).read_bytes()
    with zipfile.ZipFile(path) as z:
        try:
            return z.read(name)
        except KeyError:
            raise ModelFileError(f"{path}: the package has no {name!r}") from None


def load_package_model(path: str | os.PathLike[str], device: str = "cpu") -> torch.nn.Module:
    """Rebuild the unetkit network of a bioimage.io package written by unetkit (``model.description`` set).

    The description comes from ``config.unetkit`` of ``rdf.yaml``, the weights from its ``pytorch_state_dict``
    (read with ``torch.load(weights_only=True)``: tensors only, nothing else is unpickled).

    Raises:
        ModelFileError: not a unetkit package, or weights that do not fit.
    """
    from pydantic import ValidationError

    from unetkit.errors import UnetkitError
    from unetkit.modelfile import ModelDescription
    from unetkit.models.registry import MODEL_CLASSES, build

    p = Path(path)
    try:
        rdf = yaml.safe_load(_package_file(p, "rdf.yaml" if p.suffix.lower() == ".zip" else p.name))
    except (OSError, yaml.YAMLError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{p}: cannot read the bioimage.io package ({exc})") from None
    raw = (rdf.get("config") or {}).get("unetkit") if isinstance(rdf, dict) else None
    if raw is None:
        raise ModelFileError(
            f"{p}: a bioimage.io package not written by unetkit (no config.unetkit); unetkit predicts with "
            "packages from `unetkit export --format bioimageio`"
        )
    try:
        desc = ModelDescription.model_validate(raw)
    except ValidationError as exc:
        raise ModelFileError(f"{p}: config.unetkit is malformed: {exc}") from None
    cls = MODEL_CLASSES.get(desc.architecture.cls)
    if cls is None:
        raise ModelFileError(f"{p}: names the network class {desc.architecture.cls!r}, unknown here; upgrade unetkit")
    try:
        model = build(cls, dict(desc.architecture.args), str(p))
    except UnetkitError as exc:
        raise ModelFileError(str(exc)) from None
    source = rdf["weights"]["pytorch_state_dict"]["source"]
    try:
        state = torch.load(io.BytesIO(_package_file(p, source)), map_location=device, weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, EOFError) as exc:
        raise ModelFileError(f"{p}: the weights do not fit the described network: {exc}") from None
    model.preset = desc.architecture.preset  # type: ignore[assignment]
    model.description = desc  # type: ignore[assignment]
    return model.to(device).eval()
