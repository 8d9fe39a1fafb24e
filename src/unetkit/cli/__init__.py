"""The ``unetkit`` command line: one console script, one subcommand per job.

This package only parses arguments and calls the library. Each module registers its commands on ``app``;
library errors (:class:`unetkit.errors.UnetkitError`) become one red line and exit code 2.
"""

from __future__ import annotations

import os

# Before torch is imported: OpenMP threads that spin while waiting make every op up to 10x slower when other
# processes share the cores (measured on 2 cores: 3.1 s vs 0.45 s per training step). Sleeping costs little.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gc
import logging
import sys

import typer

from unetkit.cli._common import console, err_console
from unetkit.errors import UnetkitError

app = typer.Typer(
    name="unetkit",
    help="U-Net segmentation and restoration in 2D and 3D: train, predict, evaluate. Try `unetkit demo`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    """Import every command module of this package (each has ``register(app)``), in name order."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(app)


def _version(value: bool) -> None:
    if value:
        from unetkit._version import __version__

        console.print(f"unetkit {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the unetkit version and exit."
    ),
) -> None:
    """U-Net segmentation and restoration in 2D and 3D: train, predict, evaluate. Try `unetkit demo`."""


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; ``argv`` (default: the process's arguments) for calls from Python.

    Run as the process's command (no ``argv``), it freezes the garbage collector's objects on the way out: the
    interpreter's final collection would otherwise walk every object PyTorch's import made, about 0.6 s of a
    ``unetkit predict`` run's wall time, to free memory the process is about to return anyway (files are
    closed and ``atexit`` handlers run as usual).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        _run(argv)
    finally:
        if argv is None:
            gc.freeze()


def _run(argv: list[str] | None) -> None:
    try:
        app(args=argv, prog_name="unetkit")
    except UnetkitError as exc:
        from rich.markup import escape

        # escaped: a message may hold brackets, e.g. pip install 'unetkit[onnx]'
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


__all__ = ["app", "console", "main"]
