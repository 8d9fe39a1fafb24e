"""Visualisation: class colours, class and instance overlays, comparison panels, montages, 3D views, curves and
HTML reports.

Everything renders with matplotlib's Agg canvas or plain numpy (no display needed) and writes atomically.
"""

from __future__ import annotations

from unetkit.classes import palette
from unetkit.viz.curves import plot_curves, read_metrics_csv
from unetkit.viz.instances import instance_colours, instance_overlay, save_instance_overlay
from unetkit.viz.montage import montage, save_montage
from unetkit.viz.overlay import colourise, error_map, overlay, paint, to_display
from unetkit.viz.panels import panel_figure, panel_png, save_panel
from unetkit.viz.report import render_report, write_report
from unetkit.viz.volume import max_projection, orthogonal_slices

__all__ = [
    "colourise",
    "error_map",
    "instance_colours",
    "instance_overlay",
    "max_projection",
    "montage",
    "orthogonal_slices",
    "overlay",
    "paint",
    "palette",
    "panel_figure",
    "panel_png",
    "plot_curves",
    "read_metrics_csv",
    "render_report",
    "save_instance_overlay",
    "save_montage",
    "save_panel",
    "to_display",
    "write_report",
]
