"""Typed exceptions raised at the library's boundary.

Every message says what was given, what was expected and how to fix it. The CLI turns these into one
red line and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations

import os
from typing import Any


class UnetkitError(Exception):
    """Base class of every error unetkit raises on purpose (bad input, bad file, bad config)."""


class InputShapeError(UnetkitError, ValueError):
    """An input's spatial size is not legal for the network; the message names the nearest legal sizes."""


class ModelFileError(UnetkitError):
    """A model file is missing, truncated, not written by unetkit, or from a newer format version."""


class ConfigError(UnetkitError, ValueError):
    """A configuration value or key is wrong; the message names the field's path."""


class DataError(UnetkitError):
    """An input image, mask or dataset is unreadable or inconsistent; the message names the file.

    The parts are kept as fields, so callers that list problems (``unetkit check``) need not take the
    message apart: ``problem`` (what is wrong), ``file`` (where, or ``None``) and ``fix`` (how to fix it,
    or ``None``). ``str()`` composes the one-line message ``"<file>: <problem>; fix: <fix>"``.

    >>> str(DataError("mask is empty", file="masks/a.png", fix="re-export it"))
    'masks/a.png: mask is empty; fix: re-export it'
    """

    def __init__(self, problem: str, *, file: str | os.PathLike[str] | None = None, fix: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.file = os.fspath(file) if file is not None else None
        self.fix = fix

    def __str__(self) -> str:
        text = f"{self.file}: {self.problem}" if self.file else self.problem
        return f"{text}; fix: {self.fix}" if self.fix else text

    def __reduce__(self) -> tuple[Any, ...]:  # keep the fields across processes (pickling uses args only)
        return (_rebuild_data_error, (type(self), self.problem, self.file, self.fix))


def _rebuild_data_error(cls: type[DataError], problem: str, file: str | None, fix: str | None) -> DataError:
    return cls(problem, file=file, fix=fix)


class MissingExtraError(UnetkitError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


def require(module: str, extra: str, purpose: str) -> object:
    """Import an optional dependency or fail with the pip command that installs it.

    Args:
        module: importable module name, e.g. ``"onnxruntime"``.
        extra: the unetkit extra that provides it, e.g. ``"onnx"``.
        purpose: what the caller wanted to do, for the message.

    Returns:
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the optional package '{module}', which is not installed. "
            f"Install it with: pip install 'unetkit[{extra}]'"
        ) from exc
