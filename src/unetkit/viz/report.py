"""A self-contained HTML evaluation report: summary, per-image table and panels (worst cases first).

Pictures are embedded as base64 PNGs, so the single file opens in any browser with no server and can be
mailed or archived as is.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unetkit.utils import atomic_path

__all__ = ["render_report", "write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0;border-top:1px solid #ddd;padding-top:.5em}
figure img{max-width:100%}figcaption{font-size:13px;color:#555}
.muted{color:#777;font-size:12px}
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return html.escape(str(value))


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    panels: Sequence[tuple[str, bytes]] = (),
    *,
    title: str = "unetkit evaluation",
    notes: Sequence[str] = (),
    class_names: Sequence[str] | None = None,
    panel_heading: str = "Panels (worst first): image | truth | prediction | errors",
) -> str:
    """The report's HTML text.

    Args:
        summary: the means over images (``summary.json``); lists are shown per class.
        rows: one dict per image (``metrics.csv``), already in the order to show (worst first).
        panels: ``(caption, png_bytes)`` pictures, in order.
        title: page title.
        notes: lines shown under the title (e.g. what was skipped and why).
        class_names: the name of each class, shown in the per-class table (default: the class index only).
        panel_heading: the heading above the panels (restoration: input | output | target).

    >>> "<table>" in render_report({"dice": 0.5}, [{"name": "a", "dice": 0.5}])
    True
    >>> "1: cell" in render_report({"dice_per_class": [1.0, 0.5]}, [], class_names=["background", "cell"])
    True
    """
    scalars = [{"metric": k, "value": v} for k, v in summary.items() if not isinstance(v, (list, dict))]
    per_class = {k: v for k, v in summary.items() if isinstance(v, list)}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f"<p class='muted'>{html.escape(n)}</p>" for n in notes]
    parts += ["<h2>Summary (mean over images)</h2>", _table(scalars, ["metric", "value"])]
    if per_class:
        n = max(len(v) for v in per_class.values())
        names = list(class_names or [])
        class_rows = [
            {
                "class": f"{k}: {names[k]}" if k < len(names) else str(k),
                **{m: v[k] for m, v in per_class.items() if k < len(v)},
            }
            for k in range(n)
        ]
        parts += ["<h3>Per class</h3>", _table(class_rows, ["class", *per_class])]
    if rows:
        columns = list(dict.fromkeys(c for r in rows for c in r))
        parts += ["<h2>Per image (worst first)</h2>", _table(rows, columns)]
    if panels:
        parts.append(f"<h2>{html.escape(panel_heading)}</h2>")
        for caption, png in panels:
            data = base64.b64encode(png).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    path: str | os.PathLike[str],
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    panels: Sequence[tuple[str, bytes]] = (),
    **kwargs: Any,
) -> Path:
    """Write :func:`render_report` to ``path`` atomically; returns the path."""
    out = Path(path)
    with atomic_path(out) as tmp:
        tmp.write_text(render_report(summary, rows, panels, **kwargs), encoding="utf-8")
    return out
