"""Hostile input: every case ends with exit code 2 and one message naming the file or field, no traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from unetkit.cli import main


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _model(tmp: Path, header: bytes) -> Path:
    (tmp / "m.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    return tmp / "m.safetensors"


# (id, input generator, argv with {} for the input, a word the message must hold)
CASES: list[tuple[str, Callable[[Path], Path], list[str], str]] = [
    (
        "yaml-alias-bomb",
        _write("c.yaml", b"a: &a [1,1]\nb: &b [*a,*a]\nc: [*b,*b]\n"),
        ["config", "show", "{}"],
        "alias",
    ),
    ("yaml-deep", _write("c.yaml", b"a: " + b"[" * 200 + b"]" * 200 + b"\n"), ["config", "show", "{}"], "nested"),
    ("yaml-binary", _write("c.yaml", b"\xff\xfe\x00\x01\x80"), ["config", "show", "{}"], "UTF-8"),
    (
        "yaml-python-tag",
        _write("c.yaml", b"a: !!python/object/apply:os.system ['true']\n"),
        ["config", "show", "{}"],
        "YAML",
    ),
    (
        "set-wrong-type",
        _write("c.yaml", b"{}\n"),
        ["config", "show", "{}", "--set", "train.epochs=many"],
        "train.epochs",
    ),
    ("model-pickle", _write("m.safetensors", b"\x80\x04\x95" + b"\x00" * 40), ["info", "{}"], "pickle"),
    ("model-empty", _write("m.safetensors", b""), ["info", "{}"], "truncated"),
    ("model-huge-header", _write("m.safetensors", (2**60).to_bytes(8, "little") + b"{}"), ["info", "{}"], "header"),
    ("model-not-unetkit", lambda t: _model(t, b'{"__metadata__": {}}'), ["info", "{}"], "unetkit"),
    ("latin1-list", _write("l.csv", "image,mask\ncaf\xe9.png,m.png\n".encode("latin-1")), ["check", "{}"], "UTF-8"),
    ("no-dataset", lambda t: t / "missing", ["check", "{}"], "not found"),
]


@pytest.mark.parametrize(("make", "argv", "word"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_exits_2_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Path], argv: list[str], word: str
) -> None:
    path = make(tmp_path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(SystemExit) as exc:
        main([a.replace("{}", os.fspath(path)) for a in argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err and word.lower() in err.lower(), err
    assert before is None or path.read_bytes() == before  # an input is never changed
