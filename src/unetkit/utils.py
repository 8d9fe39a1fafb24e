"""Small shared helpers: atomic writes of a file (:func:`atomic_path`) or a folder (:func:`atomic_dir`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Whatever was at ``path`` before stays intact if the block raises or the process is killed.
    The temporary file keeps ``path``'s suffix (or ``suffix``) so writers that look at it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would (0666 - umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            if tmp_path.is_dir():
                shutil.rmtree(tmp_path, ignore_errors=True)
            else:
                tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it takes ``path``'s place.

    The one way unetkit replaces a folder (a ``.zarr`` store): ``os.replace`` cannot move a folder onto a
    non-empty one, so whatever is at ``path`` (folder or file) is first renamed aside, the new folder is
    renamed into place, and only then is the old one deleted. If the block raises, or the rename fails,
    ``path`` is left as it was. The temporary folder keeps ``path``'s suffix (or ``suffix``).

    Example:
        >>> import tempfile, pathlib
        >>> dest = pathlib.Path(tempfile.mkdtemp()) / "a.zarr"
        >>> for text in ("old", "new"):
        ...     with atomic_dir(dest) as tmp:
        ...         _ = (tmp / "data").write_text(text)
        >>> (dest / "data").read_text(), sorted(p.name for p in dest.parent.iterdir())
        ('new', ['a.zarr'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent))
    umask = os.umask(0)  # mkdtemp makes the folder private (0700); give it what a plain mkdir would
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        old = None
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike[str], data: object) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    import json

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return path
