"""Visualisation: class colours, overlays and plots."""

from __future__ import annotations

from unetkit.viz.palette import palette

__all__ = ["palette"]
