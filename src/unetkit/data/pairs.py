"""Find a dataset's image/mask pairs: a folder with ``images/`` and ``masks/``, or a CSV/YAML list file.

Folder layout: files in ``images/`` and ``masks/`` (or ``labels/``), subfolders allowed, pair up by their
relative path without the suffix, so ``images/a/01.tif`` pairs with ``masks/a/01.png``.

List file: a CSV with ``image`` and ``mask`` columns (or two columns without a header), or a YAML list of
``{image: ..., mask: ...}`` mappings or ``[image, mask]`` pairs (optionally under a ``samples:`` key).
Relative paths are resolved against the list file's folder.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io import IMAGE_SUFFIXES, is_image_file, strip_suffix
from unetkit.errors import DataError
from unetkit.utils import read_yaml

LIST_SUFFIXES = (".csv", ".yaml", ".yml")
MASK_DIRS = ("masks", "labels")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, as data: the file, what is wrong, how to fix it."""

    file: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem} (fix: {self.fix})"

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "problem": self.problem, "fix": self.fix}

    @classmethod
    def from_error(
        cls, exc: DataError, file: str, default_fix: str, read_path: str | os.PathLike[str] | None = None
    ) -> Problem:
        """The problem a reader's :class:`~unetkit.errors.DataError` describes, reported under ``file``.

        The error's ``problem`` and ``fix`` fields are used as they are (``default_fix`` when it has none).
        A reader that sets no ``file`` field names the path it read (``read_path``) at the start of its
        message; that name is dropped, since ``file`` says it already.
        """
        problem = exc.problem
        if exc.file is None and read_path is not None:
            problem = problem.removeprefix(f"{os.fspath(read_path)}: ")
        return cls(file, problem, exc.fix or default_fix)

    @classmethod
    def nonfinite(cls, file: str, array: Any, what: str = "image") -> Problem | None:
        """The problem of an image holding NaN or infinite values (``None`` where it holds none): they would
        turn every loss and normalisation they reach into NaN.

        >>> print(Problem.nonfinite("a.tif", np.array([1.0, np.nan])))
        a.tif: image holds 1 NaN/Inf values (fix: replace them (e.g. with 0) and re-save)
        """
        arr = np.asarray(array)
        if arr.dtype.kind not in "fc" or np.isfinite(arr).all():
            return None
        n = int((~np.isfinite(arr)).sum())
        return cls(file, f"{what} holds {n} NaN/Inf values", "replace them (e.g. with 0) and re-save")


@dataclass(frozen=True)
class Pair:
    """An image and its mask; either may be missing (reported as a problem)."""

    name: str
    image: Path | None
    mask: Path | None


def find_pairs(path: str | Path) -> tuple[list[Pair], list[Problem], Path]:
    """Discover the pairs of a dataset folder or list file.

    Returns:
        ``(pairs, problems, root)``: pairs sorted by name (incomplete ones included, each also reported in
        ``problems``), and the root that names are relative to.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("dataset not found", file=path, fix="give a folder with images/ and masks/ or a CSV/YAML list")
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        pairs, problems = _from_list(path)
        return pairs, problems, path.parent
    images_dir = path / "images"
    masks_dir = next((path / d for d in MASK_DIRS if (path / d).is_dir()), None)
    if not path.is_dir() or not images_dir.is_dir() or masks_dir is None:
        if path.is_dir() and (path / "targets").is_dir():  # inputs/ (or images/) + targets/: a restoration
            raise DataError(
                "a restoration dataset (targets/ beside the inputs), not a segmentation one (images/ + masks/)",
                file=path,
                fix="train, plan or check it with --task restore (Python: task='restore'); a segmentation dataset "
                "holds images/ and masks/",
            )
        raise DataError(
            "not a dataset",
            file=path,
            fix="give a folder holding images/ and masks/ (files sharing a name), or a CSV/YAML file listing "
            "image,mask pairs",
        )
    problems = []
    images = _index(images_dir, path, problems)
    masks = _mask_names(_index(masks_dir, path, problems), images)
    pairs = []
    for name in sorted(set(images) | set(masks)):
        img, msk = images.get(name), masks.get(name)
        if msk is None and img is not None:
            problems.append(
                Problem(_rel(img, path), "image has no mask", f"add {masks_dir.name}/{name}.<ext> or remove the image")
            )
        if img is None and msk is not None:
            problems.append(
                Problem(_rel(msk, path), "mask has no image", f"add images/{name}.<ext> or remove the mask")
            )
        pairs.append(Pair(name, img, msk))
    return pairs, problems, path


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _index(folder: Path, root: Path, problems: list[Problem]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    stack = [folder]
    while stack:
        for p in sorted(stack.pop().iterdir()):
            if p.name.startswith("."):
                continue
            if p.is_symlink() and (p.is_dir() or not p.exists()):
                problems.append(
                    Problem(
                        _rel(p, root),
                        "a symbolic link to a folder (or a broken or looping link); not followed",
                        "copy the files into the dataset or remove the link",
                    )
                )
                continue
            if p.is_dir() and not p.name.lower().endswith(".zarr"):
                stack.append(p)
                continue
            if not p.is_dir() and not p.is_file():
                problems.append(Problem(_rel(p, root), "not a regular file (a pipe or device); not read", "remove it"))
                continue
            if not is_image_file(p):
                problems.append(
                    Problem(
                        _rel(p, root),
                        "not an image format unetkit reads",
                        f"convert it to one of {', '.join(IMAGE_SUFFIXES)} or move it out of the dataset",
                    )
                )
                continue
            key = strip_suffix(p.relative_to(folder).as_posix())
            if key in found:
                problems.append(
                    Problem(_rel(p, root), f"same name as {_rel(found[key], root)}", "keep one file per name")
                )
                continue
            found[key] = p
    return found


MASK_NAME_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_seg")
"""Endings of a mask's name that its image's name lacks: ``masks/a_mask.png`` pairs with ``images/a.tif``."""


def _mask_names(masks: dict[str, Path], images: dict[str, Path]) -> dict[str, Path]:
    """Masks keyed by their image's name: a mask named ``<stem>_mask`` (``_masks``, ``_label``, ``_labels``,
    ``_seg``) is ``<stem>``'s when there is an image ``<stem>`` and no image of the mask's own name."""
    out: dict[str, Path] = {}
    for key, path in masks.items():
        if key not in images:
            for end in MASK_NAME_SUFFIXES:
                if key.endswith(end) and key[: -len(end)] in images and key[: -len(end)] not in masks:
                    key = key[: -len(end)]
                    break
        out[key] = path
    return out


def _from_list(path: Path) -> tuple[list[Pair], list[Problem]]:
    rows = _read_list(path)
    base = path.parent
    pairs: list[Pair] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, (img, msk) in enumerate(rows, start=1):
        if not img or not msk:
            problems.append(Problem(f"{path.name} row {i}", "row lacks an image or a mask", "give both paths"))
            continue
        image, mask = (p if p.is_absolute() else base / p for p in (Path(img), Path(msk)))
        name = strip_suffix(Path(img).as_posix())
        if name in seen:
            name = f"{name}#{i}"
        seen.add(name)
        for p in (image, mask):
            if not p.exists():
                problems.append(Problem(f"{path.name} row {i}", f"{p} does not exist", "fix the path in the list"))
            elif not (p.is_file() or p.is_dir()):
                problems.append(Problem(f"{path.name} row {i}", f"{p} is not a regular file; not read", "fix the path"))
        pairs.append(Pair(name, *(p if p.is_file() or p.is_dir() else None for p in (image, mask))))
    if not rows:
        problems.append(Problem(path.name, "the list holds no image/mask pairs", "add rows `image,mask`"))
    return pairs, problems


def _read_list(path: Path) -> list[tuple[str, str]]:
    if path.suffix.lower() == ".csv":
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"not UTF-8 text (byte {exc.start})",
                file=path,
                fix="save the list as UTF-8 (e.g. iconv -f latin1 -t utf-8), or rename the files to ASCII names",
            ) from None
        rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        if rows and {c.strip().lower() for c in rows[0]} >= {"image", "mask"}:
            header = [c.strip().lower() for c in rows[0]]
            i, m = header.index("image"), header.index("mask")
            return [(_cell(r, i), _cell(r, m)) for r in rows[1:]]
        return [(_cell(r, 0), _cell(r, 1)) for r in rows]
    data: Any = read_yaml(path, "dataset list", DataError)
    if isinstance(data, dict):
        data = data.get("samples", data.get("pairs"))
    if not isinstance(data, list):
        raise DataError(
            "expected a YAML list of {image: ..., mask: ...} entries",
            file=path,
            fix="write such a list (or under `samples:`)",
        )
    out = []
    for entry in data:
        if isinstance(entry, dict):
            out.append((str(entry.get("image") or ""), str(entry.get("mask") or "")))
        elif isinstance(entry, (list, tuple)) and len(entry) == 2:
            out.append((str(entry[0]), str(entry[1])))
        else:
            out.append(("", ""))
    return out


def _cell(row: list[str], i: int) -> str:
    return row[i].strip() if i < len(row) else ""
