"""The ``unetkit`` command line: one console script, one subcommand per job.

This package only parses arguments and calls the library. Each module registers its commands on ``app``;
library errors (:class:`unetkit.errors.UnetkitError`) become one red line and exit code 2.
"""

from __future__ import annotations

import logging
import sys

import typer

from unetkit.cli._common import console, err_console
from unetkit.errors import UnetkitError

app = typer.Typer(
    name="unetkit",
    help="U-Net image segmentation in 2D and 3D: train, predict, evaluate. Try `unetkit demo`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    from unetkit.cli import data, demo, models, predict

    for module in (models, demo, data, predict):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=argv, prog_name="unetkit")
    except UnetkitError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


__all__ = ["app", "console", "main"]
