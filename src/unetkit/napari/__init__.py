"""The napari plugin (``pip install 'unetkit[napari]'``): segment an image layer with a model file, sample data.

napari discovers it through the ``napari.manifest`` entry point (``napari.yaml`` here). This package imports
without napari; :func:`require_napari` (called by every module that needs it) says what to install.
"""

from __future__ import annotations

from typing import Any


def require_napari() -> Any:
    """Import napari, or raise :class:`~unetkit.errors.MissingExtraError` with the pip command."""
    from unetkit.errors import require

    return require("napari", "napari", "the unetkit napari plugin")


__all__ = ["require_napari"]
