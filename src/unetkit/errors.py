"""Typed exceptions raised at the library's boundary.

Every message says what was given, what was expected and how to fix it. The CLI turns these into one
red line and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations


class UnetkitError(Exception):
    """Base class of every error unetkit raises on purpose (bad input, bad file, bad config)."""


class InputShapeError(UnetkitError, ValueError):
    """An input's spatial size is not legal for the network; the message names the nearest legal sizes."""


class ModelFileError(UnetkitError):
    """A model file is missing, truncated, not written by unetkit, or from a newer format version."""


class ConfigError(UnetkitError, ValueError):
    """A configuration value or key is wrong; the message names the field's path."""


class DataError(UnetkitError):
    """An input image, mask or dataset is unreadable or inconsistent; the message names the file."""


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
