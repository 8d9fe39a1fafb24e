"""The documentation's Python code cannot rot: every ``python`` block compiles, and the blocks marked
``python runnable`` (README.md, docs/*.md) run as written, in a fresh folder, in order per file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(path: Path) -> list[tuple[str, str]]:
    """``(info, code)`` of each python block of a Markdown file."""
    return [(m.group(1).strip(), m.group(2)) for m in BLOCK.finditer(path.read_text())]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_python_block_compiles(path: Path) -> None:
    for i, (_, code) in enumerate(blocks(path)):
        compile(code, f"{path.name} block {i + 1}", "exec")


def test_the_readme_has_a_runnable_example() -> None:
    assert any(info == "runnable" for info, _ in blocks(ROOT / "README.md"))


@pytest.mark.parametrize("path", [p for p in DOCS if any(i == "runnable" for i, _ in blocks(p))], ids=lambda p: p.name)
def test_runnable_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for i, (info, code) in enumerate(blocks(path)):
        if info == "runnable":
            exec(compile(code, f"{path.name} block {i + 1}", "exec"), namespace)
    assert os.getcwd() == str(tmp_path)
