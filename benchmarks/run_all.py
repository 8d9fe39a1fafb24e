"""Run every benchmark in this folder, one after another (``make bench``), then summarise their ratios.

Each ``benchmarks/<name>.py`` measures unetkit side by side with its peer in one run, prints a table and
writes ``benchmarks/results/<name>.json``. Pass names to run only some: ``python benchmarks/run_all.py predict``.
At the end, every ratio found in ``benchmarks/results/*.json`` (a number under a key naming a ratio, speedup
or fraction of peak), with the machine and date it was measured on, goes into one table, printed and written
to ``benchmarks/results/summary.md`` (``--summary-only``: just that, from the results already there).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RATIO_KEY = re.compile(r"ratio|speedup|fraction_of_peak")
LABEL_KEYS = ("case", "name", "network", "backend", "config", "title")


def ratios(node: Any, path: tuple[str, ...] = (), named: bool = False) -> Iterator[tuple[str, float]]:
    """``(where, value)`` of every ratio in a results JSON: numbers under keys matching :data:`RATIO_KEY`, or
    anywhere inside a mapping whose key does (``{"ratios_unetkit_vs_monai": {"fp32": 1.1}}``).

    ``where`` joins the keys on the way with ``/``; a list item is named by its first label field
    (:data:`LABEL_KEYS`), else its index. The machine description is skipped.

    >>> list(ratios({"2d": {"ratio": 1.5, "x": 3}, "rows": [{"case": "a", "speedup": 2}], "ratios": {"b": 4}}))
    [('2d/ratio', 1.5), ('rows/a/speedup', 2.0), ('ratios/b', 4.0)]
    """
    if isinstance(node, dict):
        items: list[tuple[str, Any]] = [(str(k), v) for k, v in node.items() if k not in ("machine", "meta")]
    elif isinstance(node, list):
        items = []
        for i, item in enumerate(node):
            label = next((str(item[k]) for k in LABEL_KEYS if isinstance(item, dict) and k in item), str(i))
            items.append((label, item))
    else:
        return
    for key, value in items:
        is_ratio = named or bool(RATIO_KEY.search(key))
        if isinstance(value, int | float) and not isinstance(value, bool):
            if is_ratio:
                yield "/".join((*path, key)), float(value)
        elif isinstance(value, dict | list):
            yield from ratios(value, (*path, key), is_ratio)


def _machine(payload: dict[str, Any]) -> str:
    m = payload.get("machine") or payload.get("meta") or {}
    if not isinstance(m, dict) or not (m.get("cuda") or m.get("cpu")):
        return "not recorded"
    what = m.get("cuda") or m.get("cpu")
    cores = f", {m['cores']} cores" if m.get("cores") else ""
    threads = f", {m['threads']} threads" if m.get("threads") else ""
    return f"{what}{cores}{threads}"


def summary(results: Path = RESULTS) -> str:
    """One markdown table of every ratio in ``results/*.json``, with each file's machine and date."""
    rows = []
    for path in sorted(results.glob("*.json")):
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            rows.append(f"| {path.stem} | unreadable: {exc} | | | |")
            continue
        if not isinstance(payload, dict):
            continue
        date = payload.get("date") or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(path.stat().st_mtime))
        flags = [k for k in ("quick", "dry_run") if payload.get(k)]
        name = path.stem + (f" ({', '.join(flags)})" if flags else "")
        for where, value in ratios(payload):
            rows.append(f"| {name} | {where} | {value:.3g} | {_machine(payload)} | {date} |")
    head = [
        "# Benchmark summary",
        "",
        f"Every ratio in benchmarks/results/*.json, collected {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        "by `benchmarks/run_all.py`. Ratios > 1 mean unetkit is better (memory ratios: < 1), except where the",
        "name says what is divided by what. See docs/benchmarks.md for what each measures.",
        "",
        "| benchmark | ratio | value | machine | date |",
        "| --- | --- | ---: | --- | --- |",
    ]
    return "\n".join(head + (rows or ["| (no results yet) | | | | |"])) + "\n"


def write_summary(results: Path = RESULTS) -> Path:
    """Write ``results/summary.md`` (see :func:`summary`) and return its path."""
    results.mkdir(parents=True, exist_ok=True)
    out = results / "summary.md"
    out.write_text(summary(results))
    return out


def main(argv: list[str]) -> int:
    if argv == ["--summary-only"]:
        out = write_summary()
        sys.stdout.write(out.read_text() + f"wrote {out}\n")
        return 0
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in {"run_all.py", "_common.py"})
    if argv:
        scripts = [p for p in scripts if p.stem in argv]
    failed = []
    for script in scripts:
        sys.stdout.write(f"\n=== {script.stem} ===\n")
        sys.stdout.flush()
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(script.stem)
    out = write_summary()
    sys.stdout.write(f"\n=== summary ===\n{out.read_text()}wrote {out}\n")
    if failed:
        sys.stderr.write(f"failed: {', '.join(failed)}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
