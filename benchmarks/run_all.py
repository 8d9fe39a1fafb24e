"""Run every benchmark in this folder, one after another (``make bench``).

Each ``benchmarks/<name>.py`` measures unetkit side by side with its peer in one run, prints a table and
writes ``benchmarks/results/<name>.json``. Pass names to run only some: ``python benchmarks/run_all.py predict``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in {"run_all.py", "_common.py"})
    if argv:
        scripts = [p for p in scripts if p.stem in argv]
    failed = []
    for script in scripts:
        sys.stdout.write(f"\n=== {script.stem} ===\n")
        sys.stdout.flush()
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(script.stem)
    if failed:
        sys.stderr.write(f"failed: {', '.join(failed)}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
