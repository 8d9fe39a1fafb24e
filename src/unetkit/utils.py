"""Small shared helpers: atomic writes of a file (:func:`atomic_path`) or a folder (:func:`atomic_dir`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


def remove_temporaries(path: str | os.PathLike[str], suffix: str | None = None) -> list[Path]:
    """Remove what a killed :func:`atomic_path` / :func:`atomic_dir` of ``path`` left beside it; returns them.

    A SIGKILL skips their clean-up, so the hidden temporary (``.<stem>.<random>.tmp<suffix>``, a file or a
    folder) and a folder's renamed-aside old copy (``.<name>.<hex>.old``) stay behind; ``path`` itself is
    never touched. Call it before writing ``path`` again (nothing else may be writing it then).

    Example:
        >>> import tempfile, pathlib
        >>> dest = pathlib.Path(tempfile.mkdtemp()) / "metrics.csv"
        >>> _ = (dest.parent / ".metrics.abc123.tmp.csv").write_text("half")
        >>> [p.name for p in remove_temporaries(dest)], sorted(dest.parent.iterdir())
        (['.metrics.abc123.tmp.csv'], [])
    """
    import glob

    path = Path(path)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    patterns = (f".{glob.escape(path.stem)}.*.tmp{glob.escape(suffix)}", f".{glob.escape(path.name)}.*.old")
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for pattern in patterns:
        for left in path.parent.glob(pattern):
            if left.is_dir() and not left.is_symlink():
                shutil.rmtree(left, ignore_errors=True)
            else:
                left.unlink(missing_ok=True)
            removed.append(left)
    return removed


def write_json(path: str | os.PathLike[str], data: object) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    import json

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return path


def device_choices() -> list[str]:
    """The ``--device`` values that work on this machine: ``auto``, ``cpu`` and one ``cuda:N`` per GPU.

    >>> device_choices()[:2]
    ['auto', 'cpu']
    """
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(gpus)] if gpus else [])


def check_device(name: str, field: str = "--device") -> str:
    """The one device rule: ``name`` if it names a device of this machine, ``auto`` resolved; else refused.

    Never falls back silently: ``cuda`` on a machine without a GPU, ``cuda:3`` on a 2-GPU machine or a name
    that is no device is a :class:`~unetkit.errors.ConfigError` that lists the choices available here.

    >>> check_device("cpu")
    'cpu'
    """
    from unetkit.errors import ConfigError

    choices = device_choices()
    if name == "auto":
        return "cuda" if "cuda" in choices else "cpu"
    if name in choices:
        return name
    why = "is not a device" if not (name == "cuda" or name.startswith("cuda:")) else "is not on this machine"
    raise ConfigError(f"{field} {name!r} {why}; choose one of: {', '.join(choices)}")


YAML_MAX_BYTES = 4 * 2**20
"""The largest YAML file (config, plan, dataset list) unetkit reads; a real one is a few kilobytes."""
YAML_MAX_DEPTH = 32
"""The deepest nesting of mappings and lists accepted in a YAML file (unetkit's own files nest 3 deep)."""


def read_yaml(path: str | os.PathLike[str], what: str, error: type[Exception] | None = None) -> object:
    """Read a YAML file that a person wrote, refusing what no such file holds, before building it.

    Refused with ``error`` (:class:`~unetkit.errors.ConfigError` by default), the message naming the file and
    never echoing its content: a missing file, more than :data:`YAML_MAX_BYTES`, bytes that are not UTF-8
    text, invalid YAML, aliases (``*name``: the "billion laughs" bomb expands a few lines into gigabytes;
    refused before any node is built) and nesting deeper than :data:`YAML_MAX_DEPTH`. Tags other than YAML's
    standard ones are refused by the safe loader, so no code runs.

    Args:
        path: the file.
        what: what the file is, for the message (``"config file"``).
        error: the exception class to raise; called with one message.
    """
    import yaml

    from unetkit.errors import ConfigError

    err = error or ConfigError
    path = Path(path)
    try:
        if path.stat().st_size > YAML_MAX_BYTES:
            raise err(f"{path}: {what} is over {YAML_MAX_BYTES // 2**20} MiB; fix: give the YAML file unetkit wrote")
        if not path.is_file():
            raise err(f"{path}: {what} is not a regular file; fix: give a YAML file")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise err(f"{path}: {what} not found") from None
    except UnicodeDecodeError:
        raise err(f"{path}: {what} is not UTF-8 text (a binary file?); fix: give a YAML file") from None
    except OSError as exc:
        raise err(f"{path}: {what} cannot be read ({exc.strerror}); fix: check the path") from None

    class _Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                line = self.peek_event().start_mark.line + 1
                raise err(f"{path}: line {line}: YAML aliases (*name) are not accepted; fix: write the value out")
            self.depth += 1
            if self.depth > YAML_MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise err(f"{path}: line {line}: nested deeper than {YAML_MAX_DEPTH} levels; fix: flatten it")
            node = super().compose_node(parent, index)
            self.depth -= 1
            return node

    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise err(f"{path}: {where}not valid YAML ({problem}); fix: correct the {what}") from None
