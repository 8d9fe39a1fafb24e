"""A self-contained HTML evaluation report: summary, sortable per-image table, pictures, the training run's
curves and validation pictures, and provenance.

One file that opens from ``file://`` in any browser, with no server and nothing fetched: pictures are
embedded as JPEG thumbnails whose sizes together stay under :data:`IMAGE_BUDGET_BYTES` (a dozen panels and
the run's pictures come to about 1.2 MB; clicking a picture shows it at its embedded full width), the tables
scroll inside their box at laptop widths, per-class columns are folded, and a small script (no libraries)
sorts the per-image table by any column (click a header, or open the page with ``#sort=COLUMN:asc|desc``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import os
import platform
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from unetkit._version import __version__
from unetkit.utils import atomic_path

__all__ = [
    "IMAGE_BUDGET_BYTES",
    "metric_direction",
    "provenance",
    "render_report",
    "run_pictures",
    "thumbnail",
    "write_report",
]

IMAGE_BUDGET_BYTES = 1_200_000
"""All embedded pictures of one report together, in bytes (before base64, which adds a third)."""

MAX_SIDE = 1600
"""Longest side of an embedded picture, in pixels."""

_HIGHER = ("dice", "iou", "jaccard", "precision", "recall", "f1", "accuracy", "ap", "psnr", "ssim", "pq", "sq", "rq")
_LOWER = ("loss", "error", "hd", "hausdorff", "assd", "surface", "nrmse", "rmse", "mae", "fp", "fn", "warping")
_UNITS = {"hd95": "px (or spacing units)", "assd": "px (or spacing units)", "psnr": "dB", "seconds": "s"}


def metric_direction(name: str) -> str:
    """``"higher"``, ``"lower"`` (is better) or ``""`` for a metric's column name.

    >>> metric_direction("dice_c1"), metric_direction("rand_error"), metric_direction("hd95"), metric_direction("name")
    ('higher', 'lower', 'lower', '')
    """
    words = re.split(r"[_\W]+", name.lower())
    if any(w.startswith(_LOWER) for w in words):
        return "lower"
    if any(w in _HIGHER or w.startswith(("dice", "iou", "psnr", "ssim")) for w in words):
        return "higher"
    return ""


def _unit(name: str) -> str:
    """The unit of a metric's column name, from the first word that has one (``input_psnr``, ``psnr_gain``: dB).

    >>> _unit("hd95_c1"), _unit("input_psnr"), _unit("psnr_gain"), _unit("dice")
    ('px (or spacing units)', 'dB', 'dB', '')
    """
    return next((_UNITS[w] for w in re.split(r"[_\W]+", name.lower()) if w in _UNITS), "")


_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em 1.5em;color:#222;max-width:1240px}
nav a{margin-right:1em;font-size:14px}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f0f0f0;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
th button{all:unset;cursor:pointer}th button:focus{outline:2px solid #88f}
th[aria-sort=ascending] button::after{content:" \\25B2"}th[aria-sort=descending] button::after{content:" \\25BC"}
.dir{color:#777;font-weight:normal;font-size:11px}
body:not(.details) .detail{display:none}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}
figure{margin:0;border:1px solid #ddd;padding:6px;background:#fafafa}
figure img{width:100%;height:auto;cursor:zoom-in;display:block}
figure.zoomed{grid-column:1/-1}figure.zoomed img{cursor:zoom-out}
figcaption{font-size:13px;color:#555;margin-top:4px}
.muted{color:#777;font-size:12px}
table.wrap td{white-space:normal;overflow-wrap:anywhere;text-align:left}
"""

_JS = """
(function(){
  var body=document.body;
  window.addEventListener('error',function(e){body.setAttribute('data-js-error',String(e.message||e));});
  function key(td){var v=td.getAttribute('data-v');var n=parseFloat(v);
    return (v!==null&&v!==''&&!isNaN(n))?[0,n]:[v===null||v===''?2:1,td.textContent];}
  function sortBy(table,col,dir){
    var tb=table.tBodies[0],rows=Array.prototype.slice.call(tb.rows);
    rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
      if(x[0]!==y[0])return x[0]-y[0];var c=x[1]<y[1]?-1:x[1]>y[1]?1:0;return dir==='asc'?c:-c;});
    rows.forEach(function(r){tb.appendChild(r);});
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
      if(i===col)th.setAttribute('aria-sort',dir==='asc'?'ascending':'descending');
      else th.removeAttribute('aria-sort');});
    table.setAttribute('data-sorted',table.tHead.rows[0].cells[col].getAttribute('data-col')+':'+dir);
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
      var b=th.querySelector('button');if(!b)return;
      b.addEventListener('click',function(){
        var cur=th.getAttribute('aria-sort');var best=th.getAttribute('data-dir')==='lower'?'asc':'desc';
        sortBy(table,i,cur?(cur==='ascending'?'desc':'asc'):best);});});
  });
  var m=/#sort=([^:]+):(asc|desc)/.exec(decodeURIComponent(location.hash||''));
  var t=document.getElementById('per-image');
  if(m&&t){Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){
    if(th.getAttribute('data-col')===m[1])sortBy(t,i,m[2]);});}
  var box=document.getElementById('show-details');
  if(box){box.addEventListener('change',function(){body.classList.toggle('details',box.checked);});}
  Array.prototype.forEach.call(document.querySelectorAll('figure img'),function(img){
    img.addEventListener('click',function(){img.parentNode.classList.toggle('zoomed');});});
  function check(){var imgs=document.images,ok=0;
    for(var i=0;imgs.length>i;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0)ok++;}
    body.setAttribute('data-images',ok+'/'+imgs.length);
    body.setAttribute('data-overflow',String(document.documentElement.scrollWidth>window.innerWidth));
    body.setAttribute('data-ready','1');}
  if(document.readyState==='complete')check();else window.addEventListener('load',check);
})();
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return html.escape(str(value))


def _sort_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return "" if isinstance(value, float) and not math.isfinite(value) else repr(float(value))
    return html.escape(str(value), quote=True)


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<div class='scroll'><table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _is_detail(column: str) -> bool:
    """Per-class columns (``dice_c1``, ``hd95_c2``): folded until asked for."""
    return re.search(r"_c\d+$", column) is not None


def _sortable_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    heads = []
    for c in columns:
        d = metric_direction(c)
        arrow = {"higher": " ↑", "lower": " ↓"}.get(d, "")
        title = f"{d} is better" if d else "click to sort"
        cls = " class='detail'" if _is_detail(c) else ""
        heads.append(
            f"<th{cls} data-col='{html.escape(c, quote=True)}' data-dir='{d}' title='{title}'>"
            f"<button type='button'>{html.escape(c)}<span class='dir'>{arrow}</span></button></th>"
        )
    body = []
    for r in rows:
        cells = []
        for c in columns:
            cls = " class='detail'" if _is_detail(c) else ""
            v = r.get(c, "")
            cells.append(f"<td{cls} data-v='{_sort_value(v)}'>{_fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        "<div class='scroll'><table id='per-image' class='sortable'>"
        f"<thead><tr>{''.join(heads)}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def thumbnail(png: bytes, max_bytes: int, max_side: int = MAX_SIDE) -> bytes:
    """A picture re-encoded as JPEG of at most ``max_bytes`` (shrunk step by step; never above ``max_side``).

    >>> import numpy as np
    >>> from unetkit.viz._save import png_bytes
    >>> len(thumbnail(png_bytes(np.zeros((900, 900, 3), np.uint8)), 20_000)) <= 20_000
    True
    """
    from PIL import Image

    with Image.open(io.BytesIO(png)) as src:
        im = src.convert("RGB")
    data = b""
    for quality in (85, 70):
        scale = min(1.0, max_side / max(im.size))
        while True:
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            buf = io.BytesIO()
            im.resize(size, Image.Resampling.LANCZOS).save(buf, format="JPEG", quality=quality, optimize=True)
            data = buf.getvalue()
            if len(data) <= max_bytes:
                return data
            if max(size) <= 64:
                break
            scale *= 0.8
    return data


def _figures(pictures: Sequence[tuple[str, bytes]], share: int) -> str:
    out = []
    for caption, png in pictures:
        data = base64.b64encode(thumbnail(png, share)).decode("ascii")
        cap = html.escape(caption)
        out.append(
            f"<figure><img alt='{cap}' title='click: full width' src='data:image/jpeg;base64,{data}'>"
            f"<figcaption>{cap}</figcaption></figure>"
        )
    return "<div class='grid'>" + "".join(out) + "</div>"


def file_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file (streamed), as ``sha256:`` and its first 16 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def folder_digest(path: str | os.PathLike[str], head: int = 1 << 20) -> str:
    """A digest of a folder's files: their relative names, sizes and first ``head`` bytes (a quick identity,
    not a full hash); ``sha256:`` and 16 hex digits."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        h.update(f"{f.relative_to(root)}\0{f.stat().st_size}\0".encode("utf-8", "surrogateescape"))
        with f.open("rb") as fh:
            h.update(fh.read(head))
    return "sha256:" + h.hexdigest()[:16]


def provenance(
    model: str | os.PathLike[str] | None = None, data: str | os.PathLike[str] | None = None, **extra: Any
) -> dict[str, str]:
    """Where a report comes from: unetkit version, the command line, date (UTC), machine, the model file
    and its digest, the data folder and its digest, and any ``extra`` fields."""
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    info = {
        "unetkit": __version__,
        "command": shlex.join(argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({platform.system()} {platform.machine()}, Python {platform.python_version()})",
    }
    if model is not None and Path(model).is_file():
        info["model"] = f"{model} ({file_digest(model)})"
    if data is not None and Path(data).is_dir():
        info["data"] = f"{data} ({folder_digest(data)})"
    info.update({k: str(v) for k, v in extra.items()})
    return info


def run_pictures(run_dir: str | os.PathLike[str]) -> list[tuple[str, bytes]]:
    """A training run folder's ``curves.png`` and latest validation picture, when present."""
    run = Path(run_dir)
    found = []
    for name, caption in (("curves.png", "training curves"), ("val_pictures/latest.png", "validation pictures")):
        p = run / name
        if p.is_file():
            found.append((f"{caption} ({p})", p.read_bytes()))
    return found


def render_report(
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    panels: Sequence[tuple[str, bytes]] = (),
    *,
    title: str = "unetkit evaluation",
    notes: Sequence[str] = (),
    class_names: Sequence[str] | None = None,
    panel_heading: str = "Panels (worst first): image | truth | prediction | errors",
    info: Mapping[str, str] | None = None,
    run: Sequence[tuple[str, bytes]] = (),
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
        info: provenance lines (:func:`provenance`; default: computed now, without model and data).
        run: the training run's pictures (:func:`run_pictures`).

    The pictures together take at most :data:`IMAGE_BUDGET_BYTES`.

    >>> "<table" in render_report({"dice": 0.5}, [{"name": "a", "dice": 0.5}])
    True
    >>> "1: cell" in render_report({"dice_per_class": [1.0, 0.5]}, [], class_names=["background", "cell"])
    True
    """
    scalars = [
        {"metric": k, "value": v, "better": metric_direction(k), "unit": _unit(k)}
        for k, v in summary.items()
        if not isinstance(v, (list, dict))
    ]
    per_class = {k: v for k, v in summary.items() if isinstance(v, list)}
    pictures = len(panels) + len(run)
    share = IMAGE_BUDGET_BYTES // max(pictures, 1)
    sections = [("summary", "Summary")]
    if rows:
        sections.append(("images", "Per image"))
    if panels:
        sections.append(("panels", "Panels"))
    if run:
        sections.append(("run", "Training run"))
    sections.append(("provenance", "Provenance"))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav>" + "".join(f"<a href='#{a}'>{html.escape(t)}</a>" for a, t in sections) + "</nav>",
    ]
    parts += [f"<p class='muted'>{html.escape(n)}</p>" for n in notes]
    parts += [
        "<h2 id='summary'>Summary (mean over images)</h2>",
        _table(scalars, ["metric", "value", "better", "unit"]),
    ]
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
        parts += [
            "<details open><summary>Per class</summary>",
            _table(class_rows, ["class", *per_class]),
            "</details>",
        ]
    if rows:
        columns = list(dict.fromkeys(c for r in rows for c in r))
        toggle = (
            "<label class='muted'><input type='checkbox' id='show-details'> show per-class columns</label>"
            if any(_is_detail(c) for c in columns)
            else ""
        )
        parts += [
            "<h2 id='images'>Per image</h2>",
            "<p class='muted'>Worst first; click a column to sort (↑ higher is better, ↓ lower is better). "
            f"{toggle}</p>",
            _sortable_table(rows, columns),
        ]
    if panels:
        parts += [
            f"<h2 id='panels'>{html.escape(panel_heading)}</h2>",
            "<p class='muted'>Click a picture to see it at full width.</p>",
            _figures(panels, share),
        ]
    if run:
        parts += ["<h2 id='run'>Training run</h2>", _figures(run, share)]
    facts = info if info is not None else provenance()
    parts += [
        "<h2 id='provenance'>Provenance</h2>",
        _table([{"field": k, "value": v} for k, v in facts.items()], ["field", "value"], "wrap"),
        f"<script>{_JS}</script></body></html>",
    ]
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
